"""parse_head: the request line and headers of the control API's HTTP, strictly."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from heartline.daemon._http import MAX_HEADERS, BadRequest, parse_head


def head(*lines: str) -> bytes:
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def bad(raw: bytes) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        parse_head(raw)
    return info.value


def test_valid_request_parses() -> None:
    """Method, unquoted path, query as lists, lower-case headers with trimmed values."""
    method, path, query, headers = parse_head(
        head(
            "GET /v1/status?name=a&name=b%20c&empty= HTTP/1.1",
            "Host: heartline",
            "Content-Type:   application/json  ",
            "X-Thing:",
        )
    )
    assert method == "GET"
    assert path == "/v1/status"
    assert query == {"name": ["a", "b c"], "empty": [""]}
    assert headers == {"host": "heartline", "content-type": "application/json", "x-thing": ""}


def test_path_is_percent_decoded() -> None:
    """A percent-encoded path is decoded (program names with ':' and UTF-8 survive)."""
    _m, path, _q, _h = parse_head(head("GET /v1/logs/web%3A0%2F%C3%A9 HTTP/1.1"))
    assert path == "/v1/logs/web:0/é"


def test_http_1_0_is_accepted_and_no_headers_is_fine() -> None:
    """HTTP/1.0 requests and requests without headers parse."""
    assert parse_head(head("POST /v1/stop HTTP/1.0")) == ("POST", "/v1/stop", {}, {})


def test_head_without_final_blank_line_still_parses() -> None:
    """parse_head only needs the lines; the terminating blank line is optional."""
    assert parse_head(b"GET / HTTP/1.1\r\nA: b")[3] == {"a": "b"}


def test_repeated_ordinary_header_keeps_the_last_value() -> None:
    """An ordinary header sent twice keeps the last value."""
    headers = parse_head(head("GET / HTTP/1.1", "Accept: a", "accept: b"))[3]
    assert headers == {"accept": "b"}


def test_header_value_may_contain_colons() -> None:
    """Only the first colon separates the name from the value."""
    headers = parse_head(head("GET / HTTP/1.1", "Host: localhost:8080"))[3]
    assert headers == {"host": "localhost:8080"}


@pytest.mark.parametrize(
    "line",
    ["GET /", "GET", "", "GET  / HTTP/1.1", "GET / HTTP/1.1 extra", " GET / HTTP/1.1"],
    ids=["two-parts", "one-part", "empty", "double-space", "four-parts", "leading-space"],
)
def test_malformed_request_line(line: str) -> None:
    """A request line that is not exactly METHOD SP TARGET SP VERSION is a 400."""
    assert bad(head(line)).status == 400


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "http/1.1", "HTTP/1", "HTTP/1.1\x00"])
def test_unsupported_version(version: str) -> None:
    """Anything but HTTP/1.1 or HTTP/1.0 is a 505."""
    assert bad(head(f"GET / {version}")).status == 505


@pytest.mark.parametrize("method", ["get", "Get", "G3T", "GE-T", "G\x00T"])
def test_malformed_method(method: str) -> None:
    """Methods are upper-case letters only."""
    assert bad(head(f"{method} / HTTP/1.1")).status == 400


def test_non_ascii_method_is_refused() -> None:
    """A method with a non-ASCII letter is not an HTTP token and is a 400."""
    assert bad(b"G\xc9T / HTTP/1.1\r\n\r\n").status == 400


@pytest.mark.parametrize(
    "target",
    ["v1/status", "*", "http://host/x", "/a\x00b", "/a\x7fb", "/a\x01", "/caf\xe9", "/a\tb"],
)
def test_malformed_target(target: str) -> None:
    """Targets must start with '/' and hold only visible ASCII."""
    assert bad(head(f"GET {target} HTTP/1.1")).status == 400


@pytest.mark.parametrize(
    "line",
    [
        " Host: x",
        "\tcontinued",
        "Host : x",
        "NoColon",
        ": value",
        "Ho\x01st: x",
        "H\xe9st: x",
        "Ho st: x",
    ],
    ids=["obs-fold", "tab-fold", "space-before-colon", "no-colon", "empty-name", "ctl-in-name",
         "non-ascii-name", "space-in-name"],
)  # fmt: skip
def test_malformed_header(line: str) -> None:
    """Folded lines, names with spaces or control characters, and lines without ':' are 400."""
    assert bad(head("GET / HTTP/1.1", line)).status == 400


@pytest.mark.parametrize("name", ["Content-Length", "Transfer-Encoding", "Host"])
def test_duplicate_framing_header(name: str) -> None:
    """Content-Length, Transfer-Encoding and Host may appear only once (any case)."""
    err = bad(head("POST / HTTP/1.1", f"{name}: 1", f"{name.lower()}: 1"))
    assert err.status == 400
    assert "duplicate" in str(err)


def test_header_count_limit() -> None:
    """MAX_HEADERS headers are fine; one more is a 431."""
    lines = [f"X-{i}: v" for i in range(MAX_HEADERS)]
    assert len(parse_head(head("GET / HTTP/1.1", *lines))[3]) == MAX_HEADERS
    err = bad(head("GET / HTTP/1.1", *lines, "X-last: v"))
    assert err.status == 431


@pytest.mark.parametrize(
    "target",
    ["/v1/%ff", "/v1/x?name=%ff", "/?" + "&".join(f"k{i}=v" for i in range(101))],
    ids=["bad-utf8-path", "bad-utf8-query", "too-many-fields"],
)
def test_malformed_query_or_path_encoding(target: str) -> None:
    """Percent-escapes that are not UTF-8, or more than 100 query fields, are a 400."""
    assert bad(head(f"GET {target} HTTP/1.1")).status == 400


def test_target_with_a_bracket_is_just_a_path() -> None:
    """'//[' is an odd path, not a broken authority: it parses (and routes to a 404)."""
    assert parse_head(head("GET //[ HTTP/1.1"))[1] == "//["


def test_path_starting_with_two_slashes_is_kept() -> None:
    """An origin-form target is a path: '//v1/status' is not host 'v1' plus '/status'."""
    assert parse_head(head("GET //v1/status HTTP/1.1"))[1] == "//v1/status"


def check(raw: bytes) -> None:
    try:
        result = parse_head(raw)
    except BadRequest as e:
        assert e.status in (400, 431, 505)
        assert str(e)
    else:
        method, path, query, headers = result
        assert method.isalpha()
        assert path.startswith("/") or path == ""
        assert all(isinstance(v, list) for v in query.values())
        assert all(k == k.lower() for k in headers)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_parse_or_are_bad_requests(raw: bytes) -> None:
    """Arbitrary bytes give a 4-tuple or BadRequest with a 4xx/5xx status, nothing else."""
    check(raw)


visible = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=20)
request_lines = st.tuples(
    st.sampled_from(["GET", "POST", "PUT", "get", "", "G3T", "ÀB"]),
    st.one_of(visible.map(lambda s: "/" + s), visible, st.text(max_size=10)),
    st.sampled_from(["HTTP/1.1", "HTTP/1.0", "HTTP/2", ""]),
).map(" ".join)
header_lines = st.one_of(
    st.tuples(st.sampled_from(["Host", "Content-Length", "X-A", "", " H", "A B"]), visible).map(
        lambda t: f"{t[0]}: {t[1]}"
    ),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None)
@given(request_lines, st.lists(header_lines, max_size=5))
def test_request_like_heads_parse_or_are_bad_requests(line: str, headers: list[str]) -> None:
    """Heads built from plausible and broken request lines and headers parse or are
    BadRequest, nothing else."""
    raw = "\r\n".join([line, *headers]).encode("utf-8", "surrogatepass") + b"\r\n\r\n"
    check(raw)


segment = st.text(max_size=8).filter(lambda s: "\x00" not in s)


@settings(max_examples=200, deadline=None)
@given(
    method=st.from_regex(r"[A-Z]{1,8}", fullmatch=True),
    segments=st.lists(segment, min_size=1, max_size=4),
    query=st.lists(st.tuples(segment.filter(bool), segment), max_size=5),
    headers=st.dictionaries(
        st.from_regex(r"[A-Za-z][A-Za-z0-9-]{0,10}", fullmatch=True),
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=10),
        max_size=5,
    ),
)
def test_well_formed_requests_round_trip(
    method: str,
    segments: list[str],
    query: list[tuple[str, str]],
    headers: dict[str, str],
) -> None:
    """A request built with proper percent-encoding parses back to what was encoded."""
    path = "/" + "/".join(segments)
    assume(not path.startswith("//"))  # see test_path_starting_with_two_slashes_is_kept
    lowered = {k.lower(): v for k, v in headers.items()}
    assume(len(lowered) == len(headers))
    target = quote(path, safe="/") + ("?" + urlencode(query) if query else "")
    raw = head(f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()))
    got_method, got_path, got_query, got_headers = parse_head(raw)
    assert got_method == method
    assert got_path == path
    expected: dict[str, list[str]] = {}
    for k, v in query:
        expected.setdefault(k, []).append(v)
    assert got_query == expected
    assert got_headers == lowered
