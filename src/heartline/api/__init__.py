"""The daemon's HTTP+JSON API: its messages, its OpenAPI document and a small synchronous
client."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from heartline.api._client import Client, default_socket_path

if TYPE_CHECKING:
    from heartline.api._cluster import (
        CLUSTER_FORMAT,
        Capacity,
        HoldRecord,
        HostInfo,
        HostReport,
        HostState,
    )
    from heartline.api._messages import (
        EXIT_REASONS,
        DaemonInfo,
        ErrorReply,
        ExitReason,
        ExitRecord,
        Figures,
        Health,
        MoveResult,
        ProgramState,
        ProgramStatus,
        SingletonInfo,
        StateFileError,
        StatusReply,
        StopReason,
        StopResult,
        WatchdogInfo,
    )
    from heartline.api._spec import openapi_bytes, openapi_spec

__all__ = [
    "CLUSTER_FORMAT",
    "EXIT_REASONS",
    "Capacity",
    "Client",
    "DaemonInfo",
    "ErrorReply",
    "ExitReason",
    "ExitRecord",
    "Figures",
    "Health",
    "HoldRecord",
    "HostInfo",
    "HostReport",
    "HostState",
    "MoveResult",
    "ProgramState",
    "ProgramStatus",
    "SingletonInfo",
    "StateFileError",
    "StatusReply",
    "StopReason",
    "StopResult",
    "WatchdogInfo",
    "default_socket_path",
    "openapi_bytes",
    "openapi_spec",
]

_LAZY = {
    "openapi_bytes": "_spec",
    "openapi_spec": "_spec",
    "CLUSTER_FORMAT": "_cluster",
    "Capacity": "_cluster",
    "HoldRecord": "_cluster",
    "HostInfo": "_cluster",
    "HostReport": "_cluster",
    "HostState": "_cluster",
}


def __getattr__(name: str) -> Any:
    # The spec loader pulls in importlib.resources and the message types cost a few classes;
    # only the daemon, the supervisor and tests need them, so a cold `heartline status` does
    # not pay for them.
    if name in __all__:
        import importlib

        module = importlib.import_module(f"heartline.api.{_LAZY.get(name, '_messages')}")
        return getattr(module, name)
    raise AttributeError(name)
