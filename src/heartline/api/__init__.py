"""The daemon's HTTP+JSON API: its OpenAPI document and a small synchronous client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from heartline.api._client import Client, default_socket_path

if TYPE_CHECKING:
    from heartline.api._spec import openapi_bytes, openapi_spec

__all__ = ["Client", "default_socket_path", "openapi_bytes", "openapi_spec"]


def __getattr__(name: str) -> Any:
    # The spec loader pulls in importlib.resources; only the daemon and tests need it, so a
    # cold `heartline status` does not pay for it.
    if name in ("openapi_bytes", "openapi_spec"):
        from heartline.api import _spec

        return getattr(_spec, name)
    raise AttributeError(name)
