"""Read many datagrams, with their senders' credentials, in one system call (recvmmsg).

Python's socket module has recvmsg but not recvmmsg. Reading 500 programs' heartbeats one
recvmsg at a time costs more in system-call overhead than in work; recvmmsg returns every
datagram queued on a socket, up to the batch size, in one call. The structures are laid out
with ctypes over fixed buffers and read back through memoryviews with struct.

LP64 Linux layout. ``BatchReader.create`` returns None where any of this is unavailable;
callers then fall back to socket.recvmsg.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from collections.abc import Callable

_MSG_DONTWAIT = socket.MSG_DONTWAIT
_SCM_CREDENTIALS = getattr(socket, "SCM_CREDENTIALS", 2)
#: cmsghdr (len, level, type) then struct ucred's pid: level, type and pid.
_CREDS = struct.Struct("=8xiii")
_CREDS_END = 28  # cmsghdr (16) + struct ucred (12)
_SIZE_T = struct.Struct("=Q")
#: msg_controllen, msg_flags (then padding), msg_len: the tail of one struct mmsghdr.
_META = struct.Struct("=Qi4xI")
_HDR = 64  # sizeof(struct mmsghdr)
_CONTROLLEN_AT = 40
_SOL_SOCKET = socket.SOL_SOCKET


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p),
        ("namelen", ctypes.c_uint32),
        ("iov", ctypes.c_void_p),
        ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p),
        ("controllen", ctypes.c_size_t),
        ("flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("hdr", _MsgHdr), ("len", ctypes.c_uint)]


class BatchReader:
    """Non-blocking batch reads from a SO_PASSCRED datagram socket."""

    def __init__(self, fd: int, size: int, batch: int) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        self._call = libc.recvmmsg
        self._call.argtypes = [
            ctypes.c_int,
            ctypes.c_void_p,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_void_p,
        ]
        self._call.restype = ctypes.c_int
        self.fd, self.size, self.batch = fd, size, batch
        self.cspace = socket.CMSG_SPACE(12)
        self._data = (ctypes.c_char * (size * batch))()
        self._control = (ctypes.c_char * (self.cspace * batch))()
        self._iov = (_IOVec * batch)()
        self._msgs = (_MMsgHdr * batch)()
        data_at, control_at = ctypes.addressof(self._data), ctypes.addressof(self._control)
        for i in range(batch):
            self._iov[i].base = data_at + i * size
            self._iov[i].len = size
            hdr = self._msgs[i].hdr
            hdr.iov = ctypes.addressof(self._iov[i])
            hdr.iovlen = 1
            hdr.control = control_at + i * self.cspace
            hdr.controllen = self.cspace
        self._at = ctypes.addressof(self._msgs)
        self._dv = memoryview(self._data).cast("B")
        self._cv = memoryview(self._control).cast("B")
        self._mv = memoryview(self._msgs).cast("B")
        self._used = 0

    @classmethod
    def create(cls, fd: int, size: int, batch: int = 32) -> BatchReader | None:
        if ctypes.sizeof(_MMsgHdr) != _HDR or socket.CMSG_SPACE(12) < _CREDS_END:
            return None
        try:
            return cls(fd, size, batch)
        except (OSError, AttributeError):
            return None

    def read(
        self, beat: bytes, stamp: Callable[[int], bool]
    ) -> tuple[int, list[tuple[bytes, int, int]]]:
        """Read every datagram queued, up to the batch size, without blocking.

        Datagrams equal to ``beat`` are handed to ``stamp(pid)`` without being copied out
        (nearly all the traffic, so this path is kept lean); it returns False for a pid it
        does not know, and the datagram then joins the others. Returns (how many were read,
        the other datagrams as (data, sender pid, msg flags)).
        """
        mv = self._mv
        cspace = self.cspace
        pack_len = _SIZE_T.pack_into
        for i in range(self._used):  # the kernel wrote the control length back: restore it
            pack_len(mv, i * _HDR + _CONTROLLEN_AT, cspace)
        n = self._call(self.fd, self._at, self.batch, _MSG_DONTWAIT, None)
        if n < 0:
            self._used = 0
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0, []
            raise OSError(err, os.strerror(err))
        self._used = n
        others: list[tuple[bytes, int, int]] = []
        dv, cv, size = self._dv, self._cv, self.size
        meta, creds = _META.unpack_from, _CREDS.unpack_from
        beat_len = len(beat)
        for i in range(n):
            controllen, flags, length = meta(mv, i * _HDR + _CONTROLLEN_AT)
            pid = 0
            if controllen >= _CREDS_END:
                level, kind, cpid = creds(cv, i * cspace)
                if level == _SOL_SOCKET and kind == _SCM_CREDENTIALS:
                    pid = cpid
            start = i * size
            if (
                length == beat_len
                and not flags
                and dv[start : start + beat_len] == beat
                and stamp(pid)
            ):
                continue
            others.append((bytes(dv[start : start + min(length, size)]), pid, flags))
        return n, others
