"""Durations and sizes as users write them in configs and on the command line."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartline._util import format_duration, parse_duration, parse_size
from heartline._util._units import MAX_DURATION

FAST = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("250ms", 0.25),
        ("10s", 10.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("500us", 0.0005),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("0", 0.0),
        ("42", 42.0),
        (" 3 s ", 3.0),
        ("0ms", 0.0),
    ],
)
def test_parse_duration_accepts_the_documented_forms(text: str, seconds: float) -> None:
    """Every documented unit (us, ms, s, m, h, d) and a bare number of seconds parse."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("value", "seconds"), [(0, 0.0), (7, 7.0), (2.5, 2.5)])
def test_parse_duration_accepts_plain_numbers(value: float, seconds: float) -> None:
    """A TOML integer or float is a number of seconds."""
    assert parse_duration(value) == seconds
    assert isinstance(parse_duration(value), float)


@pytest.mark.parametrize(
    "text",
    ["", "s", "10x", "10 sec", "-1s", "1e3s", "ten", "10s10ms", "1..5s", "10S", "5 m s", "inf"],
)
def test_parse_duration_rejects_malformed_text(text: str) -> None:
    """Anything that is not a number with an optional unit is a ValueError naming the input."""
    with pytest.raises(ValueError, match="duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("value", [-1, -0.5, math.inf, -math.inf, math.nan])
def test_parse_duration_rejects_negative_and_non_finite_numbers(value: float) -> None:
    """Negative, infinite and NaN durations are refused with a message saying why."""
    with pytest.raises(ValueError, match="finite and not negative"):
        parse_duration(value)


@pytest.mark.parametrize("value", [True, False, None, [1], {"s": 1}, b"10s"])
def test_parse_duration_rejects_other_types(value: object) -> None:
    """Booleans, None, lists, tables and bytes are not durations."""
    with pytest.raises(ValueError, match="expected a duration"):
        parse_duration(value)


def test_parse_duration_too_long_digit_string_is_a_value_error() -> None:
    """A digit string beyond float range parses to infinity and is refused as not finite."""
    with pytest.raises(ValueError, match="finite"):
        parse_duration("9" * 400 + "s")


def test_parse_duration_huge_integer_is_a_value_error() -> None:
    """An integer too large for a float is refused with ValueError, not OverflowError."""
    with pytest.raises(ValueError, match="duration"):
        parse_duration(10**400)


@FAST
@given(st.integers(min_value=0, max_value=int(MAX_DURATION * 1000)))
def test_parse_duration_milliseconds_property(n: int) -> None:
    """f"{n}ms" is n/1000 seconds for any non-negative integer n."""
    assert parse_duration(f"{n}ms") == pytest.approx(n / 1000)


@FAST
@given(
    st.integers(min_value=0, max_value=10**9),
    st.sampled_from([("us", 1e-6), ("ms", 1e-3), ("s", 1.0), ("m", 60.0), ("h", 3600.0)]),
)
def test_parse_duration_scales_by_unit(n: int, unit: tuple[str, float]) -> None:
    """f"{n}{unit}" is n times the unit's length in seconds, up to the one-year bound."""
    suffix, factor = unit
    if n * factor > MAX_DURATION:
        with pytest.raises(ValueError, match="at most 365d"):
            parse_duration(f"{n}{suffix}")
    else:
        assert parse_duration(f"{n}{suffix}") == pytest.approx(n * factor)


@FAST
@given(st.floats(min_value=0, max_value=MAX_DURATION, allow_nan=False))
def test_parse_duration_number_round_trips(x: float) -> None:
    """A finite non-negative number of seconds is returned unchanged."""
    assert parse_duration(x) == x


@FAST
@given(st.text(max_size=20))
def test_parse_duration_never_raises_anything_but_value_error(text: str) -> None:
    """Arbitrary text gives a finite non-negative float or a ValueError, nothing else."""
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        assert str(e)
    else:
        assert math.isfinite(seconds)
        assert seconds >= 0


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("4096", 4096),
        ("10B", 10),
        ("1k", 1000),
        ("1KB", 1000),
        ("1kb", 1000),
        ("1KiB", 1024),
        ("1Ki", 1024),
        ("10MB", 10_000_000),
        ("10MiB", 10 * 1024**2),
        ("2G", 2 * 1000**3),
        ("2GiB", 2 * 1024**3),
        ("1TB", 1000**4),
        ("1TiB", 1024**4),
        ("1.5KiB", 1536),
        (" 7 MB ", 7_000_000),
    ],
)
def test_parse_size_accepts_decimal_and_binary_units(text: str, size: int) -> None:
    """SI (k, MB) and IEC (KiB, Mi) units parse case-insensitively to bytes."""
    assert parse_size(text) == size


