"""The dead-man agent: it applies one fault where the fault lives and undoes it when told, when
its controller goes away, or when its lease runs out, whichever comes first.

Standard library only, and run by its source (``python3 -I -S -c SOURCE SPEC``), so that a lab
host or a remote host over ssh needs nothing installed but Python. SPEC is JSON::

    {"apply": [argv] | null, "input": "stdin for apply" | null,
     "hold": [argv] | null,            # a process that is the fault (a hog): undo kills it
     "undo": [argv] | null, "lease": seconds}

It answers on stdout, one line each: ``applied PID`` (PID of the held process, or 0), or
``error WHY`` and exits 1; later ``undone`` or ``undo-error WHY``. It reads stdin: ``renew``
moves the lease on, ``undo`` undoes now; end of file (the controller died, or its ssh went
away) undoes now; no line within the lease (the controller hangs, or its host vanished with the
connection still open) undoes too. SIGTERM undoes; SIGINT and SIGHUP are ignored, so a Ctrl-C
meant for the controller's terminal never kills the agent before its undo ran.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import Any


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _one_line(text: object) -> str:
    text = " ".join(str(text).split())
    return text[:300] or "no message"


def _run(argv: list[str], data: str | None = None) -> str | None:
    """None when ``argv`` succeeded, else why not (one line)."""
    try:
        done = subprocess.run(
            argv,
            input=data.encode() if data is not None else None,
            stdin=None if data is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    except FileNotFoundError:
        return f"command not found: {argv[0]}"
    except (OSError, subprocess.SubprocessError) as e:
        return f"{argv[0]}: {e}"
    if done.returncode != 0:
        err = done.stderr.decode("utf-8", "replace").strip()
        return f"{argv[0]} exited {done.returncode}: {_one_line(err)}"
    return None


class _Undo(Exception):
    pass


def main(spec: dict[str, Any]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def on_term(signo: int, frame: object) -> None:
        raise _Undo()

    signal.signal(signal.SIGTERM, on_term)
    lease = float(spec["lease"])
    held: subprocess.Popen[bytes] | None = None
    undone = False

    def undo() -> str | None:
        nonlocal undone
        if undone:
            return None
        undone = True
        why = None
        if held is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(held.pid, signal.SIGKILL)
            held.wait()
        if spec.get("undo"):
            why = _run(spec["undo"])
        return why

    try:
        if spec.get("apply"):
            why = _run(spec["apply"], spec.get("input"))
            if why is not None:
                undo()
                _say("error " + why)
                return 1
        if spec.get("hold"):
            try:
                held = subprocess.Popen(
                    spec["hold"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            except OSError as e:
                _say(f"error cannot start {spec['hold'][0]}: {e}")
                return 1
        _say(f"applied {held.pid if held is not None else 0}")
        deadline = time.monotonic() + lease
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([0], [], [], left)
            if not ready:
                continue
            chunk = os.read(0, 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                word = line.strip()
                if word == b"renew":
                    deadline = time.monotonic() + lease
                elif word == b"undo":
                    raise _Undo()
    except (_Undo, OSError):
        pass  # told to, or the controller's end of stdout is gone: undo either way
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    why = undo()
    # The controller may be gone: the undo is what mattered.
    with contextlib.suppress(OSError):
        _say("undone" if why is None else "undo-error " + why)
    return 0


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
