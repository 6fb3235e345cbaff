"""Size-capped log files for a program's stdout and stderr.

A file grows to ``max_size`` bytes, then is renamed ``NAME.1`` (older ones shift up, the oldest
beyond ``backups`` is deleted) and a new file starts. The disk a program can fill is therefore
bounded by ``max_size * (backups + 1)`` per stream, whatever the program writes.

Followers (``logs --follow``) get each write as it happens, through a FollowBuffer each: the
memory a follower can hold is bounded too, however slowly it reads.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import OrderedDict, deque
from collections.abc import Callable

from heartline.config import LogSpec

log = logging.getLogger(__name__)

Follower = Callable[[bytes], None]

#: What one follower may have waiting, in bytes. A program's pipe gives at most 64 KiB per
#: read, so two reads fit; a follower further behind than this misses output.
FOLLOW_BUFFER = 128 * 1024


class FollowBuffer:
    """Output waiting for one follower, bounded in bytes.

    Once ``limit`` bytes wait, further output is counted and dropped until the follower has
    taken everything that waits; with that it gets one line saying how many bytes it missed,
    at the place they were missing from.
    """

    def __init__(self, limit: int = FOLLOW_BUFFER, *, wake: Callable[[], None] | None = None):
        self.limit = limit
        self.dropped = 0
        self._chunks: deque[bytes] = deque()
        self._size = 0
        self._wake = wake
        self._line_open = False

    @property
    def size(self) -> int:
        """Bytes waiting."""
        return self._size

    def __call__(self, data: bytes) -> None:
        if not data:
            return
        if self.dropped or self._size + len(data) > self.limit:
            self.dropped += len(data)
        else:
            self._chunks.append(data)
            self._size += len(data)
        if self._wake is not None:
            self._wake()

    def take(self) -> bytes:
        """Everything waiting (b"" when nothing does), then the marker if output was missed."""
        out = b"".join(self._chunks)
        self._chunks.clear()
        self._size = 0
        if out:
            self._line_open = not out.endswith(b"\n")
        if self.dropped:
            marker = (
                f"[heartline: {self.dropped} bytes dropped: this follower fell behind]\n".encode()
            )
            out += b"\n" + marker if self._line_open else marker
            self.dropped = 0
            self._line_open = False
        return out

    def clear(self) -> None:
        self._chunks.clear()
        self._size = 0


class OpenFiles:
    """Keeps at most ``limit`` log files open, closing the least recently written.

    Most programs are quiet most of the time; holding two log descriptors per program would
    cost 500 programs a thousand fds. A file closed here is opened again on its next write.
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._open: OrderedDict[int, LogFile] = OrderedDict()

    def touch(self, f: LogFile) -> None:
        self._open[id(f)] = f
        self._open.move_to_end(id(f))
        while len(self._open) > self.limit:
            _, oldest = self._open.popitem(last=False)
            oldest.close()

    def forget(self, f: LogFile) -> None:
        self._open.pop(id(f), None)


class LogFile:
    """One stream's log file with rotation. Writes are synchronous (page cache).

    The file is created on the first write and may be closed between writes (see OpenFiles).
    """

    def __init__(self, path: str, spec: LogSpec, cache: OpenFiles | None = None) -> None:
        self.path = path
        self.spec = spec
        self.cache = cache
        self.followers: set[Follower] = set()
        self._fd = -1
        self._size = 0
        self._failing = False

    def _open(self) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
        self._fd = os.open(self.path, flags, 0o640)
        self._size = os.fstat(self._fd).st_size
        if self.cache is not None:
            self.cache.touch(self)

    def reopen(self) -> None:
        """Let the next write open the path again (after an external tool moved the file)."""
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self.cache is not None:
            self.cache.forget(self)

    def rotate(self) -> None:
        self.close()
        backups = self.spec.backups
        if backups == 0:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        else:
            for i in range(backups - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.replace(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path, f"{self.path}.1")
        self._open()

    def write(self, data: bytes) -> None:
        for follow in list(self.followers):
            follow(data)
        view = memoryview(data)
        cap = self.spec.max_size
        try:
            if self._fd < 0:
                self._open()
            elif self.cache is not None:
                self.cache.touch(self)
            while view:
                if self._size >= cap:
                    self.rotate()
                room = cap - self._size
                n = os.write(self._fd, view[:room])
                self._size += n
                view = view[n:]
        except OSError as e:
            # A full disk, a vanished directory or no descriptor left must not take the daemon
            # down; the data is dropped and the next write tries again. Said once, not per
            # write: a busy program would otherwise flood the daemon's own log.
            if not self._failing:
                log.warning(
                    "cannot write %s: %s; output is lost until it can", self.path, e.strerror
                )
                self._failing = True
            self.close()
            return
        if self._failing:
            self._failing = False
            log.info("writing %s again", self.path)

    def tail(self, lines: int) -> bytes:
        """The last ``lines`` lines, reading back into rotated files when needed."""
        chunks: list[bytes] = []
        count = 0
        paths = [self.path] + [f"{self.path}.{i}" for i in range(1, self.spec.backups + 1)]
        for p in paths:
            try:
                with open(p, "rb") as f:
                    data = f.read()
            except OSError:
                break
            chunks.insert(0, data)
            count += data.count(b"\n")
            if count > lines:
                break
        blob = b"".join(chunks)
        if lines <= 0:
            return b""
        parts = blob.splitlines(keepends=True)
        return b"".join(parts[-lines:])
