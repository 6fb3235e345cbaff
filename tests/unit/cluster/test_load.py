"""Counting a host's runnable tasks from a /proc tree, and the machine-wide figures."""

from __future__ import annotations

from pathlib import Path

from heartline.cluster import LoadSampler, count_runnable
from heartline.cluster._load import (
    RunnableCounter,
    busy_percent,
    cpu_times,
    kernel_runnable,
    memory,
    pressure,
)


def stat(pid: int, name: str, state: str, threads: int) -> str:
    rest = " ".join(["1"] * 16)  # ppid .. nice: fields 4-19
    return f"{pid} ({name}) {state} {rest} {threads} 0 0\n"


def make_proc(root: Path, procs: dict[int, tuple[str, str, list[str]]]) -> None:
    """``procs``: pid -> (name, state of the leader, states of every task when threaded)."""
    for pid, (name, state, tasks) in procs.items():
        d = root / str(pid)
        d.mkdir()
        (d / "stat").write_text(stat(pid, name, state, max(len(tasks), 1)))
        if tasks:
            (d / "task").mkdir()
            for i, t in enumerate(tasks):
                (d / "task" / str(pid + i)).mkdir()
                (d / "task" / str(pid + i) / "stat").write_text(stat(pid + i, name, t, 1))


def test_r_and_d_count_per_thread_and_odd_names_are_parsed(tmp_path: Path) -> None:
    """R and D count, S and Z do not; a threaded process counts each thread; a name with
    ') R (' in it cannot fool the parser; the reporter's own pid is left out."""
    make_proc(tmp_path, {
        10: ("busy", "R", []), 11: ("io", "D", []), 12: ("idle", "S", []),
        13: ("zombie", "Z", []), 14: ("x) R (y", "S", []),
        20: ("threads", "S", ["R", "R", "S", "D"]), 30: ("me", "R", []),
    })  # fmt: skip
    (tmp_path / "self").mkdir()
    (tmp_path / "stat").write_text("cpu  1 2 3 4\n")
    assert count_runnable(str(tmp_path), exclude=30) == 5
    assert count_runnable(str(tmp_path)) == 6


def test_a_broken_or_vanishing_entry_is_skipped(tmp_path: Path) -> None:
    """A process that exits between listing and reading, or a garbled stat, is not counted."""
    make_proc(tmp_path, {10: ("busy", "R", [])})
    (tmp_path / "11").mkdir()  # no stat: it went away
    (tmp_path / "12").mkdir()
    (tmp_path / "12" / "stat").write_text("garbage")
    assert count_runnable(str(tmp_path)) == 1
    assert count_runnable(str(tmp_path / "missing")) == 0


def test_cpu_memory_and_pressure_files(tmp_path: Path) -> None:
    """/proc/stat, meminfo and pressure/* are read as the kernel writes them."""
    (tmp_path / "stat").write_text("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 1 1 1\n")
    before = cpu_times(str(tmp_path))
    (tmp_path / "stat").write_text("cpu  150 0 150 750 150 0 0 0 0 0\n")
    assert busy_percent(before, cpu_times(str(tmp_path))) == 50.0
    (tmp_path / "meminfo").write_text("MemTotal: 2048 kB\nMemFree: 5 kB\nMemAvailable: 1024 kB\n")
    assert memory(str(tmp_path)) == (1024 * 1024, 2048 * 1024)
    (tmp_path / "pressure").mkdir()
    (tmp_path / "pressure" / "cpu").write_text(
        "some avg10=1.50 avg60=0.00 avg300=0.00 total=1\nfull avg10=0.00 avg60=0 avg300=0 total=0\n"
    )
    assert pressure(str(tmp_path)) == {"cpu": 1.5}
    assert pressure(str(tmp_path / "none")) is None


def test_a_counter_keeps_files_open_and_follows_changes(tmp_path: Path) -> None:
    """Between counts, a state that changes is seen, a process that goes away is dropped with
    its open file, a new one is counted; at most max_open files stay open."""
    make_proc(tmp_path, {10: ("a", "R", []), 11: ("b", "S", []), 12: ("c", "R", [])})
    counter = RunnableCounter(str(tmp_path), max_open=2)
    try:
        assert counter.count() == 2
        assert len(counter._open) == 2
        (tmp_path / "11" / "stat").write_text(stat(11, "b", "D", 1))
        assert counter.count() == 3
        for f in (tmp_path / "10").iterdir():
            f.unlink()
        (tmp_path / "10").rmdir()
        make_proc(tmp_path, {20: ("d", "R", [])})
        assert counter.count() == 3
        assert all("/10/" not in p for p in counter._open)
    finally:
        counter.close()
    assert counter._open == {}


def test_the_kernel_s_count_is_running_plus_blocked_less_the_reader() -> None:
    stat = b"cpu  1 2 3 4\nintr 5 6\nprocs_running 4\nprocs_blocked 2\nsoftirq 1\n"
    assert kernel_runnable(stat) == 3 + 2
    assert kernel_runnable(b"cpu  1 2 3 4\nprocs_running 1\nprocs_blocked 0\n") == 0
    assert kernel_runnable(b"cpu  1 2 3 4\nprocs_running 4\n") is None
    assert kernel_runnable(b"procs_running x\nprocs_blocked 1\n") is None


def test_a_sampler_outside_the_real_proc_walks(tmp_path: Path) -> None:
    """Only /proc of the machine's own pid namespace has a count to trust."""
    assert LoadSampler(str(tmp_path)).walk is True
