"""One lock client for benchmarks/locks.py: the same loops for every tool.

    python lockchild.py TOOL TARGET NAME MODE [ARGS...]

TOOL is one of
  hl-lockd   heartline.Lock on heartline://TARGET (needs the project's .venv)
  hl-etcd    heartline.Lock on etcd://TARGET (the project's .venv)
  etcd-grpc  etcd's own lock API (v3lockpb.Lock/Lock and /Unlock over gRPC, grpcio from
             benchmarks/.venv-peers; messages encoded by hand, no generated stubs) on a lease
             from Lease/LeaseGrant kept alive by a LeaseKeepAlive stream, like an etcd session
  flock      fcntl.flock(LOCK_EX) on the file TARGET, in-process

MODE is one of
  uncontended N MAX_SECONDS        -> one JSON line: {"lat_ms": [...], ...}
  contend START END MAX_COUNT HOLD -> one JSON line: {"grants": [[t_req, t_grant, t_rel], ...]}
                                      (CLOCK_MONOTONIC seconds; waits until START, stops at END)
  chain                            -> prints "req T", then "granted T" and holds until killed
  token                            -> one JSON line {"token": N} (acquire and release once)

Every loop is bounded in count and in time.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time

TTL = 2.0
mono = time.monotonic  # CLOCK_MONOTONIC: comparable between processes


# --------------------------------------------------------------------------------------------
# protobuf, by hand: just the varint and length-delimited fields the lock and lease calls use


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _enc(fields: list[tuple[int, int | bytes]]) -> bytes:
    out = bytearray()
    for num, val in fields:
        if isinstance(val, bytes):
            out += _varint(num << 3 | 2) + _varint(len(val)) + val
        else:
            out += _varint(num << 3) + _varint(val)
    return bytes(out)


def _dec(buf: bytes) -> dict[int, int | bytes]:
    out: dict[int, int | bytes] = {}
    i = 0

    def rd() -> int:
        nonlocal i
        shift = val = 0
        while True:
            b = buf[i]
            i += 1
            val |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return val

    while i < len(buf):
        key = rd()
        num, wt = key >> 3, key & 7
        if wt == 0:
            out[num] = rd()
        elif wt == 2:
            ln = rd()
            out[num] = buf[i : i + ln]
            i += ln
        elif wt == 1:
            i += 8
        elif wt == 5:
            i += 4
        else:
            raise ValueError(f"wire type {wt}")
    return out


class EtcdLockAPI:
    """etcd's v3lock service on one session lease, as a re-usable context manager."""

    def __init__(self, target: str, name: str, ttl: float = TTL) -> None:
        import grpc

        self.grpc = grpc
        self.ch = grpc.insecure_channel(target)
        ident = lambda b: b  # noqa: E731
        self._grant = self.ch.unary_unary("/etcdserverpb.Lease/LeaseGrant", ident, ident)
        self._revoke = self.ch.unary_unary("/etcdserverpb.Lease/LeaseRevoke", ident, ident)
        self._ka = self.ch.stream_stream("/etcdserverpb.Lease/LeaseKeepAlive", ident, ident)
        self._lock = self.ch.unary_unary("/v3lockpb.Lock/Lock", ident, ident)
        self._unlock = self.ch.unary_unary("/v3lockpb.Lock/Unlock", ident, ident)
        self.name = name.encode()
        resp = _dec(self._grant(_enc([(1, int(ttl))]), timeout=10))
        if resp.get(4):
            raise RuntimeError(f"LeaseGrant: {resp[4]!r}")
        self.lease = int(resp[2])
        self.key = b""
        self._stop = threading.Event()
        interval = ttl / 3

        def requests():
            req = _enc([(1, self.lease)])
            while True:
                yield req
                if self._stop.wait(interval):
                    return

        self._stream = self._ka(requests())
        self._t = threading.Thread(target=self._drain, daemon=True)
        self._t.start()

    def _drain(self) -> None:
        try:
            for _ in self._stream:
                pass
        except Exception:  # cancelled at close
            pass

    def __enter__(self) -> EtcdLockAPI:
        resp = _dec(self._lock(_enc([(1, self.name), (2, self.lease)])))
        self.key = bytes(resp[2])
        return self

    def __exit__(self, *exc: object) -> None:
        self._unlock(_enc([(1, self.key)]), timeout=10)
        self.key = b""

    @property
    def token(self) -> int:
        return 0

    def close(self) -> None:
        self._stop.set()
        self._stream.cancel()
        with contextlib.suppress(Exception):
            self._revoke(_enc([(1, self.lease)]), timeout=5)
        self.ch.close()


class Flock:
    def __init__(self, path: str) -> None:
        import fcntl

        self.fcntl = fcntl
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)

    def __enter__(self) -> Flock:
        self.fcntl.flock(self.fd, self.fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        self.fcntl.flock(self.fd, self.fcntl.LOCK_UN)

    token = 0

    def close(self) -> None:
        os.close(self.fd)


def make(tool: str, target: str, name: str):
    if tool in ("hl-lockd", "hl-etcd"):
        from heartline import Lock

        scheme = "heartline" if tool == "hl-lockd" else "etcd"
        return Lock(name, url=f"{scheme}://{target}", ttl=TTL)
    if tool == "etcd-grpc":
        return EtcdLockAPI(target, name)
    if tool == "flock":
        return Flock(target)
    raise SystemExit(f"unknown tool {tool}")


def close(lk) -> None:
    fn = getattr(lk, "close", None)
    if callable(fn):
        fn()


def main() -> int:
    tool, target, name, mode, *args = sys.argv[1:]
    lk = make(tool, target, name)
    if mode == "uncontended":
        n, limit = int(args[0]), float(args[1])
        warm = min(20, n)
        for _ in range(warm):
            with lk:
                pass
        lat = []
        pc = time.perf_counter
        deadline = pc() + limit
        for _ in range(n):
            t0 = pc()
            with lk:
                pass
            t1 = pc()
            lat.append((t1 - t0) * 1000)
            if t1 > deadline:
                break
        print(json.dumps({"lat_ms": lat, "warmup": warm}), flush=True)
    elif mode == "contend":
        start, end, max_count, hold = float(args[0]), float(args[1]), int(args[2]), float(args[3])
        with lk:  # warm-up: connection, lease, imports
            pass
        delay = start - mono()
        if delay > 0:
            time.sleep(delay)
        grants = []
        sleep = time.sleep
        while len(grants) < max_count:
            t_req = mono()
            if t_req >= end:
                break
            with lk:
                t_grant = mono()
                sleep(hold)
                t_rel = mono()
            grants.append((t_req, t_grant, t_rel))
        print(json.dumps({"grants": grants}), flush=True)
    elif mode == "chain":
        print(f"req {mono()!r}", flush=True)
        lk.__enter__()
        print(f"granted {mono()!r}", flush=True)
        time.sleep(600)  # held until the benchmark kills this process (bounded anyway)
    elif mode == "token":
        with lk:
            tok = int(getattr(lk, "token", 0) or 0)
        print(json.dumps({"token": tok}), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode}")
    close(lk)
    return 0


if __name__ == "__main__":
    sys.exit(main())
