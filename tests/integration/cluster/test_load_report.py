"""A host's load report counts real busy processes from the real /proc."""

from __future__ import annotations

import subprocess
import sys

import pytest
from tests.helpers import wait_until

from heartline.cluster import LoadSampler, count_runnable
from heartline.cluster._load import in_initial_pid_namespace

BUSY = [sys.executable, "-c", "while True: pass"]


def test_busy_processes_show_in_the_runnable_count() -> None:
    """Three CPU-bound processes raise the count by at least three while they run, and it
    drops again once they are gone."""
    base = count_runnable()
    procs = [subprocess.Popen(BUSY) for _ in range(3)]
    try:
        wait_until(lambda: count_runnable() >= base + 3, 10, "three more runnable tasks")
    finally:
        for p in procs:
            p.kill()
            p.wait()
    wait_until(lambda: count_runnable() <= base + 1, 10, "the count to drop again")


@pytest.mark.parametrize("walk", [True, False], ids=["walking /proc", "the kernel's count"])
def test_busy_processes_show_in_a_sample_either_way(walk: bool) -> None:
    """In the machine's own pid namespace the sampler takes the kernel's count from
    /proc/stat; walking /proc (as inside a lab host) sees the same busy processes."""
    sampler = LoadSampler(walk=walk)
    try:
        assert sampler.walk is walk
        base = sampler.sample().runnable
        procs = [subprocess.Popen(BUSY) for _ in range(3)]
        try:
            wait_until(lambda: sampler.sample().runnable >= base + 3, 10, "three more runnable")
        finally:
            for p in procs:
                p.kill()
                p.wait()
        wait_until(lambda: sampler.sample().runnable <= base + 1, 10, "the count to drop")
    finally:
        sampler.close()


def test_this_test_runs_in_the_machine_s_pid_namespace() -> None:
    """(So the default sampler here takes the kernel's count; a lab host's walks /proc.)"""
    assert in_initial_pid_namespace()
    assert LoadSampler().walk is False


def test_a_sample_has_every_figure() -> None:
    """A sample carries the CPU count, memory, load averages and, after a first sample, the
    CPU busy share."""
    sampler = LoadSampler()
    s = sampler.sample()
    assert s.cpus >= 1 and s.mem_total > s.mem_available > 0 and len(s.load) == 3
    assert s.cpu_busy is None or 0 <= s.cpu_busy <= 100
