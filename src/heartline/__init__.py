"""heartline: keep services alive on one machine or a cluster, and prove that they recover."""

from heartline.errors import HeartlineError

__version__ = "0.1.0"

__all__ = ["HeartlineError", "__version__"]
