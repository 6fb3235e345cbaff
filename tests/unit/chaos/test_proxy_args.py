"""The fault proxy refuses what it must before it listens: a remote address, bad command
lines; each refusal is one line and a distinct exit code."""

from __future__ import annotations

import socket
import threading

import pytest

from heartline.chaos import FaultProxy
from heartline.chaos._proxy import main
from heartline.errors import ChaosErrored, UsageError


@pytest.mark.parametrize("host", ["0.0.0.0", "198.18.0.1", "::"])
def test_a_non_loopback_listen_address_is_refused(host: str) -> None:
    """Listening beyond loopback needs allow_remote; without it start() refuses in one line
    and starts no thread."""
    proxy = FaultProxy(listen=(host, 0), upstream=("127.0.0.1", 9))
    with pytest.raises(UsageError, match="loopback only") as info:
        proxy.start()
    assert len(str(info.value).splitlines()) == 1
    assert "heartline-proxy" not in [t.name for t in threading.enumerate()]


@pytest.mark.parametrize("port", [-1, 65536])
def test_a_port_out_of_range_is_a_usage_error(port: int) -> None:
    """A port outside 0-65535 is named before anything is bound."""
    with pytest.raises(UsageError, match="port must be 0 to 65535"):
        FaultProxy(listen=("127.0.0.1", port), upstream=("127.0.0.1", 9)).start()


def test_the_address_is_known_only_once_started() -> None:
    """Asking where an unstarted proxy listens is a usage error, not a made-up address."""
    with pytest.raises(UsageError, match="not started"):
        _ = FaultProxy(upstream=("127.0.0.1", 9)).address


def test_a_taken_address_is_chaos_errored() -> None:
    """A port something else listens on gives ChaosErrored naming the address."""
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ChaosErrored, match=f"cannot listen on 127.0.0.1:{port}"):
            FaultProxy(listen=("127.0.0.1", port), upstream=("127.0.0.1", 9)).start()
    finally:
        taken.close()


@pytest.mark.parametrize(
    ("argv", "names"),
    [
        ([], "required"),
        (["--listen", "127.0.0.1:0"], "--upstream"),
        (["--listen", "127.0.0.1", "--upstream", "127.0.0.1:80"], "expected HOST:PORT"),
        (["--listen", "127.0.0.1:99999", "--upstream", "127.0.0.1:80"], "expected HOST:PORT"),
        (["--listen", "127.0.0.1:0", "--upstream", "::1:80"], "[::1]:8080"),
        (["--listen", "0.0.0.0:0", "--upstream", "127.0.0.1:80"], "loopback only"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:80", "--lease", "0"], "more than 0"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:80", "--lease", "soon"], "--lease"),
        (["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:80", "--bogus"], "unrecognized"),
    ],
)
def test_bad_command_lines_exit_2_with_one_line(
    argv: list[str], names: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad command line exits 2 with one line on stderr naming the problem; stdout stays
    empty (a controller reading it never mistakes it for `listening`)."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("heartline chaos proxy: ")
    assert names in err
    assert len(err.splitlines()) == 1
