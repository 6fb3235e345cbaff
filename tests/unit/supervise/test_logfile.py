"""Size-capped log files: append, rotate, bound the disk, tail across rotations, follow."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartline.config import LogSpec
from heartline.supervise import LogFile
from heartline.supervise._logs import FollowBuffer, OpenFiles


def files_in(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def retained(path: Path, backups: int) -> bytes:
    """Every byte still on disk, oldest first."""
    parts = [Path(f"{path}.{i}") for i in range(backups, 0, -1)] + [path]
    return b"".join(p.read_bytes() for p in parts if p.exists())


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "web.out.log"


def test_writes_append(log_path: Path) -> None:
    """Successive writes land one after another in the file."""
    lf = LogFile(str(log_path), LogSpec(max_size=4096, backups=2))
    lf.write(b"one\n")
    lf.write(b"two\n")
    lf.close()
    assert log_path.read_bytes() == b"one\ntwo\n"


def test_opening_an_existing_file_appends_and_counts_its_size(log_path: Path) -> None:
    """A new LogFile on an existing file keeps its content and rotates by its real size."""
    log_path.write_bytes(b"x" * 90)
    lf = LogFile(str(log_path), LogSpec(max_size=100, backups=1))
    lf.write(b"y" * 20)
    lf.close()
    assert Path(f"{log_path}.1").read_bytes() == b"x" * 90 + b"y" * 10
    assert log_path.read_bytes() == b"y" * 10


def test_oversized_existing_file_is_rotated_before_the_next_write(log_path: Path) -> None:
    """A file already beyond max_size (a lowered limit) is rotated away on the first write."""
    log_path.write_bytes(b"o" * 500)
    lf = LogFile(str(log_path), LogSpec(max_size=100, backups=1))
    lf.write(b"new")
    lf.close()
    assert Path(f"{log_path}.1").read_bytes() == b"o" * 500
    assert log_path.read_bytes() == b"new"


def test_rotation_keeps_at_most_backups_files_each_capped(log_path: Path) -> None:
    """After many writes there are at most `backups` rotated files, each no larger than
    max_size, and the oldest data is the data that was dropped."""
    spec = LogSpec(max_size=100, backups=3)
    lf = LogFile(str(log_path), spec)
    data = b"".join(b"line %04d\n" % i for i in range(200))
    for i in range(0, len(data), 7):
        lf.write(data[i : i + 7])
    lf.close()
    names = files_in(log_path.parent)
    assert names == {"web.out.log", "web.out.log.1", "web.out.log.2", "web.out.log.3"}
    for name in names:
        assert (log_path.parent / name).stat().st_size <= spec.max_size
    kept = retained(log_path, 3)
    assert data.endswith(kept)
    assert len(kept) > 3 * spec.max_size


def test_backups_zero_keeps_only_the_current_file(log_path: Path) -> None:
    """With backups = 0 a full file is deleted and a new one started: one file, ever."""
    lf = LogFile(str(log_path), LogSpec(max_size=50, backups=0))
    for i in range(30):
        lf.write(b"%02d-abcdefg\n" % i)
    lf.close()
    assert files_in(log_path.parent) == {"web.out.log"}
    assert 0 < log_path.stat().st_size <= 50
    assert log_path.read_bytes().endswith(b"29-abcdefg\n")


def test_one_large_write_is_split_across_rotations(log_path: Path) -> None:
    """A single write of 3.5 x max_size fills three files and starts a fourth."""
    lf = LogFile(str(log_path), LogSpec(max_size=100, backups=5))
    data = bytes(range(256)) + bytes(range(94))
    lf.write(data)
    lf.close()
    assert Path(f"{log_path}.3").read_bytes() == data[:100]
    assert Path(f"{log_path}.2").read_bytes() == data[100:200]
    assert Path(f"{log_path}.1").read_bytes() == data[200:300]
    assert log_path.read_bytes() == data[300:]
    assert not Path(f"{log_path}.4").exists()


def test_write_larger_than_everything_kept_keeps_its_end(log_path: Path) -> None:
    """A write bigger than max_size * (backups + 1) leaves exactly its last bytes on disk."""
    lf = LogFile(str(log_path), LogSpec(max_size=10, backups=2))
    data = bytes(i % 251 for i in range(1005))
    lf.write(data)
    lf.close()
    assert retained(log_path, 2) == data[-25:]
    assert files_in(log_path.parent) == {"web.out.log", "web.out.log.1", "web.out.log.2"}


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=150), max_size=30),
    max_size=st.integers(min_value=1, max_value=64),
    backups=st.integers(min_value=0, max_value=3),
)
def test_disk_use_is_bounded_and_holds_the_newest_bytes(
    chunks: list[bytes], max_size: int, backups: int
) -> None:
    """Whatever is written, no file exceeds max_size, no file beyond .backups exists, and the
    files hold, in order, exactly the newest bytes written."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.log"
        lf = LogFile(str(path), LogSpec(max_size=max_size, backups=backups))
        for c in chunks:
            lf.write(c)
        lf.close()
        allowed = {"p.log"} | {f"p.log.{i}" for i in range(1, backups + 1)}
        assert files_in(Path(d)) <= allowed
        sizes = [(Path(d) / n).stat().st_size for n in files_in(Path(d))]
        assert all(s <= max_size for s in sizes)
        assert sum(sizes) <= max_size * (backups + 1)
        data = b"".join(chunks)
        kept = retained(path, backups)
        assert data.endswith(kept)
        # Only whole files are dropped: what is missing is a multiple of max_size.
        assert (len(data) - len(kept)) % max_size == 0


