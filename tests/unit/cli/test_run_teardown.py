"""The end of `heartline run`: nothing of the runner's signal handling outlives its event loop."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

# In a process of its own: the runner makes its process a child subreaper, for good.
SCRIPT = textwrap.dedent("""
    import asyncio, json, signal
    from heartline.cli._run import _run
    from heartline.config import CrashLoopSpec, ProgramSpec

    spec = ProgramSpec(name="run", group="run", command=("true",), restart="never",
                       crash_loop=CrashLoopSpec(max_starts=0, cooldown=None))
    seen = {}

    async def main():
        seen["code"] = await _run(spec, 0, None, quiet=True)
        # What a signal arriving now, while asyncio.run closes the loop, would meet.
        seen["chld_default"] = signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
        seen["wakeup_fd"] = signal.set_wakeup_fd(-1)

    asyncio.run(main())
    print(json.dumps(seen))
""")


def test_signals_are_back_to_default_before_the_loop_closes() -> None:
    """Once the command is done, the runner has put SIGCHLD back to its default and no longer
    has signals wake the loop: closing the loop shuts its wakeup pipe before asyncio drops its
    handlers, and the guard's SIGCHLD landing in between printed an "Exception ignored ... Bad
    file descriptor" traceback on stderr (about one `heartline run` in twenty)."""
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)
    assert seen == {"code": 0, "chld_default": True, "wakeup_fd": -1}
