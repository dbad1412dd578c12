from __future__ import annotations

from decimal import Decimal

import pytest

from server.capacity import InsufficientCapacity, NeverFits, Node
from server.config import DEFAULT_TIERS, NodeConfig, Tier

MICRO, SMALL = DEFAULT_TIERS["micro"], DEFAULT_TIERS["small"]
GiB = 1024**3


def node(cpus: int = 4, memory: str = "16GiB", overcommit: float = 1.0, cores=(0, 1, 2, 3),
         gpus: int = 0) -> Node:
    return Node.from_config(NodeConfig(cpus=cpus, memory=memory, gpus=gpus,
                                       overcommit=overcommit),
                            cores=list(cores), memory_bytes=0, gpus=0)


def test_exclusive_cores_while_free_then_shared():
    n = node(overcommit=2.0)  # 8 schedulable CPUs on 4 cores
    a = n.admit("a", SMALL)
    b = n.admit("b", MICRO)
    assert (a.cores, a.shared) == ((0, 1), False)
    assert (b.cores, b.shared) == ((2,), False)
    c = n.admit("c", SMALL)  # one core left: runs on the shared cores
    assert (c.cores, c.shared) == ((0, 1, 2, 3), True)
    assert n.free() == (3, 32 * GiB - 10 * GiB, 0)
    n.release("a")
    assert n.admit("d", SMALL).cores == (0, 1)


def test_refusal_says_what_is_free_and_what_the_tier_needs():
    n = node(cpus=2, cores=(0, 1))
    n.admit("first", SMALL)
    with pytest.raises(InsufficientCapacity) as e:
        n.admit("second", SMALL)
    message = str(e.value)
    assert "needs 2 CPU, 4 GiB" in message
    assert "0 CPU, 12.0 GiB free" in message
    n.release("first")
    assert n.admit("second", SMALL).cores == (0, 1)


def test_admit_is_idempotent_and_release_frees():
    n = node(cpus=1, cores=(0,))
    assert n.admit("a", MICRO) is n.admit("a", MICRO)
    with pytest.raises(InsufficientCapacity):
        n.admit("b", MICRO)
    n.release("a")
    n.release("a")
    n.admit("b", MICRO)


def test_overcommit_scales_cpus_and_memory_and_gpus_are_handed_out_once():
    n = node(cpus=2, memory="8GiB", overcommit=2.0, cores=(0, 1), gpus=2)
    assert (n.cpus, n.memory_bytes, n.gpus) == (4, 16 * GiB, 2)
    gpu_tier = Tier("gpu", 1, GiB, 1, Decimal("1"))
    assert n.admit("g1", gpu_tier).gpus == (0,)
    assert n.admit("g2", gpu_tier).gpus == (1,)
    with pytest.raises(InsufficientCapacity, match="GPU"):
        n.admit("g3", gpu_tier)


def test_auto_uses_what_was_detected():
    n = Node.from_config(NodeConfig(), cores=[0, 1, 2], memory_bytes=5 * GiB, gpus=1)
    assert (n.cpus, n.memory_bytes, n.gpus, n.cores) == (3, 5 * GiB, 1, (0, 1, 2))


def test_a_tier_larger_than_the_whole_node_never_fits():
    n = node(cpus=2, memory="8GiB", cores=(0, 1), gpus=0)
    gpu_tier = Tier("a10", 1, GiB, 1, Decimal("1"))
    with pytest.raises(NeverFits, match=r"whole node has 2 CPU, 8\.0 GiB, 0 GPU"):
        n.admit("g", gpu_tier)
    with pytest.raises(NeverFits):
        n.admit("big", Tier("huge", 1, 9 * GiB, 0, Decimal("1")))
    n.admit("a", SMALL)  # full now: a small does not fit *now*, but it could later
    with pytest.raises(InsufficientCapacity) as e:
        n.admit("b", SMALL)
    assert not isinstance(e.value, NeverFits)
