"""Lab hosts for the lab's own tests: real namespaces, links, sshd and daemons.

Every test here is skipped (with the reason) where lab hosts cannot be made: not root, or
ip, unshare, nsenter or sshd missing. Teardown checks that a lab leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.lab.lab_helpers import assert_gone, heartline

from heartline.testing import LabHosts, lab_hosts, lab_unavailable

WHY = lab_unavailable()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip every lab test, with the reason, where lab hosts cannot be made."""
    if WHY is None:
        return
    for item in items:
        if "/integration/lab/" in str(item.path):
            item.add_marker(pytest.mark.skip(reason=WHY))


@pytest.fixture
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new, short directory for a lab (the hosts' control sockets need short paths)."""
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="hl-lab-", dir="/tmp")) / "lab"
    yield path
    # A test that failed half-way: leave nothing behind.
    if (path / "lab.json").exists():
        heartline("lab", "down", "--dir", str(path))
    import shutil

    shutil.rmtree(path.parent, ignore_errors=True)


PROGRAMS = """
[programs.ticker]
command = ["/bin/sh", "-c", "while :; do sleep 1; done"]
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabHosts]:
    """Three lab hosts shared by a module's tests, each daemon running a `ticker` program;
    tests that crash or cut a host bring it back before they end."""
    programs = tmp_path_factory.mktemp("lab-programs") / "programs.toml"
    programs.write_text(PROGRAMS)
    with lab_hosts(3, programs=str(programs)) as lab:
        yield lab
    assert_gone(lab.state.id, Path(lab.dir))
