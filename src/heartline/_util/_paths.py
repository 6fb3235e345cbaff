"""Private directories: created owner-only, and an existing one checked before it is trusted.

Both the backdoor (its socket) and reports (their files) keep things in a directory that only
the program's user may enter; they create and check it through this one module, with the same
rule: a real directory (not a symlink), ours, closed to group and other.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys

from heartline.errors import HeartlineError


class UnsafeDirectory(HeartlineError):
    """A directory others could tamper with: not a directory, not ours, or open to others."""


def check_private_dir(
    path: str, *, private: bool = True, error: type[HeartlineError] = UnsafeDirectory
) -> None:
    """Refuse ``path`` (raise ``error``) unless it is a real directory (not a symlink) owned by
    us or root and writable by nobody else; with ``private``, owned by us and closed to group
    and other."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise error(f"{path} is not a directory")
    uid = os.getuid()
    if private:
        if st.st_uid != uid:
            raise error(f"{path} belongs to uid {st.st_uid}, not to us (uid {uid})")
        if st.st_mode & 0o077:
            raise error(
                f"{path} is open to group or other (mode {stat.S_IMODE(st.st_mode):04o}); "
                "it must be 0700"
            )
        return
    if st.st_uid not in (uid, 0):
        raise error(f"{path} belongs to uid {st.st_uid}, neither us (uid {uid}) nor root")
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
        raise error(f"{path} is writable by group or other (mode {stat.S_IMODE(st.st_mode):04o})")


def ensure_private_dir(path: str, *, error: type[HeartlineError] = UnsafeDirectory) -> None:
    """Create ``path`` (0700, whatever the umask) and any missing parents below an existing
    ancestor, refusing any existing part that others could tamper with; ``path`` itself must
    end up ours and 0700."""
    path = os.path.abspath(path)
    missing: list[str] = []
    head = path
    while not os.path.lexists(head):
        missing.append(head)
        parent = os.path.dirname(head)
        if parent == head:
            break
        head = parent
    if path not in missing:
        check_private_dir(path, private=True, error=error)
        return
    for part in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(part, 0o700)
            os.chmod(part, 0o700)  # whatever the umask says
        check_private_dir(part, private=part == path, error=error)


def program_name() -> str:
    """This program's name, as paths made for it show it: the script's, or its package's for
    ``python -m``, without ``.py``, cut to 40 safe characters (``python`` when unknown)."""
    arg0 = sys.argv[0] if sys.argv and sys.argv[0] not in ("", "-c", "-m") else "python"
    name = os.path.basename(arg0)
    if name in ("__main__.py", "__init__.py"):
        name = os.path.basename(os.path.dirname(arg0)) or "python"
    name = name.removesuffix(".py")
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")[:40] or "python"
