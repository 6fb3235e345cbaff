"""Parse and format durations ("250ms", "10s", "5m") and sizes ("10MB", "512KiB")."""

from __future__ import annotations

import math
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?|\.\d+)\s*(ms|s|m|h|d|us)?\s*$")
_DURATION_UNITS = {
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    None: 1.0,
}
#: The longest duration accepted anywhere. Timers and sleeps overflow long before float does
#: (time.sleep(1e300) raises), and no deadline of a supervisor is meant to be years away.
MAX_DURATION = 365 * 86400.0
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "kib": 1024, "ki": 1024,
    "m": 1000**2, "mb": 1000**2, "mib": 1024**2, "mi": 1024**2,
    "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "gi": 1024**3,
    "t": 1000**4, "tb": 1000**4, "tib": 1024**4, "ti": 1024**4,
}  # fmt: skip


def parse_duration(value: object) -> float:
    """Seconds from ``"250ms"``, ``"10s"``, ``"5m"``, ``"1h"`` or a plain number of seconds.

    Raises ValueError with a message fit for the user.
    """
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '10s' or '250ms', got a boolean")
    try:
        if isinstance(value, int | float):
            seconds = float(value)
        elif isinstance(value, str):
            m = _DURATION.match(value)
            if not m:
                raise ValueError(f"expected a duration such as '10s' or '250ms', got {value!r}")
            seconds = float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        else:
            raise ValueError(f"expected a duration such as '10s', got {type(value).__name__}")
    except OverflowError:
        raise ValueError(f"the duration {str(value)[:20]}... is too large") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be finite and not negative, got {str(value)[:40]!r}")
    if seconds > MAX_DURATION:
        raise ValueError(f"a duration must be at most 365d, got {str(value)[:40]!r}")
    return seconds


def parse_size(value: object) -> int:
    """Bytes from ``"10MB"``, ``"512KiB"`` or a plain integer."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '10MB', got a boolean")
    if isinstance(value, int):
        size = value
        if size > 2**63:
            raise ValueError("the size is too large")
    elif isinstance(value, str):
        m = _SIZE.match(value)
        unit = (m.group(2) or "").lower() if m else ""
        if not m or unit not in _SIZE_UNITS:
            raise ValueError(f"expected a size such as '10MB' or '512KiB', got {value!r}")
        number = float(m.group(1)) * _SIZE_UNITS[unit]
        if not math.isfinite(number) or number > 2**63:
            raise ValueError(f"the size {value[:20]}... is too large")
        size = int(number)
    else:
        raise ValueError(f"expected a size such as '10MB', got {type(value).__name__}")
    if size < 0:
        raise ValueError(f"a size must not be negative, got {value!r}")
    return size


def format_duration(seconds: float) -> str:
    """A short human form: ``"850ms"``, ``"42s"``, ``"3m12s"``, ``"2h05m"``, ``"3d04h"``."""
    if seconds < 1:
        return f"{int(seconds * 1000)}ms"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"
