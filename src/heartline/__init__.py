"""heartline: keep services alive on one machine or a cluster, and prove that they recover."""

from typing import TYPE_CHECKING, Any

from heartline.errors import HeartlineError, LockLost

if TYPE_CHECKING:
    from heartline.lock import Lock

__version__ = "0.1.0"

__all__ = ["HeartlineError", "Lock", "LockLost", "__version__"]


def __getattr__(name: str) -> Any:
    # Lazy, so `heartline status` and friends do not pay for the lock client.
    if name == "Lock":
        from heartline.lock import Lock

        return Lock
    raise AttributeError(f"module 'heartline' has no attribute {name!r}")