def test_tail_returns_last_lines_across_rotated_files(log_path: Path) -> None:
    """tail(n) reads back into .1, .2 when the current file holds fewer than n lines."""
    lf = LogFile(str(log_path), LogSpec(max_size=64, backups=4))
    lines = [b"line %03d\n" % i for i in range(25)]
    for line in lines:
        lf.write(line)
    assert Path(f"{log_path}.2").exists()
    assert lf.tail(3) == b"".join(lines[-3:])
    assert lf.tail(12) == b"".join(lines[-12:])
    everything = retained(log_path, 4)
    assert lf.tail(1000) == everything
    assert lf.tail(0) == b""
    lf.close()


def test_tail_of_partial_last_line(log_path: Path) -> None:
    """A last line without a newline counts as a line."""
    lf = LogFile(str(log_path), LogSpec(max_size=4096, backups=1))
    lf.write(b"a\nb\nunfinished")
    assert lf.tail(1) == b"unfinished"
    assert lf.tail(2) == b"b\nunfinished"
    lf.close()


def test_tail_of_empty_log(log_path: Path) -> None:
    """A log nothing was written to has an empty tail."""
    lf = LogFile(str(log_path), LogSpec(max_size=4096, backups=1))
    assert lf.tail(10) == b""
    lf.close()


@settings(max_examples=60, deadline=None)
@given(
    chunks=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\x00", b"\n")), max_size=25),
    max_size=st.integers(min_value=1, max_value=32),
    backups=st.integers(min_value=0, max_value=3),
    n=st.integers(min_value=0, max_value=40),
)
def test_tail_matches_the_last_lines_on_disk(
    chunks: list[bytes], max_size: int, backups: int, n: int
) -> None:
    """tail(n) equals the last n lines of everything still on disk."""
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "p.log"
        lf = LogFile(str(path), LogSpec(max_size=max_size, backups=backups))
        for c in chunks:
            lf.write(c)
        expected = b"".join(retained(path, backups).splitlines(keepends=True)[-n:]) if n else b""
        assert lf.tail(n) == expected
        lf.close()


def test_followers_get_every_write(log_path: Path) -> None:
    """Each follower is called with every write, whole and in order, including big ones."""
    lf = LogFile(str(log_path), LogSpec(max_size=16, backups=0))
    got_a: list[bytes] = []
    got_b: list[bytes] = []
    lf.followers.add(got_a.append)
    lf.followers.add(got_b.append)
    writes = [b"hello\n", b"x" * 100, b"", b"bye\n"]
    for w in writes:
        lf.write(w)
    assert got_a == writes
    assert got_b == writes
    lf.followers.discard(got_b.append)
    lf.write(b"more")
    assert got_a[-1] == b"more"
    assert len(got_b) == len(writes)
    lf.close()


def test_close_then_write_opens_the_file_again(log_path: Path) -> None:
    """A closed log file is opened again by the next write, which appends."""
    lf = LogFile(str(log_path), LogSpec(max_size=4096, backups=0))
    got: list[bytes] = []
    lf.followers.add(got.append)
    lf.write(b"a")
    lf.close()
    lf.write(b"b")
    lf.close()
    assert got == [b"a", b"b"]
    assert log_path.read_bytes() == b"ab"


