"""Writing TOML: the standard library reads it (tomllib) but does not write it.

Enough for configuration files: strings, numbers, booleans, dates, arrays and inline tables,
and keys (bare when they can be, quoted otherwise).
"""

from __future__ import annotations

import json
import math
import re

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def toml_string(s: str) -> str:
    # JSON's escapes are TOML's; DEL is the one character TOML wants escaped and JSON does not.
    return json.dumps(s, ensure_ascii=False).replace("\x7f", "\\u007f")


def toml_key(key: str) -> str:
    return key if _BARE.fullmatch(key) else toml_string(key)


def toml_value(v: object) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return toml_string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        inner = ", ".join(f"{toml_key(str(k))} = {toml_value(x)}" for k, x in v.items())
        return "{ " + inner + " }" if inner else "{}"
    if hasattr(v, "isoformat"):  # datetime, date, time: TOML writes them as ISO 8601
        return str(v.isoformat())
    raise TypeError(f"cannot write {type(v).__name__} as TOML")
