"""`heartline attach NAME|PID`: a terminal on a program's backdoor (heartline.service.backdoor).

The socket is found from the process itself: next to the listening unix sockets the process
holds open, the one whose file name ends in ``-PID.sock`` (the backdoor's naming), wherever the
program put it.
"""

from __future__ import annotations

import os
import stat

from heartline.errors import UsageError

_ACCEPTING = 0x00010000  # __SO_ACCEPTCON in /proc/net/unix flags


def listening_unix_paths(pid: int) -> list[str]:
    """Paths of the listening unix sockets held by ``pid``."""
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        with open(f"/proc/{pid}/net/unix") as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return []
    paths = []
    for line in lines:
        cols = line.split()
        if len(cols) >= 8 and cols[6] in inodes and int(cols[3], 16) & _ACCEPTING:
            paths.append(cols[7])
    return paths


def backdoor_path(pid: int) -> str:
    if not os.path.exists(f"/proc/{pid}"):
        raise UsageError(f"no process {pid}")
    # /proc/net/unix shows the name a socket was bound to; the backdoor binds a temporary
    # name and renames it into place, so look for the final name in the same directory.
    for path in listening_unix_paths(pid):
        if path.endswith(f"-{pid}.sock"):
            return path
        directory = os.path.dirname(path)
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.endswith(f"-{pid}.sock") and stat.S_ISSOCK(
                os.stat(os.path.join(directory, name)).st_mode
            ):
                return os.path.join(directory, name)
    raise UsageError(
        f"process {pid} has no backdoor: it must call heartline.service.backdoor.install()"
    )


def attach(pid: int) -> int:
    from heartline.service import backdoor

    path = backdoor_path(pid)
    try:
        backdoor.connect(path)
    except backdoor.BackdoorError as e:
        raise UsageError(str(e)) from None
    return 0
