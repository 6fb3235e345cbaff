"""A report's own-load figure (the daemons' reports are tested for real in
tests/integration/cluster; this is the arithmetic below them)."""

from __future__ import annotations

from heartline.cluster import Reporter, Sample
from heartline.config import ClusterSpec


class Samples:
    """Samples with the runnable counts given, in turn."""

    def __init__(self, *runnable: int) -> None:
        self.left = list(runnable)

    def sample(self) -> Sample:
        return Sample(sampled=0.0, cpus=2, runnable=self.left.pop(0), load=[0.0, 0.0, 0.0],
                      cpu_busy=None, mem_available=1, mem_total=2, psi=None)  # fmt: skip

    def close(self) -> None:
        pass


def test_a_spike_shorter_than_an_interval_is_not_the_host_s_own_load() -> None:
    r = Reporter(ClusterSpec(), name="h")
    r._sampler = Samples(5, 1, 4, 6)  # type: ignore[assignment]
    others = [r.report()["other"] for _ in range(4)]
    assert others == [5, 1, 1, 4]  # the lower of each sample and the one before