def test_nothing_is_created_before_the_first_write(log_path: Path) -> None:
    """Creating a LogFile does not create the file; the first write does."""
    lf = LogFile(str(log_path), LogSpec(max_size=4096, backups=0))
    assert not log_path.exists()
    lf.write(b"x")
    lf.close()
    assert log_path.read_bytes() == b"x"


def test_reopen_after_external_rename_starts_a_new_file(log_path: Path) -> None:
    """After logrotate-style moving, reopen() writes to a fresh file at the original path."""
    lf = LogFile(str(log_path), LogSpec(max_size=100, backups=1))
    lf.write(b"old data\n")
    moved = log_path.with_name("web.out.log.moved")
    os.rename(log_path, moved)
    lf.write(b"still old file\n")
    lf.reopen()
    lf.write(b"new data\n")
    lf.close()
    assert moved.read_bytes() == b"old data\nstill old file\n"
    assert log_path.read_bytes() == b"new data\n"


def test_reopen_resets_the_size_to_the_new_file(log_path: Path) -> None:
    """After reopen, rotation counts the new file's size, not the old one's."""
    lf = LogFile(str(log_path), LogSpec(max_size=20, backups=1))
    lf.write(b"a" * 19)
    os.rename(log_path, log_path.with_name("moved"))
    lf.reopen()
    lf.write(b"b" * 15)
    lf.close()
    assert log_path.read_bytes() == b"b" * 15
    assert not Path(f"{log_path}.1").exists()


def test_file_mode_is_not_world_readable(log_path: Path) -> None:
    """New log files are created without permissions for others."""
    lf = LogFile(str(log_path), LogSpec(max_size=4096, backups=0))
    old = os.umask(0)
    try:
        lf.write(b"secret\n")
    finally:
        os.umask(old)
    lf.close()
    assert log_path.stat().st_mode & 0o007 == 0


def test_writes_resume_after_the_log_directory_comes_back(tmp_path: Path) -> None:
    """If the log directory vanishes and returns, later writes land in a new file."""
    d = tmp_path / "logs"
    d.mkdir()
    path = d / "p.log"
    lf = LogFile(str(path), LogSpec(max_size=10, backups=1))
    lf.write(b"first")
    shutil.rmtree(d)
    lf.write(b"x" * 25)  # rotation fails: the directory is gone
    lf.write(b"dropped")
    d.mkdir()
    lf.write(b"back\n")
    lf.close()
    assert path.exists()
    assert path.read_bytes().endswith(b"back\n")


def held_paths() -> list[str]:
    """The paths this process's descriptors point at."""
    paths = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the fd that listed the directory is gone
            paths.append(os.readlink(f"/proc/self/fd/{fd}"))
    return paths


def open_fds_under(directory: Path) -> int:
    """How many of this process's descriptors point at files in ``directory``."""
    return sum(p.startswith(f"{directory}/") for p in held_paths())


def test_open_files_cache_bounds_descriptors_and_reopens_on_write(tmp_path: Path) -> None:
    """With a cache of 2, three busy logs hold at most 2 descriptors; a log closed by the
    cache opens again on its next write and appends to the same file."""
    cache = OpenFiles(limit=2)
    logs = [LogFile(str(tmp_path / f"p{i}.log"), LogSpec(4096, 1), cache) for i in range(3)]
    for round_ in range(3):
        for i, lf in enumerate(logs):
            lf.write(b"%d:%d\n" % (i, round_))
            assert open_fds_under(tmp_path) <= 2
    for lf in logs:
        lf.close()
    assert open_fds_under(tmp_path) == 0
    for i in range(3):
        assert (tmp_path / f"p{i}.log").read_bytes() == b"".join(
            b"%d:%d\n" % (i, r) for r in range(3)
        )


def test_open_files_cache_evicts_the_least_recently_written(tmp_path: Path) -> None:
    """The log written longest ago is the one the cache closes."""
    cache = OpenFiles(limit=2)
    a, b, c = (LogFile(str(tmp_path / f"{n}.log"), LogSpec(4096, 1), cache) for n in "abc")
    a.write(b"a")
    b.write(b"b")
    a.write(b"a")  # a is now the most recent
    c.write(b"c")  # evicts b
    held = set(held_paths())
    assert str(tmp_path / "a.log") in held
    assert str(tmp_path / "c.log") in held
    assert str(tmp_path / "b.log") not in held
    for lf in (a, b, c):
        lf.close()


