"""Fixtures for the lock backends: real lock servers on loopback, always stopped afterwards."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from heartline.testing import EtcdServer


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[EtcdServer]:
    """A started single-member etcd on free loopback ports, with its data in ``tmp_path``."""
    server = EtcdServer(tmp_path / "etcd")
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def etcd_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """A started etcd serving HTTPS only and asking each client for a certificate its CA
    signed (--client-cert-auth); ``.credentials`` are the CA and a client's certificate."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed (apt-get install openssl)")
    server = EtcdServer(tmp_path_factory.mktemp("etcd-tls") / "etcd", tls=True)
    try:
        server.start()
        yield server
    finally:
        server.kill()
