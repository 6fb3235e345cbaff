"""The restart policy: pure decisions over an exit, a history and a virtual clock."""

from __future__ import annotations

import dataclasses
import signal
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartline.config import BackoffSpec, CrashLoopSpec, ProgramSpec
from heartline.supervise import Decision, ExitInfo, History, backoff_delay, decide

BASE = ProgramSpec(
    name="web",
    command=("/bin/web",),
    backoff=BackoffSpec(initial=1.0, max=30.0, factor=2.0, jitter=0.0, reset_after=10.0),
    crash_loop=CrashLoopSpec(max_starts=5, window=60.0, cooldown=300.0),
)
FAIL = ExitInfo("exit", code=1)
OK = ExitInfo("exit", code=0)


def spec(**changes: object) -> ProgramSpec:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


def backoff(**changes: float) -> ProgramSpec:
    return spec(backoff=dataclasses.replace(BASE.backoff, **changes))


def crash_loop(**changes: object) -> ProgramSpec:
    return spec(crash_loop=dataclasses.replace(BASE.crash_loop, **changes))  # type: ignore[arg-type]


def run_decide(
    s: ProgramSpec,
    info: ExitInfo = FAIL,
    *,
    uptime: float = 0.0,
    history: History | None = None,
    now: float = 1000.0,
    rnd: float = 0.5,
    restarts_left: int | None = None,
) -> Decision:
    return decide(
        s,
        info,
        uptime=uptime,
        history=history if history is not None else History(),
        now=now,
        rng=lambda: rnd,
        restarts_left=restarts_left,
    )


# --- backoff_delay ---------------------------------------------------------------------------


@pytest.mark.parametrize("consecutive", [-1, 0, 1])
def test_first_restart_is_immediate(consecutive: int) -> None:
    """The first failure after a stable run restarts at once, whatever the random draw."""
    for rnd in (0.0, 0.5, 0.999):
        assert backoff_delay(backoff(jitter=0.5), consecutive, rnd) == 0.0


@pytest.mark.parametrize(
    ("consecutive", "delay"), [(2, 1.0), (3, 2.0), (4, 4.0), (5, 8.0), (6, 16.0), (7, 30.0)]
)
def test_delay_grows_by_factor_up_to_max(consecutive: int, delay: float) -> None:
    """Failure n (n >= 2) waits initial * factor**(n-2), capped at max."""
    assert backoff_delay(BASE, consecutive, 0.5) == delay


def test_delay_stays_at_max_for_long_runs_of_failures() -> None:
    """Thousands of failures in a row wait max, without overflow."""
    for n in (8, 65, 66, 1000, 10**9):
        assert backoff_delay(BASE, n, 0.5) == 30.0


def test_factor_one_keeps_the_initial_delay() -> None:
    """factor = 1 makes every back-off the initial delay."""
    s = backoff(factor=1.0, initial=0.25)
    assert [backoff_delay(s, n, 0.5) for n in range(2, 8)] == [0.25] * 6


@pytest.mark.parametrize(
    ("rnd", "delay"), [(0.0, 3.0), (0.5, 4.0), (0.999, 4.0 * (1 + 0.25 * 0.998))]
)
def test_jitter_spreads_the_delay(rnd: float, delay: float) -> None:
    """rnd 0 gives base*(1-jitter), 0.5 gives base, near 1 gives nearly base*(1+jitter)."""
    s = backoff(jitter=0.25)
    assert backoff_delay(s, 4, rnd) == pytest.approx(delay)


@pytest.mark.parametrize("rnd", [0.0, 0.5, 0.999])
def test_jitter_never_exceeds_max(rnd: float) -> None:
    """At the cap, jitter only ever shortens the delay: it never goes above max."""
    s = backoff(jitter=1.0)
    d = backoff_delay(s, 50, rnd)
    assert 0.0 <= d <= 30.0
    if rnd == 0.0:
        assert d == 0.0


@pytest.mark.parametrize("consecutive", [0, 1, 2, 5, 100])
def test_zero_initial_means_no_backoff(consecutive: int) -> None:
    """initial = 0 disables the back-off: every restart is immediate."""
    s = backoff(initial=0.0, jitter=0.5)
    for rnd in (0.0, 0.5, 0.999):
        assert backoff_delay(s, consecutive, rnd) == 0.0