def test_write_failures_are_logged_once_until_a_write_succeeds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While writes fail (here: the directory is gone) one warning says so, not one per
    write; once writing works again one line says that, and the next failure warns again."""
    directory = tmp_path / "logs"
    directory.mkdir()
    lf = LogFile(str(directory / "x.log"), LogSpec(max_size=4096, backups=0))
    lf.write(b"first\n")
    lf.close()
    shutil.rmtree(directory)
    with caplog.at_level("INFO", logger="heartline.supervise._logs"):
        for _ in range(50):
            lf.write(b"lost\n")
        directory.mkdir()
        lf.write(b"back\n")
        lf.close()
        shutil.rmtree(directory)
        lf.write(b"lost again\n")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3, messages
    assert messages[0].startswith(f"cannot write {directory / 'x.log'}: ")
    assert messages[1] == f"writing {directory / 'x.log'} again"
    assert messages[2].startswith("cannot write ")
    lf.close()


def test_follow_buffer_keeps_output_up_to_its_limit() -> None:
    """A follow buffer hands out what it was given, in order and whole, as long as what waits
    stays within its limit in bytes; taking empties it."""
    woken: list[None] = []
    buf = FollowBuffer(100, wake=lambda: woken.append(None))
    buf(b"one\n")
    buf(b"")
    buf(b"two\n")
    assert buf.size == 8
    assert len(woken) == 2
    assert buf.take() == b"one\ntwo\n"
    assert buf.size == 0
    assert buf.take() == b""
    buf(b"x" * 100)
    assert buf.take() == b"x" * 100


def test_follow_buffer_drops_what_does_not_fit_and_says_how_much() -> None:
    """Past its limit a follow buffer keeps nothing more until everything waiting was taken;
    what it dropped is reported once, as a line of its own after the kept output, and output
    after that is kept again."""
    buf = FollowBuffer(10)
    buf(b"12345")
    buf(b"abcdefgh")  # does not fit: dropped
    buf(b"z")  # would fit, but dropping goes on until the follower has caught up
    assert buf.size == 5
    assert buf.dropped == 9
    assert buf.take() == b"12345\n[heartline: 9 bytes dropped: this follower fell behind]\n"
    buf(b"next\n")
    assert buf.take() == b"next\n"
    buf(b"0123456789")
    buf(b"more")
    assert buf.take() == b"0123456789\n[heartline: 4 bytes dropped: this follower fell behind]\n"
    buf(b"line\n")
    buf(b"0123456789")
    assert buf.take() == b"line\n[heartline: 10 bytes dropped: this follower fell behind]\n"


def test_follow_buffer_marker_starts_a_line_even_after_an_earlier_take() -> None:
    """When the output taken last ended inside a line, the marker still starts a new line."""
    buf = FollowBuffer(4)
    buf(b"abc")
    assert buf.take() == b"abc"
    buf(b"too long")
    assert buf.take() == b"\n[heartline: 8 bytes dropped: this follower fell behind]\n"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        # Output without newlines, so that every newline before a marker is the marker's own.
        st.one_of(
            st.binary(min_size=1, max_size=40).map(lambda b: b.replace(b"\n", b".")), st.just(None)
        ),
        max_size=60,
    ),
    st.integers(1, 64),
)
def test_follow_buffer_never_holds_more_than_its_limit_and_accounts_for_every_byte(
    events: list[bytes | None], limit: int
) -> None:
    """Whatever is written and whenever the follower takes (None), the buffer never holds
    more than its limit, and what was taken plus what was reported dropped is exactly what
    was written."""
    buf = FollowBuffer(limit)
    written = taken = reported = 0
    for ev in [*events, None]:
        if ev is None:
            out = buf.take()
            for m in re.finditer(rb"\[heartline: (\d+) bytes dropped: [^]]*\]\n", out):
                reported += int(m.group(1))
            taken += len(re.sub(rb"\n?\[heartline: \d+ bytes dropped: [^]]*\]\n", b"", out))
        else:
            buf(ev)
            written += len(ev)
            assert buf.size <= limit
    assert taken + reported == written
