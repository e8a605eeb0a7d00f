"""The `harness` subcommands that read results folders back (report, compare, curve, sweep, record): no model is
loaded and Hydra is not involved; harness.cli dispatches to them by their first word."""

from __future__ import annotations

import argparse
from pathlib import Path

from omegaconf import OmegaConf

from harness.errors import HarnessError
from harness.report import display

ROOT = Path(__file__).resolve().parent.parent  # the checkout, as in harness.cli: conf/cost/ holds the cost models


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness report", description="Re-make the decision and the reports of a "
                                     "results folder from its JSON (no model is loaded).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--cost", help="a cost model: a name in conf/cost/ or a YAML file (default: the run's)")
    parser.add_argument("--volume", type=float, help="requests per month (overrides the cost model's)")
    parser.add_argument("--margin", type=float, help="the smallest difference on the primary metric you care about: "
                        "a cheaper arm qualifies when shown no worse than the best by more than this")
    parser.add_argument("--tolerance", type=float, help=argparse.SUPPRESS)  # the earlier name of --margin
    parser.add_argument("--error-cost", type=float, help="cost of one wrong answer (currency per wrong example)")
    parser.add_argument("--review-cost", type=float, help="cost of reviewing one output that fails a task rule")
    parser.add_argument("--metric", help="decide on this metric instead (one every arm recorded, e.g. fact_recall "
                        "where the task's primary metric is token_f1); the task's own stays recorded beside it")
    parser.add_argument("--out", type=Path, help="write the new decision and report into this new folder (the JSON "
                        "they need is copied there) and leave RUN_DIR as it is")
    args = parser.parse_args(argv)
    from harness import rundata
    from harness.report import render as report
    from harness.results import read_json

    run_json = args.run_dir / "run.json"
    config = read_json(run_json).get("config", {}) if run_json.is_file() else {}
    cost = config.get("cost")
    if args.cost:
        path = Path(args.cost) if args.cost.endswith((".yaml", ".yml")) else ROOT / "conf" / "cost" / f"{args.cost}.yaml"
        if not path.is_file():
            raise HarnessError(f"{path}: cost model not found")
        cost = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    for key, value in (("volume_per_month", args.volume), ("error_cost", args.error_cost),
                       ("review_cost", args.review_cost)):
        if value is not None:
            cost = {**(cost or {}), key: value}
    decision = dict(config.get("decision") or {})
    margin = args.margin if args.margin is not None else args.tolerance
    if margin is not None:
        decision["margin"] = margin
    if args.metric is not None:  # checked before --out copies anything
        rundata.check_primary(args.run_dir, rundata.read_run_file(args.run_dir / "comparison.json"), args.metric)
    target = args.run_dir
    if args.out and args.out.resolve() != args.run_dir.resolve():
        rundata.copy_decision_inputs(args.run_dir, args.out)
        target = args.out
    comparison = rundata.decide_run(target, cost, decision, primary=args.metric)
    paths = report.write_reports(target)
    display.console.print(display.comparison_table(comparison))
    panel = display.verdict_panel(comparison)
    if panel:
        display.console.print(panel)
    if target == args.run_dir:
        display.console.print(f"rewrote {target / 'comparison.json'}, {paths['md'].name} and {paths['html'].name} "
                              f"in {target} (the previous decision there is replaced; --out DIR keeps it)")
    else:
        display.console.print(f"wrote the new decision to {target}: comparison.json, {paths['html'].name}, "
                              f"{paths['md'].name} ({args.run_dir} unchanged)")
    return broken(comparison)


def broken(comparison: dict) -> int:
    """1 (with one line) when an arm failed on every request or no arm can be chosen, else 0."""
    problems = display.run_problems(comparison)
    for line in problems:
        display.error(line)
    return 1 if problems else 0


def _compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness compare", description="What changed between two runs: code, "
                                     "model, data, settings, each arm's primary metric (paired) and the verdict.")
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--json", type=Path, help="also write the comparison to this file")
    args = parser.parse_args(argv)
    from harness.report.compare import compare_runs
    from harness.results import write_json

    diff = compare_runs(args.run_a, args.run_b)
    display.console.print(display.compare_table(diff))
    if args.json:
        write_json(args.json, diff)
    return 0


def _curve(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness curve", description="Learning curve of a sweep over training-set "
                                     "sizes (harness -m … limit.train=16,64,256 results_dir=DIR): each arm's primary "
                                     "metric with its interval per size, and where fine-tuning overtakes the others.")
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    from harness.report.curve import write_curve

    curve = write_curve(args.sweep_dir)
    display.console.print(display.curve_table(curve))
    display.console.print(f"learning curve: {args.sweep_dir / 'learning_curve.md'}")
    return 0


def _sweep(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness sweep", description="One report of a multirun (harness -m … "
                                     "results_dir=DIR): a row per job and arm with the swept overrides, the primary "
                                     "metric with its interval, cost and verdict; failed and unfinished jobs listed; "
                                     "the learning curve when limit.train was swept.")
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args(argv)
    from harness.report import sweep as sweep_report

    report = sweep_report.write(args.sweep_dir)
    display.console.print(sweep_report.table(report))
    display.console.print(f"sweep report: {args.sweep_dir / 'sweep.html'}\n              {args.sweep_dir / 'sweep.md'}")
    return 0


def _record(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness record", description="Write the decision record of a finished "
                                     "run (decision_record.md and .json): task, metric, data hashes, personal-data "
                                     "scan, arms and models, results, forgetting, verdict, slices, review date.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--review-after-months", type=int,
                        help="months until the decision is reviewed (default: decision.review_after_months)")
    args = parser.parse_args(argv)
    from harness import record

    rec = record.write(args.run_dir, args.review_after_months)
    verdict = rec["verdict"]
    justified = {True: "yes", False: "no"}.get(verdict["fine_tuning_justified"], "cannot tell from this run")
    display.console.print(f"decision: {verdict['choice']} (fine-tuning justified: {justified}); review by "
                          f"{rec['review_by']}")
    display.console.print(f"decision record: {args.run_dir / 'decision_record.md'}")
    return 0


SUBCOMMANDS = {"report": _report, "compare": _compare, "curve": _curve, "sweep": _sweep, "record": _record}
