"""`heartline chaos run | validate | list-faults | undo | check | proxy`."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from heartline.errors import ChaosErrored, HeartlineError


def cmd_run(args: argparse.Namespace) -> int:
    from heartline.chaos import OUTCOME_ERRORS, Options, load_experiment, plan, run_experiment

    exp = load_experiment(args.experiment)
    opts = Options(
        dry_run=args.dry_run,
        json=args.json,
        report_dir=args.report,
        allow_host_crash=tuple(args.allow_host_crash),
        seed=args.seed,
        journal_dir=args.journal,
    )
    if args.dry_run:
        for line in plan(exp, opts):
            print(line)
        print("dry run: nothing was changed")
        return 0
    if args.report:
        _check_report_dir(args.report)
    result = asyncio.run(run_experiment(exp, opts))
    if args.report:
        _write_report(args.report, result)
    if args.json:
        print(json.dumps({"event": "result", "result": result}), flush=True)
    else:
        _summary(result)
    outcome = "refused" if result.get("refused") else result["outcome"]
    if outcome != "passed":
        raise OUTCOME_ERRORS[outcome](f"{outcome}: {result['reason']}")
    return 0


def _check_report_dir(path: str) -> None:
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise HeartlineError(f"--report {path}: {e.strerror}") from None
    if not os.access(path, os.W_OK):
        raise HeartlineError(f"--report {path}: not writable")


def _write_report(path: str, result: dict[str, object]) -> None:
    from heartline._util import atomic_write
    from heartline.chaos import render_html

    atomic_write(
        os.path.join(path, "result.json"), json.dumps(result, indent=1).encode(), mode=0o644
    )
    atomic_write(os.path.join(path, "report.html"), render_html(result).encode(), mode=0o644)
    sys.stderr.write(f"heartline: report written to {os.path.join(path, 'report.html')}\n")


def _summary(result: dict[str, object]) -> None:
    summary = result["summary"]
    assert isinstance(summary, dict)
    faults = result["faults"]
    assert isinstance(faults, list)
    rec, det = summary.get("recover"), summary.get("detect")

    def p(d: object) -> str:
        if not isinstance(d, dict):
            return "-"
        return f"p50 {d['p50']:.3f}s  p95 {d['p95']:.3f}s  max {d['max']:.3f}s"

    av = summary.get("availability")
    counts: dict[str, int] = {}
    for f in faults:
        counts[f["outcome"]] = counts.get(f["outcome"], 0) + 1
    print(f"faults: {len(faults)} ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))})")
    print(f"time to detect:  {p(det)}")
    print(f"time to recover: {p(rec)}")
    if isinstance(av, float):
        print(f"availability during the faults: {100 * av:.2f}%")
    print(f"outcome: {result['outcome']}" + (f" ({result['reason']})" if result["reason"] else ""))


def cmd_validate(args: argparse.Namespace) -> int:
    from heartline.chaos import load_experiment

    exp = load_experiment(args.experiment)
    print(
        f"{args.experiment}: ok ({len(exp.targets)} targets, {len(exp.probes)} probes, "
        f"{len(exp.faults)} faults, {exp.run.rounds} rounds)"
    )
    return 0


def cmd_list_faults(args: argparse.Namespace) -> int:
    from heartline.chaos import FAULTS

    if getattr(args, "json", False):
        print(
            json.dumps(
                [
                    {"kind": k, "does": d, "targets": list(t), "undo": u}
                    for k, (d, t, u) in FAULTS.items()
                ],
                indent=1,
            )
        )
        return 0
    for kind, (does, targets, undo) in FAULTS.items():
        print(f"{kind:<13} {does}")
        print(f"{'':<13} hits: {', '.join(targets)}; undo: {undo or 'none (instant)'}")
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    from heartline.chaos import undo_left_behind

    lines, failed = undo_left_behind(args.journal)
    for line in lines:
        print(line)
    if failed:
        raise ChaosErrored(f"{failed} undo(s) failed; the journals are kept, run it again")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from heartline.chaos import check_main

    code: int = check_main(list(args.args))
    return code


def cmd_proxy(args: argparse.Namespace) -> int:
    from heartline.chaos import proxy_main

    return proxy_main(list(args.args))
