"""Small shared helpers: durations, sizes, atomic files, the clock, retries."""

from heartline._util._atomic import atomic_write
from heartline._util._clock import SYSTEM_CLOCK, Clock, SystemClock
from heartline._util._retry import Retry
from heartline._util._units import format_duration, parse_duration, parse_size

__all__ = [
    "SYSTEM_CLOCK",
    "Clock",
    "Retry",
    "SystemClock",
    "atomic_write",
    "format_duration",
    "parse_duration",
    "parse_size",
]
