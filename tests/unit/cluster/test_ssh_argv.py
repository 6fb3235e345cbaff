"""The ssh command line heartline builds (the real ssh runs in tests/integration/cluster)."""

from __future__ import annotations

import pytest

from heartline.cluster._ssh import Ssh


def test_sharing_and_strictness_are_added_after_the_user_s_options() -> None:
    argv = Ssh(config="/etc/x", options=["ConnectTimeout=5"]).base("h1")
    assert argv[:5] == ["ssh", "-F", "/etc/x", "-o", "ConnectTimeout=5"]
    assert "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    assert "ControlMaster=auto" in argv
    assert argv[-2:] == ["--", "h1"]


@pytest.mark.parametrize("opt", ["ControlMaster=no", "controlmaster no", "ControlPath=none"])
def test_turning_sharing_off_leaves_out_every_sharing_option(opt: str) -> None:
    """ControlMaster=no alone would still use a master another command opened."""
    argv = Ssh(options=[opt]).base("h1")
    ours = [a for a in argv if a.startswith(("ControlPath=", "ControlPersist=")) and a != opt]
    assert ours == []
    assert "ControlMaster=auto" not in argv
