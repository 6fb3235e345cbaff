"""The OpenAPI document of the control API, shipped as ``openapi.json`` in this package."""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any


@cache
def openapi_bytes() -> bytes:
    return files("heartline.api").joinpath("openapi.json").read_bytes()


def openapi_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(openapi_bytes())
    return spec
