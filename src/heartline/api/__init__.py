"""The daemon's HTTP+JSON API: its OpenAPI document and a small synchronous client."""

from heartline.api._client import Client, default_socket_path
from heartline.api._spec import openapi_bytes, openapi_spec

__all__ = ["Client", "default_socket_path", "openapi_bytes", "openapi_spec"]
