"""Small shared helpers: durations, sizes, clocks, atomic files."""

from heartline._util._atomic import atomic_write
from heartline._util._clock import Clock, MonotonicClock
from heartline._util._units import format_duration, parse_duration, parse_size

__all__ = [
    "Clock",
    "MonotonicClock",
    "atomic_write",
    "format_duration",
    "parse_duration",
    "parse_size",
]
