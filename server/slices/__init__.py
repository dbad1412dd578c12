"""Resource slices for engines: cgroup v1, cgroup v2, or none (see base.py)."""

from server.slices.base import (
    EXIT_JOIN_FAILED,
    Driver,
    Slice,
    SliceError,
    SliceInfo,
    SliceSpec,
    SliceUsage,
)
from server.slices.detect import choose_driver, node_cores, node_memory_bytes
from server.slices.none import NoneDriver
from server.slices.v1 import CgroupV1Driver
from server.slices.v2 import CgroupV2Driver

__all__ = ["EXIT_JOIN_FAILED", "CgroupV1Driver", "CgroupV2Driver", "Driver", "NoneDriver",
           "Slice", "SliceError", "SliceInfo", "SliceSpec", "SliceUsage", "choose_driver",
           "node_cores", "node_memory_bytes"]
