"""A demo program that works for a few seconds, then crashes."""

import random
import sys
import time

life = random.uniform(1, 3)  # noqa: S311 - a demo, not cryptography
print(f"flaky: up, will crash in {life:.1f}s", flush=True)
time.sleep(life)
print("flaky: something went wrong", file=sys.stderr, flush=True)
sys.exit(3)
