"""Lab hosts for tests (heartline's and yours): a cluster of namespaces on this machine that
always goes away with the test, whatever the test did to it.

    from heartline.testing import lab_hosts, lab_unavailable

    @pytest.mark.skipif(lab_unavailable() is not None, reason=lab_unavailable() or "")
    def test_failover():
        with lab_hosts(3) as lab:
            lab.crash("lab2")
            assert lab.ssh("lab1", ["hostname"]).stdout == "lab1\\n"
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator, Sequence

from heartline.cluster import Lab, lab_unavailable

__all__ = ["LabHosts", "lab_hosts", "lab_unavailable"]


class LabHosts(Lab):
    """A :class:`heartline.cluster.Lab` with a test's conveniences: run a command inside a
    host or over ssh and get its output back."""

    def run(
        self, host: str, command: Sequence[str], *, timeout: float = 30.0, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """``command`` inside ``host`` (its namespaces, as ``heartline lab exec``)."""
        argv, env = self.exec_argv(host, list(command))
        return subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, check=check,
        )  # fmt: skip

    def ssh_argv(self, host: str, command: Sequence[str], *options: str) -> list[str]:
        """The ``ssh`` argv that runs ``command`` (one shell word each) on ``host`` with the
        lab's ssh_config (its key, its known_hosts, BatchMode)."""
        import shlex

        return ["ssh", "-F", self.ssh_config, *options, host, shlex.join(command)]

    def ssh(
        self, host: str, command: Sequence[str], *options: str, timeout: float = 30.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.ssh_argv(host, command, *options), stdin=subprocess.DEVNULL,
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip


@contextlib.contextmanager
def lab_hosts(
    n: int = 3,
    lab_dir: str | None = None,
    *,
    programs: str | None = None,
    timeout: float = 30.0,
    backend: str = "lockd",
) -> Iterator[LabHosts]:
    """Bring ``n`` lab hosts up (in ``lab_dir``, by default a new directory under /tmp), with
    ``backend`` (``lockd`` or ``etcd``) as the cluster's backend, and take them down when the
    block ends, however it ends."""
    made = lab_dir is None
    where = tempfile.mkdtemp(prefix="hl-lab-", dir="/tmp") if lab_dir is None else lab_dir
    try:
        lab = LabHosts.up(n, where, programs=programs, timeout=timeout, backend=backend)
        try:
            yield lab
        finally:
            lab.down()
    finally:
        if made:
            with contextlib.suppress(OSError):
                os.rmdir(where)
