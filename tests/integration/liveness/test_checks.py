"""Active health checks: tcp, http and exec, each passing, failing and hanging."""

from __future__ import annotations

import socket
import time

from tests.integration.conftest import py, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# An HTTP server on loopback whose behaviour a file controls: "ok", "500", "hang", "wrong".
HTTP_APP = py("""
import http.server, sys, time
mode_file, port = sys.argv[1], int(sys.argv[2])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        mode = open(mode_file).read().strip()
        if mode == "hang":
            time.sleep(3600)
        status = 500 if mode == "500" else 200
        if mode == "chunked":
            # "all good", split across two chunks: a match must read through the framing.
            self.protocol_version = "HTTP/1.1"
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(b"5\\r\\nall g\\r\\n3\\r\\nood\\r\\n0\\r\\n\\r\\n")
            return
        body = b"all good" if mode == "ok" else b"something else"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
""")

TCP_APP = py("""
import socket, sys, time
s = socket.create_server(("127.0.0.1", int(sys.argv[1])))
while True:
    c, _ = s.accept()
    c.close()
""")


def _checked(d, name, **match):
    def ok():
        h = d.program(name)["health"]
        return h if h and all(h.get(k) == v for k, v in match.items()) else None

    return ok


def test_tcp_check_passes_and_gates_readiness(make_daemon):
    """ready = "check": running once the port accepts connections."""
    port = free_port()
    d = make_daemon(f"""
        [programs.srv]
        command = {TCP_APP[:-1]}, "{port}"]
        ready = "check"
        check = {{ url = "tcp://127.0.0.1:{port}", interval = "100ms", timeout = "1s" }}
    """)
    p = d.wait_state("srv", "running")
    assert p["health"]["ok"] is True and p["health"]["last"] == "connected"


def test_tcp_check_failing_restarts_with_reason_check(make_daemon):
    """Nothing listens: after `failures` refused connections the program is restarted."""
    port = free_port()
    d = make_daemon(f"""
        [programs.deaf]
        command = ["/bin/sleep", "3600"]
        check = {{ url = "tcp://127.0.0.1:{port}", interval = "50ms", timeout = "1s", failures = 2 }}
        backoff = {{ initial = "0s" }}
    """)
    p = wait_until(lambda: (q := d.program("deaf"))["restarts"] >= 1 and q, 10, "a restart")
    assert p["last_exit"]["reason"] == "check"
    # The new process is an ordinary running program again: an operator can stop it.
    assert p["state"] in ("running", "stopping")
    res = d.cli("stop", "deaf", timeout=10)
    assert "deaf: stopped" in res.stdout
    assert (
        "2 failed checks" in p["last_exit"]["detail"]
        and "refused" in p["last_exit"]["detail"].lower()
    )


def test_http_check_status_body_and_hang(make_daemon, tmp_path):
    """HTTP: 200 with the body passes; 500, a wrong body and a hanging answer fail at the timeout."""
    port = free_port()
    mode = tmp_path / "mode"
    mode.write_text("ok")
    d = make_daemon(f"""
        [programs.web]
        command = {HTTP_APP[:-1]}, "{mode}", "{port}"]
        ready = "check"
        check = {{ url = "http://127.0.0.1:{port}/health", body = "good", interval = "100ms", timeout = "300ms", failures = 1000 }}
        [programs.other]
        command = ["/bin/sleep", "3600"]
    """)
    d.wait_state("web", "running")
    assert d.program("web")["health"]["last"] == "HTTP 200"
    mode.write_text("500")
    assert "HTTP 500" in wait_until(_checked(d, "web", ok=False), 10, "a 500")["last"]
    mode.write_text("wrong")
    assert (
        "lacks 'good'"
        in wait_until(_checked(d, "web", last="HTTP 200, body lacks 'good'"), 10, "body")["last"]
    )
    mode.write_text("hang")
    hung = wait_until(
        lambda: (h := d.program("web")["health"]) and "no answer" in h["last"] and h, 10, "a hang"
    )
    assert hung["ok"] is False
    # While checks hang, the daemon answers at once and other programs are untouched.
    t = time.monotonic()
    assert d.program("other")["state"] == "running"
    assert time.monotonic() - t < 1.0
    mode.write_text("ok")
    wait_until(_checked(d, "web", ok=True), 10, "recovery")
    assert d.program("web")["restarts"] == 0


def test_exec_check_pass_fail_and_hang(make_daemon, tmp_path):
    """exec: exit 0 passes, other codes fail, a hanging command is killed at the timeout."""
    mode = tmp_path / "mode"
    mode.write_text("0")
    pids = tmp_path / "pids"
    checker = py("""
import os, sys, time
open(sys.argv[2], "a").write(f"{os.getpid()}\\n")
m = open(sys.argv[1]).read().strip()
if m == "hang":
    time.sleep(3600)
sys.exit(int(m))
""")
    d = make_daemon(f"""
        [programs.app]
        command = ["/bin/sleep", "3600"]
        ready = "check"
        check = {{ exec = {checker[:-1]}, "{mode}", "{pids}"], interval = "100ms", timeout = "500ms", failures = 1000 }}
    """)
    d.wait_state("app", "running")
    mode.write_text("3")
    assert wait_until(_checked(d, "app", ok=False), 10, "a failure")["last"] == "exit 3"
    mode.write_text("hang")
    wait_until(_checked(d, "app", last="no answer within 0.5s"), 10, "a hang")
    # The hung checker was killed, not left behind.
    from tests.integration.conftest import alive

    last_pid = int(pids.read_text().split()[-1])
    wait_until(
        lambda: not alive(last_pid) or int(pids.read_text().split()[-1]) != last_pid, 10, "kill"
    )
    mode.write_text("0")
    wait_until(_checked(d, "app", ok=True), 10, "recovery")
    assert all(not alive(int(p)) for p in pids.read_text().split()[:-1])


def test_tcp_check_that_hangs_fails_at_its_timeout(make_daemon):
    """A connect that never completes (a full accept queue drops the SYN) fails at the timeout."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        # Fill the accept queue: further SYNs to this port are dropped, so connects hang.
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        d = make_daemon(f"""
            [programs.app]
            command = ["/bin/sleep", "3600"]
            check = {{ url = "tcp://127.0.0.1:{port}", interval = "100ms", timeout = "300ms", failures = 1000 }}
        """)
        h = wait_until(_checked(d, "app", ok=False), 10, "a hanging connect to fail")
        assert h["last"] == "no answer within 0.3s"
        assert d.program("app")["state"] == "running"
    finally:
        for c in fillers:
            c.close()
        listener.close()


def test_http_body_match_reads_through_chunks(make_daemon, tmp_path):
    """A chunked answer whose expected text spans two chunks passes the body check."""
    port = free_port()
    mode = tmp_path / "mode"
    mode.write_text("chunked")
    d = make_daemon(f"""
        [programs.web]
        command = {HTTP_APP[:-1]}, "{mode}", "{port}"]
        check = {{ url = "http://127.0.0.1:{port}/health", body = "good", interval = "100ms", timeout = "1s", failures = 1000 }}
    """)
    h = wait_until(_checked(d, "web", ok=True), 10, "a passing chunked check")
    assert h["last"] == "HTTP 200"
