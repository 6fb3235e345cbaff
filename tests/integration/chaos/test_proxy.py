"""The fault proxy with real sockets on loopback in front of a real echo or HTTP server the test
starts: plain forwarding, each toxic on open and new connections, and the process mode's
dead-man (stdin closed, controller SIGKILLed, lease run out, SIGTERM)."""

from __future__ import annotations

import contextlib
import http.server
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tests.helpers import wait_until

from heartline.chaos import FaultProxy
from heartline.errors import ChaosErrored

PROXY = [sys.executable, "-m", "heartline.chaos._proxy"]


class EchoServer:
    """A threaded echo server on loopback that counts the connections it accepted and the
    bytes it received; it passes a client's end of stream back."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port: int = self.listener.getsockname()[1]
        self.accepted = 0
        self.received = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._socks: list[socket.socket] = []
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            if not select.select([self.listener], [], [], 0.05)[0]:
                continue
            conn, _ = self.listener.accept()
            with self._lock:
                self.accepted += 1
                self._socks.append(conn)
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                with self._lock:
                    self.received += len(data)
                conn.sendall(data)
            conn.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._stop.set()
        self._threads[0].join(5)
        self.listener.close()
        with self._lock:
            socks = list(self._socks)
        for conn in socks:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads[1:]:
            thread.join(5)
        for conn in socks:
            conn.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[FaultProxy]:
    with FaultProxy(upstream=("127.0.0.1", echo.port)) as p:
        yield p


@pytest.fixture
def connect() -> Iterator[Callable[[tuple[str, int]], socket.socket]]:
    """Opens client sockets (5 s timeout) and closes them all after the test."""
    opened: list[socket.socket] = []

    def open_one(address: tuple[str, int]) -> socket.socket:
        sock = socket.create_connection(address, timeout=5)
        opened.append(sock)
        return sock

    yield open_one
    for sock in opened:
        sock.close()


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    got = bytearray()
    while len(got) < size:
        data = sock.recv(min(65536, size - len(got)))
        if not data:
            raise AssertionError(f"closed after {len(got)} of {size} bytes")
        got += data
    return bytes(got)


def round_trip(sock: socket.socket, payload: bytes = b"ping") -> float:
    """Seconds for ``payload`` to come back through the echo server."""
    start = time.monotonic()
    sock.sendall(payload)
    assert recv_exactly(sock, len(payload)) == payload
    return time.monotonic() - start


def echo_through(sock: socket.socket, payload: bytes) -> bytes:
    """Send ``payload`` and the end of stream from a thread; read everything back to EOF."""
    sender = threading.Thread(target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR)))
    sender.start()
    got = bytearray()
    while data := sock.recv(65536):
        got += data
    sender.join(5)
    return bytes(got)


def assert_reset_on_connect(address: tuple[str, int]) -> None:
    """A new client is reset: at its first read, or in connect() itself when the RST comes
    before connect() returns."""
    with pytest.raises(ConnectionResetError), socket.create_connection(address, timeout=5) as s:
        s.recv(16)


# --- the proxy in this process -----------------------------------------------------------


def test_plain_forwarding_is_byte_exact_both_ways_for_concurrent_clients(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """Eight clients at once each send 256 KiB of random bytes and their end of stream; each
    gets exactly its own bytes back, then the end of stream."""
    payloads = [os.urandom(256 * 1024) for _ in range(8)]
    socks = [connect(proxy.address) for _ in payloads]
    with ThreadPoolExecutor(len(payloads)) as pool:
        results = list(pool.map(echo_through, socks, payloads))
    assert [r == p for r, p in zip(results, payloads, strict=True)] == [True] * len(payloads)
    assert echo.accepted == len(payloads)
    assert echo.received == sum(map(len, payloads))


def test_latency_delays_each_direction_by_about_the_set_time(
    proxy: FaultProxy, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """200 ms up, down or both: the round trip grows by 200 ms per delayed direction (at least
    0.9 x, at most 300 ms more), and is fast again once cleared."""
    sock = connect(proxy.address)
    assert round_trip(sock) < 0.1
    for text, delayed in (("latency 200ms up", 0.2), ("latency 200ms down", 0.2),
                          ("latency 200ms", 0.4)):  # fmt: skip
        proxy.set(text)
        took = round_trip(sock)
        assert 0.9 * delayed <= took < delayed + 0.3, (text, took)
    proxy.clear()
    assert round_trip(sock) < 0.1


def test_latency_with_jitter_keeps_the_order_of_the_stream(
    proxy: FaultProxy, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """Forty small writes a few ms apart under 30 ms +- 25 ms of jitter come back in the order
    they were sent, byte for byte."""
    proxy.set("latency 30ms jitter 25ms")
    sock = connect(proxy.address)
    sent = b""
    for i in range(40):
        message = f"{i:07d}\n".encode()
        sock.sendall(message)
        sent += message
        time.sleep(0.003)
    assert recv_exactly(sock, len(sent)) == sent


def test_set_reaches_every_open_connection_at_once(
    proxy: FaultProxy, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """Twelve connections open before the toxic is set and one opened after: every one of
    them is delayed, and every one is fast again after clear()."""
    socks = [connect(proxy.address) for _ in range(12)]
    assert all(round_trip(s) < 0.2 for s in socks)
    proxy.set("latency 250ms up")
    assert str(proxy.toxic) == "latency 250ms up"
    socks.append(connect(proxy.address))
    with ThreadPoolExecutor(len(socks)) as pool:
        slowed = list(pool.map(round_trip, socks))
    assert min(slowed) >= 0.225, slowed
    proxy.clear()
    assert proxy.toxic is None
    with ThreadPoolExecutor(len(socks)) as pool:
        fast = list(pool.map(round_trip, socks))
    assert max(fast) < 0.2, fast


def test_a_toxic_set_before_start_holds_from_the_first_connection(
    echo: EchoServer, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """A toxic set on a proxy not yet started is in force for its very first connection."""
    p = FaultProxy(upstream=("127.0.0.1", echo.port))
    p.set("latency 200ms up")
    with p:
        assert round_trip(connect(p.address)) >= 0.18


def test_bandwidth_caps_throughput(
    proxy: FaultProxy, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """128 KiB back through a 64 KiB/s cap on the way down takes about two seconds (at least
    1.5 s); the way up is not capped."""
    proxy.set("bandwidth 64KiB/s down")
    sock = connect(proxy.address)
    payload = os.urandom(128 * 1024)
    start = time.monotonic()
    assert echo_through(sock, payload) == payload
    took = time.monotonic() - start
    assert 1.5 <= took < 3.5, took


def test_reset_gives_econnreset_to_open_and_new_clients(
    proxy: FaultProxy, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """An open client waiting to read gets ECONNRESET when reset is set; a client that
    connects while it holds gets one too; after clear() connections work again."""
    sock = connect(proxy.address)
    round_trip(sock)
    proxy.set("reset")
    with pytest.raises(ConnectionResetError):
        sock.recv(16)
    assert_reset_on_connect(proxy.address)
    proxy.clear()
    assert round_trip(connect(proxy.address)) < 0.2


def test_blackhole_swallows_data_and_never_answers_nor_closes(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """Under blackhole an open client's writes are taken and dropped: its read times out (no
    data, no close) and the service receives nothing; a new client never reaches the
    service. After clear() both connections carry data again."""
    sock = connect(proxy.address)
    round_trip(sock)
    received, accepted = echo.received, echo.accepted
    proxy.set("blackhole")
    late = connect(proxy.address)
    for s in (sock, late):
        s.sendall(b"lost " * 100)
        s.settimeout(0.4)
        with pytest.raises(TimeoutError):
            s.recv(16)
        s.settimeout(5)
    assert (echo.received, echo.accepted) == (received, accepted)
    proxy.clear()
    assert round_trip(sock, b"after") < 0.2
    assert round_trip(late, b"later") < 0.2
    assert echo.accepted == accepted + 1


def test_timeout_closes_after_the_set_time_and_zero_holds(
    proxy: FaultProxy, echo: EchoServer, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """timeout 500ms: nothing is forwarded and the open connection is closed about 500 ms
    later. timeout 0: a connection is held open, silent, until clear()."""
    sock = connect(proxy.address)
    round_trip(sock)
    received = echo.received
    proxy.set("timeout 500ms")
    start = time.monotonic()
    sock.sendall(b"dropped")
    assert sock.recv(16) == b""
    assert 0.45 <= time.monotonic() - start < 1.2
    assert echo.received == received
    proxy.set("timeout 0")
    held = connect(proxy.address)
    held.settimeout(0.6)
    with pytest.raises(TimeoutError):
        held.recv(16)
    held.settimeout(5)
    proxy.clear()
    assert round_trip(held) < 0.2


def test_down_refuses_connects_until_cleared(
    proxy: FaultProxy, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """down closes open connections and the listener (connects are refused); clear() listens
    again on the same address."""
    address = proxy.address
    sock = connect(address)
    round_trip(sock)
    proxy.set("down")
    assert sock.recv(16) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()
    proxy.clear()
    assert proxy.address == address
    assert round_trip(connect(address)) < 0.2


def test_ipv6_loopback_listens_and_forwards(
    echo: EchoServer, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """[::1] is loopback too: the proxy listens there and forwards to an IPv4 service."""
    try:
        socket.socket(socket.AF_INET6).close()
    except OSError as e:
        pytest.skip(f"no IPv6 here: {e}")
    try:
        with FaultProxy(listen=("::1", 0), upstream=("127.0.0.1", echo.port)) as p:
            assert p.address[0] == "::1"
            assert round_trip(connect(p.address)) < 0.2
    except ChaosErrored as e:
        pytest.skip(f"no IPv6 loopback here: {e}")


def test_a_service_that_refuses_resets_the_client() -> None:
    """With nothing listening upstream, a client is reset as the service itself would have
    refused it, and the proxy carries on."""
    spare = socket.socket()
    spare.bind(("127.0.0.1", 0))
    port = spare.getsockname()[1]
    spare.close()  # a port nothing listens on
    with FaultProxy(upstream=("127.0.0.1", port)) as p:
        for _ in range(2):
            assert_reset_on_connect(p.address)


def test_stop_closes_every_connection_and_ends_the_thread(
    echo: EchoServer, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """stop() closes open connections and the listener and joins the heartline-proxy
    thread."""
    p = FaultProxy(upstream=("127.0.0.1", echo.port))
    p.start()
    try:
        assert "heartline-proxy" in [t.name for t in threading.enumerate()]
        sock = connect(p.address)
        round_trip(sock)
        p.set("latency 1s")
    finally:
        p.stop()
    assert sock.recv(16) == b""
    assert "heartline-proxy" not in [t.name for t in threading.enumerate()]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(p.address, timeout=2).close()


# --- the process mode ----------------------------------------------------------------------


class ProxyProcess:
    """``python -m heartline.chaos._proxy`` as a child: commands in, answers out."""

    def __init__(self, upstream: int, *, lease: str) -> None:
        self.proc = subprocess.Popen(
            [*PROXY, "--listen", "127.0.0.1:0", "--upstream", f"127.0.0.1:{upstream}",
             "--lease", lease],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        first = self.line(timeout=10)
        host, _, port = first.removeprefix("listening ").rpartition(":")
        assert first.startswith("listening ") and host == "127.0.0.1", first
        self.address = (host, int(port))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def line(self, timeout: float = 5) -> str:
        got = self.lines.get(timeout=timeout)
        assert got is not None, f"stdout closed; stderr: {self.stderr()}"
        return got

    def send(self, command: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.line()

    def stderr(self) -> str:
        if self.proc.poll() is None:
            return "(still running)"
        assert self.proc.stderr is not None
        return self.proc.stderr.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.reader.join(5)


@pytest.fixture
def run_proxy() -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def run(upstream: int, *, lease: str = "10s") -> ProxyProcess:
        started.append(ProxyProcess(upstream, lease=lease))
        return started[-1]

    yield run
    for p in started:
        p.close()


@pytest.fixture
def http_server() -> Iterator[int]:
    """A threaded HTTP server on loopback answering every GET with 200 and 'hello'."""

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def get(address: tuple[str, int]) -> float:
    """Seconds for a GET through ``address`` to come back 200 'hello'."""
    start = time.monotonic()
    with urllib.request.urlopen(f"http://{address[0]}:{address[1]}/", timeout=5) as reply:
        assert (reply.status, reply.read()) == (200, b"hello")
    return time.monotonic() - start


def test_process_mode_sets_clears_and_exits_when_stdin_closes(
    http_server: int, run_proxy: Callable[..., ProxyProcess]
) -> None:
    """The process prints `listening HOST:PORT`, answers `ok` to a toxic, `clear` and `renew`
    (the toxic taking effect on HTTP through it), and when stdin closes clears its toxic and
    exits 0, saying why on stderr."""
    p = run_proxy(http_server)
    assert get(p.address) < 0.5
    assert p.send("latency 300ms up") == "ok"
    assert 0.27 <= get(p.address) < 0.9
    assert p.send("clear") == "ok"
    assert p.send("renew") == "ok"
    assert get(p.address) < 0.5
    assert p.send("latency 300ms") == "ok"
    assert p.proc.stdin is not None
    p.proc.stdin.close()
    assert p.proc.wait(3) == 0
    assert "stdin closed: toxic cleared" in p.stderr()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(p.address, timeout=2).close()


def test_process_mode_answers_bad_lines_with_error_and_carries_on(
    echo: EchoServer, run_proxy: Callable[..., ProxyProcess],
    connect: Callable[[tuple[str, int]], socket.socket],
) -> None:  # fmt: skip
    """Bad command lines get one `error ...` line each (naming the problem and the forms) and
    the proxy keeps serving and taking commands."""
    p = run_proxy(echo.port)
    for bad, names in (("latency fast", "'fast'"), ("frobnicate", "unknown toxic"),
                       ("", "empty"), ("bandwidth 0B/s", "at least 1B/s"),
                       ("latency 200", "needs a unit"), ("x" * 5000, "longer than 4096")):  # fmt: skip
        answer = p.send(bad)
        assert answer.startswith("error ") and names in answer, (bad[:20], answer)
    answer = p.send("slow")
    assert "or clear, renew" in answer
    assert p.send("latency 200ms down") == "ok"
    sock = connect(p.address)
    assert round_trip(sock) >= 0.18
    assert p.send("clear") == "ok"
    assert round_trip(sock) < 0.2
    assert p.proc.poll() is None


def test_process_mode_lease_runs_out_when_the_controller_goes_silent(
    echo: EchoServer, run_proxy: Callable[..., ProxyProcess]
) -> None:
    """With stdin open but silent, the proxy lives while `renew` comes within the lease (1 s)
    and clears its toxic and exits 0 about a lease after the last line."""
    p = run_proxy(echo.port, lease="1s")
    assert p.send("blackhole") == "ok"
    for _ in range(3):
        time.sleep(0.5)
        assert p.send("renew") == "ok"
    last = time.monotonic()
    assert p.proc.wait(3) == 0
    assert 0.9 <= time.monotonic() - last < 2.0
    assert "no command within the 1 s lease: toxic cleared" in p.stderr()


def test_process_mode_sigterm_clears_and_exits_0(
    echo: EchoServer, run_proxy: Callable[..., ProxyProcess]
) -> None:
    """SIGTERM ends the process at once: toxic cleared, exit 0."""
    p = run_proxy(echo.port)
    assert p.send("down") == "ok"
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(3) == 0
    assert "SIGTERM: toxic cleared" in p.stderr()


CONTROLLER = textwrap.dedent(
    """
    import subprocess, sys, time
    proxy = subprocess.Popen(
        [sys.executable, "-m", "heartline.chaos._proxy", "--listen", "127.0.0.1:0",
         "--upstream", sys.argv[1], "--lease", "5s"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=open(sys.argv[2], "w"), text=True)
    listening = proxy.stdout.readline().split()[1]
    proxy.stdin.write("latency 300ms up\\n")
    proxy.stdin.flush()
    print(proxy.pid, listening, proxy.stdout.readline().strip(), flush=True)
    time.sleep(60)
    """
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def test_a_sigkilled_controller_takes_its_toxic_with_it(
    echo: EchoServer, tmp_path: Path, connect: Callable[[tuple[str, int]], socket.socket]
) -> None:
    """A controller SIGKILLed while its proxy holds a toxic: the proxy sees stdin close,
    clears the toxic and exits well within its 5 s lease."""
    errors = tmp_path / "proxy.err"
    controller = subprocess.Popen(
        [sys.executable, "-c", CONTROLLER, f"127.0.0.1:{echo.port}", str(errors)],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert controller.stdout is not None
        ready = select.select([controller.stdout], [], [], 10)[0]
        assert ready, "the controller did not start its proxy"
        pid_text, listening, answer = controller.stdout.readline().split()
        pid = int(pid_text)
        host, _, port = listening.rpartition(":")
        assert answer == "ok"
        assert round_trip(connect((host, int(port)))) >= 0.27
        os.kill(controller.pid, signal.SIGKILL)
        controller.wait(5)
        killed = time.monotonic()
        wait_until(lambda: not alive(pid), timeout=5, what="the proxy to exit")
        assert time.monotonic() - killed < 2.0
        assert "stdin closed: toxic cleared" in errors.read_text()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=2).close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(controller.pid, signal.SIGKILL)
        controller.wait(5)
        if controller.stdout is not None:
            controller.stdout.close()
        with contextlib.suppress(ChildProcessError, NameError):
            os.waitpid(pid, os.WNOHANG)  # ours if this process is a subreaper