@settings(max_examples=300, deadline=None)
@given(
    initial=st.floats(min_value=0.001, max_value=100),
    maximum=st.floats(min_value=0, max_value=3600),
    factor=st.floats(min_value=1, max_value=100),
    jitter=st.floats(min_value=0, max_value=1),
    consecutive=st.integers(min_value=2, max_value=10**6),
    rnd=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_delay_within_jitter_band_and_cap(
    initial: float, maximum: float, factor: float, jitter: float, consecutive: int, rnd: float
) -> None:
    """Every delay lies in [base*(1-jitter), base*(1+jitter)] and never above max."""
    s = backoff(initial=initial, max=maximum, factor=factor, jitter=jitter)
    d = backoff_delay(s, consecutive, rnd)
    try:
        base = min(maximum, initial * factor ** (consecutive - 2))
    except OverflowError:
        base = maximum
    assert 0.0 <= d <= maximum
    assert base * (1 - jitter) - 1e-9 <= d <= base * (1 + jitter) + 1e-9


@settings(max_examples=100, deadline=None)
@given(
    factor=st.floats(min_value=1, max_value=10),
    ns=st.lists(st.integers(min_value=0, max_value=200), min_size=2, max_size=10),
)
def test_delay_without_jitter_never_shrinks_as_failures_add_up(
    factor: float, ns: list[int]
) -> None:
    """With jitter 0, more failures in a row never mean a shorter wait."""
    s = backoff(factor=factor, jitter=0.0)
    delays = [backoff_delay(s, n, 0.5) for n in sorted(ns)]
    assert delays == sorted(delays)


def test_largest_allowed_factor_does_not_overflow() -> None:
    """factor = 1e6 (the loader's maximum) still gives max after many failures."""
    s = backoff(factor=1e6)
    assert backoff_delay(s, 54, 0.5) == 30.0


# --- decide ----------------------------------------------------------------------------------


@pytest.mark.parametrize("restart", ["always", "on-failure", "never"])
def test_prevent_restart_exit_code_stays_down(restart: str) -> None:
    """An exit code listed in prevent_restart_exit_codes stays down under every policy."""
    s = spec(restart=restart, prevent_restart_exit_codes=frozenset({78}))
    h = History(consecutive=3)
    d = run_decide(s, ExitInfo("exit", code=78), history=h)
    assert d == Decision("exit", None, "exit code 78 prevents restart")
    assert h.consecutive == 3


def test_prevent_restart_applies_to_exit_codes_only() -> None:
    """A signal with the same number as a prevent code still restarts."""
    s = spec(prevent_restart_exit_codes=frozenset({9}))
    d = run_decide(s, ExitInfo("signal", signal=9))
    assert d.action == "restart"


@pytest.mark.parametrize("info", [FAIL, OK, ExitInfo("signal", signal=9)])
def test_restart_never_stays_down(info: ExitInfo) -> None:
    """restart = never stays down after success, failure and signal alike."""
    assert run_decide(spec(restart="never"), info) == Decision("exit", None, "restart = never")


def test_on_failure_success_stays_down() -> None:
    """restart = on-failure leaves a successful exit down."""
    d = run_decide(spec(restart="on-failure"), OK)
    assert d == Decision("exit", None, "exited successfully")


def test_on_failure_custom_success_codes() -> None:
    """success_exit_codes decides what counts as success; 0 is not special once replaced."""
    s = spec(restart="on-failure", success_exit_codes=frozenset({3}))
    assert run_decide(s, ExitInfo("exit", code=3)).action == "exit"
    assert run_decide(s, OK).action == "restart"


@pytest.mark.parametrize(
    "info",
    [
        FAIL,
        ExitInfo("exit", code=255),
        ExitInfo("signal", signal=int(signal.SIGSEGV)),
        ExitInfo("spawn-failed", detail="No such file or directory"),
        ExitInfo("unknown"),
    ],
    ids=["exit-1", "exit-255", "sigsegv", "spawn-failed", "unknown"],
)
def test_on_failure_failure_restarts(info: ExitInfo) -> None:
    """Under on-failure, exits, signals, spawn failures and unknown ends all restart."""
    d = run_decide(spec(restart="on-failure"), info)
    assert d.action == "restart"
    assert d.why == "restart policy"


def test_always_restarts_after_success() -> None:
    """restart = always restarts a program that exited 0."""
    d = run_decide(spec(restart="always"), OK, uptime=100.0)
    assert d == Decision("restart", 0.0, "restart policy")


@pytest.mark.parametrize("left", [0, -1])
def test_restart_limit_reached_stays_down(left: int) -> None:
    """restarts_left <= 0 stays down, and the history is not touched."""
    h = History(consecutive=2)
    d = run_decide(BASE, FAIL, history=h, restarts_left=left)
    assert d == Decision("exit", None, "restart limit reached")
    assert h.consecutive == 2


@pytest.mark.parametrize("left", [None, 1, 100])
def test_restarts_left_positive_or_unlimited_restarts(left: int | None) -> None:
    """restarts_left None (unlimited) or positive allows the restart."""
    assert run_decide(BASE, FAIL, restarts_left=left).action == "restart"


def test_quick_failures_back_off_and_a_stable_run_resets() -> None:
    """Quick failures count up and wait longer; a run of reset_after seconds resets to 1."""
    h = History()
    delays = [run_decide(BASE, FAIL, uptime=0.5, history=h).delay for _ in range(5)]
    assert delays == [0.0, 1.0, 2.0, 4.0, 8.0]
    assert h.consecutive == 5
    d = run_decide(BASE, FAIL, uptime=10.0, history=h)
    assert h.consecutive == 1
    assert d.delay == 0.0
    assert run_decide(BASE, FAIL, uptime=9.999, history=h).delay == 1.0
    assert h.consecutive == 2


def test_rng_draw_spreads_the_decided_delay() -> None:
    """decide passes its random draw to the back-off jitter (4th failure: base 4s)."""
    s = backoff(jitter=0.5)
    low = run_decide(s, FAIL, history=History(consecutive=3), rnd=0.0)
    high = run_decide(s, FAIL, history=History(consecutive=3), rnd=0.999)
    assert low.delay == pytest.approx(2.0)
    assert high.delay == pytest.approx(4.0 * (1 + 0.5 * 0.998))


def test_crash_loop_goes_fatal_with_cooldown() -> None:
    """max_starts starts inside the window make the next exit fatal, retried after cooldown."""
    h = History(starts=deque([950.0, 960.0, 970.0, 980.0, 990.0]))
    d = run_decide(BASE, FAIL, history=h, now=1000.0)
    assert d == Decision("fatal", 300.0, "crash loop: 5 starts within 60s")


def test_crash_loop_with_cooldown_never_stays_fatal() -> None:
    """cooldown None makes the fatal decision final (delay None)."""
    h = History(starts=deque([990.0] * 5))
    d = run_decide(crash_loop(cooldown=None), FAIL, history=h, now=1000.0)
    assert d.action == "fatal"
    assert d.delay is None


def test_crash_loop_counts_success_under_always() -> None:
    """Under restart = always, quick successful exits also count toward the crash loop."""
    h = History(starts=deque([995.0] * 5))
    assert run_decide(spec(restart="always"), OK, history=h).action == "fatal"


def test_starts_outside_the_window_are_pruned() -> None:
    """Starts at or before now - window are forgotten; the rest still count."""
    h = History(starts=deque([900.0, 940.0, 940.001, 950.0, 960.0, 970.0]))
    d = run_decide(BASE, FAIL, history=h, now=1000.0)
    assert list(h.starts) == [940.001, 950.0, 960.0, 970.0]
    assert d.action == "restart"
    h.record_start(999.0)
    assert run_decide(BASE, FAIL, history=h, now=1000.0).action == "fatal"


def test_spawn_failures_go_fatal_after_a_few_tries_with_the_reason() -> None:
    """An exec that keeps failing is fatal on its third try in a row, even with no crash-loop
    limit, and the decision says why; a successful spawn in between starts the count again."""
    failed = ExitInfo("spawn-failed", detail="pyhton3: No such file or directory")
    h = History()
    s = crash_loop(max_starts=0)
    assert [run_decide(s, failed, history=h).action for _ in range(2)] == ["restart"] * 2
    d = run_decide(s, failed, history=h)
    assert d == Decision(
        "fatal", 300.0, "cannot start (3 tries): pyhton3: No such file or directory"
    )
    h.spawn_failures = 0  # what a successful spawn does
    assert run_decide(s, failed, history=h).action == "restart"


def test_ordinary_failures_do_not_count_as_spawn_failures() -> None:
    """Crashes after a successful exec leave the spawn failure count alone."""
    h = History()
    for _ in range(5):
        run_decide(crash_loop(max_starts=0), FAIL, history=h)
    assert h.spawn_failures == 0


def test_max_starts_zero_disables_the_crash_loop_limit() -> None:
    """max_starts = 0 never goes fatal, however many starts there were."""
    h = History(starts=deque([999.0] * 1000))
    d = run_decide(crash_loop(max_starts=0), FAIL, history=h, now=1000.0)
    assert d.action == "restart"


def test_history_reset_forgets_failures_and_starts() -> None:
    """History.reset clears the failure count and the start times."""
    h = History(consecutive=7, starts=deque([1.0, 2.0]))
    h.reset()
    assert h.consecutive == 0
    assert not h.starts


@settings(max_examples=200, deadline=None)
@given(
    max_starts=st.integers(min_value=1, max_value=8),
    window=st.floats(min_value=1, max_value=120),
    uptimes=st.lists(st.floats(min_value=0, max_value=30), min_size=1, max_size=40),
    rnds=st.lists(st.floats(min_value=0, max_value=1, exclude_max=True), min_size=1),
)
def test_simulated_supervisor_never_exceeds_max_starts_per_window(
    max_starts: int, window: float, uptimes: list[float], rnds: list[float]
) -> None:
    """Driving decide like the supervisor does, no window ever holds more than max_starts
    starts, and every restart delay stays within [0, backoff.max]."""
    s = dataclasses.replace(
        BASE,
        restart="always",
        backoff=dataclasses.replace(BASE.backoff, jitter=0.3),
        crash_loop=CrashLoopSpec(max_starts=max_starts, window=window, cooldown=None),
    )
    h = History()
    now = 0.0
    starts = [now]
    h.record_start(now)
    draws = iter(rnds * (len(uptimes) // len(rnds) + 1))
    for up in uptimes:
        now += up
        d = decide(s, FAIL, uptime=up, history=h, now=now, rng=lambda: next(draws))
        if d.action != "restart":
            assert d.action == "fatal"
            break
        assert d.delay is not None
        assert 0.0 <= d.delay <= s.backoff.max
        now += d.delay
        starts.append(now)
        h.record_start(now)
        in_window = [t for t in starts if now - window < t <= now]
        assert len(in_window) <= max_starts


# --- ExitInfo --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "text"),
    [
        (ExitInfo("exit", code=0), "exit 0"),
        (ExitInfo("exit", code=3), "exit 3"),
        (ExitInfo("signal", signal=9), "killed by SIGKILL"),
        (ExitInfo("signal", signal=int(signal.SIGTERM)), "killed by SIGTERM"),
        (ExitInfo("signal", signal=200), "killed by signal 200"),
        (ExitInfo("spawn-failed", detail="No such file or directory"),
         "spawn-failed: No such file or directory"),
        (ExitInfo("spawn-failed"), "spawn-failed"),
        (ExitInfo("unknown"), "unknown"),
        (ExitInfo("unknown", detail="adopted after a daemon restart"),
         "unknown: adopted after a daemon restart"),
    ],
)  # fmt: skip
def test_exit_info_describe(info: ExitInfo, text: str) -> None:
    """describe() gives the short text the status table shows."""
    assert info.describe() == text


def test_exit_info_to_json_carries_every_field_and_the_text() -> None:
    """to_json() has reason, code, signal, detail and the described text."""
    info = ExitInfo("signal", signal=15)
    assert info.to_json() == {
        "reason": "signal",
        "code": None,
        "signal": 15,
        "detail": "",
        "text": "killed by SIGTERM",
    }