def test_parse_size_accepts_a_plain_integer() -> None:
    """A TOML integer is a number of bytes."""
    assert parse_size(65536) == 65536


@pytest.mark.parametrize("text", ["", "MB", "10XB", "10 bytes", "-1KB", "1e3", "10PB", "ib", "1iB"])
def test_parse_size_rejects_malformed_text(text: str) -> None:
    """Unknown units and malformed numbers are a ValueError naming the input."""
    with pytest.raises(ValueError, match="size") as info:
        parse_size(text)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("value", [True, None, 1.5, [1], b"1KB"])
def test_parse_size_rejects_other_types(value: object) -> None:
    """Booleans, floats, None, lists and bytes are not sizes."""
    with pytest.raises(ValueError, match="expected a size"):
        parse_size(value)


def test_parse_size_rejects_negative_integers() -> None:
    """A negative byte count is refused."""
    with pytest.raises(ValueError, match="must not be negative"):
        parse_size(-1)


def test_parse_size_huge_digit_string_is_a_value_error() -> None:
    """A size beyond float range is refused with ValueError, not OverflowError."""
    with pytest.raises(ValueError, match="size"):
        parse_size("9" * 400 + "KB")


@FAST
@given(
    st.integers(min_value=0, max_value=10**6),
    st.sampled_from([("k", 1000), ("KiB", 1024), ("MB", 1000**2), ("Mi", 1024**2), ("", 1)]),
)
def test_parse_size_scales_by_unit(n: int, unit: tuple[str, int]) -> None:
    """f"{n}{unit}" is n times the unit in bytes, exactly."""
    suffix, factor = unit
    assert parse_size(f"{n}{suffix}") == n * factor


@FAST
@given(st.text(alphabet="0123456789.kKmMgGtTiIbB xz-", max_size=12))
def test_parse_size_never_raises_anything_but_value_error(text: str) -> None:
    """Text made of the characters sizes use gives a non-negative int or a ValueError."""
    try:
        size = parse_size(text)
    except ValueError as e:
        assert str(e)
    else:
        assert isinstance(size, int)
        assert size >= 0


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (0.85, "850ms"),
        (0.9999, "999ms"),
        (1, "1s"),
        (42.7, "42s"),
        (59.99, "59s"),
        (60, "1m00s"),
        (192, "3m12s"),
        (3599, "59m59s"),
        (3600, "1h00m"),
        (7500, "2h05m"),
        (86399, "23h59m"),
        (86400, "1d00h"),
        (3 * 86400 + 4 * 3600 + 59, "3d04h"),
    ],
)
def test_format_duration_short_forms(seconds: float, text: str) -> None:
    """Durations render in the two largest units, truncated, with zero-padded minor units."""
    assert format_duration(seconds) == text


@FAST
@given(st.integers(min_value=1, max_value=10**7))
def test_format_duration_parses_back_within_its_precision(n: int) -> None:
    """Whole seconds below a minute parse back exactly; longer ones parse back within a unit."""
    text = format_duration(n)
    if n < 60:
        assert parse_duration(text) == n
    else:
        # "3m12s" is two units glued together; each part parses on its own.
        parts = _split_units(text)
        total = sum(parse_duration(p) for p in parts)
        assert total <= n
        assert n - total < (60 if n < 3600 else 3600 if n < 86400 else 86400)


def _split_units(text: str) -> list[str]:
    out, cur = [], ""
    for ch in text:
        cur += ch
        if ch.isalpha():
            out.append(cur)
            cur = ""
    return out


@pytest.mark.parametrize("value", [1e300, MAX_DURATION + 1, "366d", "9000h", 10**10])
def test_parse_duration_refuses_durations_beyond_a_year(value: object) -> None:
    """Durations no timer can hold are a ValueError naming the bound, not an overflow later."""
    with pytest.raises(ValueError, match="at most 365d"):
        parse_duration(value)
