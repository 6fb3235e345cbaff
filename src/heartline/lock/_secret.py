"""Token files hold secrets: they are read only while no other user can read or change them.

As ssh does with a private key: a file that others could read has leaked its token already, or
will; one that another user owns (or could write) lets that user choose the token. So a token
file must belong to this user (or root) and have no group or other permission bits.
"""

from __future__ import annotations

import errno
import os
import stat

from heartline.errors import HeartlineError, UnsafeTokenFile, UsageError


def _name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _quote(path: str) -> str:
    import shlex  # only to word an error: it costs a cold start several milliseconds

    return shlex.quote(path)


def check_private(path: str, st: os.stat_result, *, what: str = "token") -> None:
    """Raise :class:`~heartline.errors.UnsafeTokenFile` (saying how the file is open to
    others, and the command that fixes it) unless ``st`` (of ``path``) is private to us or root.
    ``what``: what the file holds, for the message (a token, a key)."""
    me = os.geteuid()
    if st.st_uid not in (me, 0):
        quoted = _quote(path)
        us = f"this user ({_name(me)})" + ("" if me == 0 else " or root")
        raise UnsafeTokenFile(
            f"owned by {_name(st.st_uid)} (uid {st.st_uid}), not by {us}, so its owner could "
            f"change the {what}; use a file of your own (`chown {_name(me)} {quoted}` as "
            "root, then `chmod 600`)"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        rights = [verb for bits, verb in ((0o044, "read"), (0o022, "change")) if mode & bits]
        grants = " and ".join(rights) or "use"
        quoted = _quote(path)
        raise UnsafeTokenFile(
            f"mode {mode:04o} lets other users {grants} it; make it private: `chmod 600 {quoted}`"
        )


def read_private(path: str) -> str:
    """The text of the token file ``path``, checked on the very file read (no swap between
    the check and the read). Raises OSError, UnicodeDecodeError or
    :class:`~heartline.errors.UnsafeTokenFile`."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        check_private(path, st)
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode()


def read_token_text(
    path: str, *, where: str, layout: str, unsafe: type[HeartlineError] = UnsafeTokenFile
) -> str:
    """The text of the token file ``path``, or a one-line error that starts with ``where``
    (the option or variable that named it): UsageError for a file that cannot be read or is
    not text (``layout`` then says what it should hold), ``unsafe`` for one open to others."""
    try:
        return read_private(path)
    except OSError as e:
        raise UsageError(f"{where}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise UsageError(f"{where}: not text; {layout}") from None
    except UnsafeTokenFile as e:
        raise unsafe(f"{where}: {e}") from None


__all__ = ["check_private", "read_private", "read_token_text"]
