"""`reload` applies the config difference and touches nothing else."""

from __future__ import annotations

import signal

from tests.integration.conftest import alive, wait_until

BASE = """
[programs.same]
command = ["/bin/sleep", "3600"]
[programs.changed]
command = ["/bin/sleep", "3600"]
[programs.removed]
command = ["/bin/sleep", "3600"]
"""


def _rewrite(d, new_programs: str) -> None:
    head = d.config.read_text().split("[programs.", 1)[0]
    d.config.write_text(head + new_programs)


def test_reload_touches_only_what_changed(make_daemon):
    """Added starts, removed stops, changed restarts; the unchanged program keeps its pid."""
    d = make_daemon(BASE)
    before = {n: p["pid"] for n, p in d.status().items()}
    _rewrite(
        d,
        """
[programs.same]
command = ["/bin/sleep", "3600"]
[programs.changed]
command = ["/bin/sleep", "3601"]
[programs.added]
command = ["/bin/sleep", "3600"]
""",
    )
    res = d.cli("reload")
    assert (
        "added: added" in res.stdout
        and "removed: removed" in res.stdout
        and "changed: changed" in res.stdout
    )
    after = d.status()
    assert list(after) == ["same", "changed", "added"]
    assert after["same"]["pid"] == before["same"]
    assert after["changed"]["pid"] not in (None, before["changed"])
    assert after["added"]["state"] == "running"
    assert not alive(before["removed"])


def test_reload_with_a_broken_config_changes_nothing(make_daemon):
    """A config error on reload is reported (exit 2) and every program keeps running."""
    d = make_daemon(BASE)
    before = {n: p["pid"] for n, p in d.status().items()}
    d.config.write_text(d.config.read_text() + "\n[programs.bad]\ncommand = 5\n")
    res = d.cli("reload", check=False)
    assert res.returncode == 2
    assert "programs.bad.command" in res.stderr and res.stderr.count("\n") == 1
    assert {n: p["pid"] for n, p in d.status().items()} == before


def test_sighup_reloads(make_daemon):
    """SIGHUP to the daemon is the same as `heartline reload`."""
    d = make_daemon(BASE)
    _rewrite(d, BASE + '[programs.added]\ncommand = ["/bin/sleep", "3600"]\n')
    d.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: d.status().get("added", {}).get("state") == "running", 10, "added program")
