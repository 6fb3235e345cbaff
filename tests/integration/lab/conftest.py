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

[programs.here]
command = ["/bin/sh", "here.sh"]
"""
#: Found relative to the programs file's directory, where the hosts' daemons run.
HERE = 'echo "$PWD" > "seen-$(hostname)"; exec sleep 1000\n'


@pytest.fixture(scope="module")
def programs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the shared lab's programs file (and the script it names) are."""
    where = tmp_path_factory.mktemp("lab-programs")
    (where / "programs.toml").write_text(PROGRAMS)
    (where / "here.sh").write_text(HERE)
    return where


@pytest.fixture(scope="module")
def lab(programs_dir: Path) -> Iterator[LabHosts]:
    """Three lab hosts shared by a module's tests, each daemon running the programs `ticker`
    and `here` (a script named by a relative path); tests that crash or cut a host bring it
    back before they end."""
    with lab_hosts(3, programs=str(programs_dir / "programs.toml")) as lab:
        yield lab
    assert_gone(lab.state.id, Path(lab.dir))
