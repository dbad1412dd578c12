"""Tiers as real cgroup slices: OOM kills are reported, nothing is left behind."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from tests.e2e.conftest import CHAT_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.cgroups]


def _enforced(server) -> bool:
    return server.http.get("/api/hardware").json()["slices"]["enforced"]


def _parent_dirs(parent_name: str) -> list[Path]:
    """The <own cgroup>/<parent> dirs that exist, in every v1 hierarchy of this process."""
    found = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            if not controller or controller.startswith("name="):
                continue
            parent = Path("/sys/fs/cgroup") / controller / path.lstrip("/") / parent_name
            if parent.is_dir():
                found.append(parent)
    return found


def _slices_under(parent_name: str) -> list[Path]:
    return [p for parent in _parent_dirs(parent_name) for p in parent.iterdir() if p.is_dir()]


def test_engine_over_its_memory_limit_is_oom_killed(berth):
    server = berth([{"name": "tight", "model": CHAT_MODEL, "hardware": "nano"}],
                   tiers={"nano": {"cpus": 1, "memory": "150MiB", "price_per_hour": "0.01"}},
                   supervisor={"crash_limit": 2, "backoff_initial_s": 0.2})
    if not _enforced(server):
        pytest.skip("cgroups are not writable here: limits are not enforced")
    dep = server.wait_status("tight", "failed", timeout=180)
    assert "oom_killed" in dep["reason"]
    assert dep["usage"]["oom_kills"] >= 2
    crashed = [e for e in server.events("tight") if e["status"] == "crashed"]
    assert crashed and crashed[0]["reason"] == "oom_killed"
    assert crashed[0]["pid"] is not None
    kills = dep["usage"]["oom_kills"]
    assert server.stop(signal.SIGTERM) == 0
    server.start()  # the count is kept, as restarts are
    assert server.deployment("tight")["usage"]["oom_kills"] >= kills


def test_slice_block_and_no_cgroup_left_after_sigterm(berth):
    server = berth([{"name": "chat", "model": CHAT_MODEL, "hardware": "micro"}])
    if not _enforced(server):
        pytest.skip("cgroups are not writable here: limits are not enforced")
    dep = server.wait_status("chat", "ready")
    block = dep["slice"]
    assert block["enforced"] is True and block["driver"] in ("cgroup-v1", "cgroup-v2")
    parent = block["path"].split("/")[-2]
    assert block["path"].endswith(f"{parent}/chat") and parent.startswith("berth")
    assert block["cpu_quota"] == 1.0
    assert block["memory_limit_bytes"] == 2 * 1024**3
    assert len(block["cpus"]) >= 1
    cgroup = Path(f"/proc/{dep['pid']}/cgroup").read_text()
    assert f"{parent}/chat" in cgroup
    assert dep["usage"]["source"] in ("cgroup-v1", "cgroup-v2")
    assert dep["usage"]["memory_bytes"] > 50 * 1024**2
    assert any(p.name == "chat" for p in _slices_under(parent))

    assert server.stop(signal.SIGTERM) == 0
    assert _slices_under(parent) == []
    assert _parent_dirs(parent) == []  # the parent itself is gone too
