"""heartline.service.notify: systemd's notify protocol against a real datagram socket."""

from __future__ import annotations

import math
import os
import socket
import threading
import time
import uuid

import pytest
from tests.helpers import wait_until as wait_for
from tests.unit.service.conftest import Supervisor, pinger_running

from heartline.service import _notify, notify

#: WATCHDOG_USEC of the pinger tests: the pinger looks every 50 ms.
USEC = 100_000
PERIOD = USEC / 2e6


# --- not supervised --------------------------------------------------------------------------


def test_every_call_is_a_no_op_without_notify_socket(clean_notify: None) -> None:
    """With NOTIFY_SOCKET unset, each message call returns False and kick() returns None."""
    assert notify.ready() is False
    assert notify.ready("up") is False
    assert notify.status("busy") is False
    assert notify.stopping() is False
    assert notify.extend_timeout(3) is False
    assert notify.send(CUSTOM="x") is False
    assert notify.kick() is None
    assert _notify._state.sock is None


def test_unsupervised_kick_starts_nothing(
    clean_notify: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without NOTIFY_SOCKET no pinger starts, even when WATCHDOG_USEC is set."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    _notify._reset()
    for _ in range(1000):
        notify.kick()
    assert not pinger_running()


@pytest.mark.parametrize("value", ["", "relative/notify.sock", "@", "vsock:2:1234"])
def test_unusable_notify_socket_means_not_supervised(
    clean_notify: None, monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    """A NOTIFY_SOCKET that is neither an absolute path nor '@name' is ignored."""
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    _notify._reset()
    assert notify.ready() is False


def test_a_vanished_supervisor_does_not_fail_the_program(
    clean_notify: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sending to a socket path nobody listens on returns False instead of raising."""
    monkeypatch.setenv("NOTIFY_SOCKET", f"/nonexistent-{uuid.uuid4().hex}/notify.sock")
    _notify._reset()
    assert notify.ready() is False
    assert notify.status("still fine") is False


# --- messages --------------------------------------------------------------------------------


def test_ready_sends_ready_1(supervisor: Supervisor) -> None:
    """ready() sends the single line READY=1."""
    assert notify.ready() is True
    assert supervisor.recv() == b"READY=1"


def test_ready_with_status_sends_both_in_one_datagram(supervisor: Supervisor) -> None:
    """ready(status) puts READY=1 and STATUS=... into the same message."""
    notify.ready("serving on :8080")
    assert supervisor.recv() == b"READY=1\nSTATUS=serving on :8080"


@pytest.mark.parametrize(
    ("text", "sent"),
    [
        ("42 jobs queued", b"STATUS=42 jobs queued"),
        ("line one\nline two", b"STATUS=line one line two"),
        ("a\r\nb\n\n  c\n", b"STATUS=a b c"),
        ("\nleading", b"STATUS=leading"),
        ("caf\u00e9 \u2713", "STATUS=caf\u00e9 \u2713".encode()),
        ("", b"STATUS="),
    ],
)
def test_status_is_one_line(supervisor: Supervisor, text: str, sent: bytes) -> None:
    """status(text) sends STATUS=text with line breaks folded into single spaces, UTF-8."""
    assert notify.status(text) is True
    assert supervisor.recv() == sent


def test_stopping_and_extend_timeout(supervisor: Supervisor) -> None:
    """stopping() sends STOPPING=1; extend_timeout(s) sends EXTEND_TIMEOUT_USEC in microseconds."""
    notify.stopping()
    assert supervisor.recv() == b"STOPPING=1"
    notify.extend_timeout(2.5)
    assert supervisor.recv() == b"EXTEND_TIMEOUT_USEC=2500000"
    notify.extend_timeout(0)
    assert supervisor.recv() == b"EXTEND_TIMEOUT_USEC=0"


@pytest.mark.parametrize("seconds", [-1.0, math.nan, math.inf])
def test_extend_timeout_refuses_nonsense(clean_notify: None, seconds: float) -> None:
    """extend_timeout needs a finite, non-negative number of seconds."""
    with pytest.raises(ValueError, match="extend_timeout"):
        notify.extend_timeout(seconds)


def test_send_keeps_the_field_order_and_spells_bools_as_digits(supervisor: Supervisor) -> None:
    """send(**fields) sends KEY=value lines in the order given; True/False become 1/0."""
    notify.send(STATUS="reloading", RELOADING=True, ERRNO=0, BUSERROR="x=y")
    assert supervisor.recv() == b"STATUS=reloading\nRELOADING=1\nERRNO=0\nBUSERROR=x=y"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "at least one field"),
        ({"ready": 1}, "field name"),
        ({"A_B-C": 1}, "field name"),
        ({"STATUS": "two\nlines"}, "newline"),
        ({"STATUS": "cr\rhere"}, "newline"),
    ],
)
def test_send_refuses_what_would_break_the_protocol(
    supervisor: Supervisor, fields: dict[str, str | int], message: str
) -> None:
    """Lower-case or odd keys, values with line breaks and empty messages raise ValueError."""
    with pytest.raises(ValueError, match=message):
        notify.send(**fields)
    assert supervisor.quiet_for(0.05) == []


def test_abstract_socket_name(clean_notify: None, monkeypatch: pytest.MonkeyPatch) -> None:
    """NOTIFY_SOCKET=@name reaches the abstract unix socket 'name'."""
    name = f"heartline-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        _notify._reset()
        assert notify.ready() is True
        sock.settimeout(5)
        assert sock.recv(100) == b"READY=1"
        _notify._reset()


def test_messages_from_many_threads_all_arrive(supervisor: Supervisor) -> None:
    """Concurrent first calls share one socket and lose nothing."""
    threads = [threading.Thread(target=notify.status, args=(f"t{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = sorted(supervisor.recv() for _ in threads)
    assert got == sorted(f"STATUS=t{i}".encode() for i in range(8))


# --- kick and the pinger ---------------------------------------------------------------------


def test_kick_is_one_c_level_callable_for_the_whole_process(clean_notify: None) -> None:
    """notify.kick is a builtin (no Python frame), returns None and stays the same object."""
    first = notify.kick
    assert type(first).__name__ == "builtin_function_or_method"
    assert first() is None
    _notify._reset()
    assert notify.kick is first
    assert "kick" in dir(notify)


def test_pinger_starts_lazily(supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    """With WATCHDOG_USEC set, no thread runs until kick is looked up; then the pinger does."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    _notify._reset()
    assert not pinger_running()
    notify.kick()
    assert pinger_running()


def test_a_message_also_starts_the_pinger(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ready() reads the environment too, and starts the pinger when the watchdog applies."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    _notify._reset()
    notify.ready()
    assert pinger_running()
    assert supervisor.recv() == b"READY=1"


def test_pinger_sends_watchdog_only_after_a_kick(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No kick, no ping; one kick gives exactly one WATCHDOG=1 at the pinger's next look."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    _notify._reset()
    kick = notify.kick
    assert supervisor.quiet_for(4 * PERIOD) == []
    kick()
    assert supervisor.recv(timeout=5) == b"WATCHDOG=1"
    assert supervisor.quiet_for(4 * PERIOD) == []


def test_steady_kicks_keep_the_pings_coming(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A program that keeps kicking gets a WATCHDOG=1 at every look of the pinger; once it
    stops kicking, the pings stop."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    _notify._reset()
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            notify.kick()
            time.sleep(0.001)

    worker = threading.Thread(target=busy)
    worker.start()
    try:
        start = time.monotonic()
        pings = [supervisor.recv(timeout=5) for _ in range(5)]
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        worker.join()
    assert pings == [b"WATCHDOG=1"] * 5
    assert elapsed < 5 * PERIOD * 4  # one per look, not one per long pause
    assert len(supervisor.quiet_for(2 * PERIOD)) <= 1  # for kicks made just before the stop
    assert supervisor.quiet_for(4 * PERIOD) == []


def test_watchdog_for_another_pid_starts_no_pinger(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHDOG_PID naming another process: no pinger and no pings, but messages still go."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    _notify._reset()
    notify.kick()
    assert not pinger_running()
    assert supervisor.quiet_for(4 * PERIOD) == []
    notify.ready()
    assert supervisor.recv() == b"READY=1"


def test_watchdog_for_this_pid_starts_the_pinger(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """WATCHDOG_PID equal to this process's pid is the watchdog of this process."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    _notify._reset()
    notify.kick()
    assert pinger_running()
    assert supervisor.recv() == b"WATCHDOG=1"


@pytest.mark.parametrize(
    ("usec", "pid"),
    [("0", None), ("-5", None), ("abc", None), ("", None), ("\u0661\u0660", None), ("100", "x")],
)
def test_unusable_watchdog_settings_start_no_pinger(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch, usec: str, pid: str | None
) -> None:
    """WATCHDOG_USEC that is not a positive integer, or a WATCHDOG_PID that is not a number,
    turns the watchdog off."""
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    _notify._reset()
    notify.kick()
    assert not pinger_running()


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "1"}, 0.5e-6),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1234"}, 1.0),
        ({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1235"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_the_period(env: dict[str, str], interval: float | None) -> None:
    """The pinger looks every WATCHDOG_USEC/2 when the watchdog is this process's (pid 1234)."""
    assert _notify._watchdog_interval(env, 1234) == interval


def test_reset_stops_the_pinger(supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch) -> None:
    """_reset() ends the pinger thread before it returns."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    _notify._reset()
    notify.kick()
    assert pinger_running()
    _notify._reset()
    assert not pinger_running()


def test_the_pinger_survives_a_vanished_supervisor(
    supervisor: Supervisor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the socket disappears the pinger's sends fail quietly and it keeps running."""
    monkeypatch.setenv("WATCHDOG_USEC", str(USEC))
    _notify._reset()
    notify.kick()
    assert supervisor.recv() == b"WATCHDOG=1"
    os.unlink(supervisor.env_value)
    for _ in range(3):
        notify.kick()
        wait_for(lambda: _notify._armed, timeout=5, what="the pinger to look again")
    assert pinger_running()
