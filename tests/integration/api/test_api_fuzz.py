"""Fuzz the control API from its OpenAPI document: nothing a client sends crashes the daemon.

Schemathesis speaks HTTP over TCP; a small loopback relay forwards each of its connections to
the daemon's unix socket, so the daemon under test is exactly the production one.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import uuid
from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from tests.integration.conftest import Daemon

from heartline.api import openapi_spec

schema = schemathesis.openapi.from_dict(openapi_spec())


class Relay:
    """127.0.0.1:PORT -> unix socket, one pair of pump threads per connection."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.stopping = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with client, socket.socket(socket.AF_UNIX) as upstream:
            upstream.connect(self.target)
            back = threading.Thread(target=self._pump, args=(upstream, client))
            back.start()
            self._pump(client, upstream)
            back.join(60)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.stopping = True
        self.server.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("fuzz")
    text = f"""
[daemon]
run_dir = "{root / "run"}"
log_dir = "logs"
[programs.web]
command = ["/bin/sleep", "3600"]
[programs.worker]
command = ["/bin/sleep", "3600"]
numprocs = 2
"""
    d = Daemon(root, text, uuid.uuid4().hex, root / "run")
    d.start()
    relay = Relay(d.socket)
    try:
        yield f"http://127.0.0.1:{relay.port}"
        # The daemon survived everything and still answers.
        assert d.proc is not None and d.proc.poll() is None
        assert set(d.status()) == {"web", "worker:0", "worker:1"}
    finally:
        relay.close()
        d.cleanup()


@schema.exclude(operation_id="shutdown").parametrize()
@hypothesis.settings(
    max_examples=40, deadline=None, suppress_health_check=list(hypothesis.HealthCheck)
)
def test_api_conforms_to_its_openapi_document(case, api):
    """Every answer to generated requests has a documented status, content type and schema."""
    if case.operation.path == "/v1/logs/{name}" and isinstance(case.query, dict):
        case.query["follow"] = False  # a followed log never ends; it is tested on its own
    case.call_and_validate(base_url=api, timeout=30)
