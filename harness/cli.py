"""The `harness` command: the only @hydra.main entry point."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness import display
from harness.errors import HarnessError
from harness.results import write_json

ROOT = Path(__file__).resolve().parent.parent


def _task_label(task: str, task_dir: str | None = None) -> str:
    return Path(str(task_dir)).name if task_dir else str(task)


def _register_resolvers() -> None:
    OmegaConf.register_new_resolver("task_label", _task_label, replace=True)
    OmegaConf.register_new_resolver("harness_root", lambda: str(ROOT), replace=True)


# At import, not in main(): the workers of the joblib and submitit launchers import this module to unpickle `run`
# and resolve the job's results folder before calling it.
_register_resolvers()
# conf/hydra/launcher/joblib.yaml and submitit_local.yaml deliberately carry the plugins' own names, so Hydra
# validates them against the plugins' schemas (and warns that it does); that check is what we want.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")


class JobFailed(Exception):
    """A cell of a multirun failed: raised (not sys.exit) so that the launcher runs the other cells."""


def _multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path=str(ROOT / "conf"), config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> None:
    from harness import sweep
    from harness.runner import Runner  # after Hydra has parsed the command line: `--help` stays fast

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _multirun()
    if multirun and sweep.finished_cell(run_dir, OmegaConf.to_container(cfg, resolve=True)):
        display.status(f"{run_dir}: finished with this configuration; skipped (delete the folder to redo it)")
        return
    if multirun:
        (run_dir / sweep.JOB_ERROR).unlink(missing_ok=True)
    try:
        comparison = Runner(cfg, run_dir).run()
    except HarnessError as e:
        display.error(str(e))
        if multirun:  # listed by `harness sweep` as a failed cell
            write_json(run_dir / sweep.JOB_ERROR, {"error": str(e)})
            raise JobFailed(str(e)) from None
        sys.exit(2)
    display.console.print(display.comparison_table(comparison))
    panel = display.verdict_panel(comparison)
    if panel:
        display.console.print(panel)
    report = run_dir / "report.html"
    display.console.print(f"results: {run_dir}" + (f"\nreport:  {report}" if report.exists() else ""))
    if any("error" in r for r in comparison["strategies"].values()):
        if multirun:
            raise JobFailed(f"{run_dir}: an arm failed (see its error.json)")
        sys.exit(1)


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness report", description="Re-make the decision and the reports of a "
                                     "results folder from its JSON (no model is loaded).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--cost", help="a cost model: a name in conf/cost/ or a YAML file (default: the run's)")
    parser.add_argument("--volume", type=float, help="requests per month (overrides the cost model's)")
    parser.add_argument("--tolerance", type=float, help="accepted difference on the primary metric")
    args = parser.parse_args(argv)
    from harness import report, rundata
    from harness.results import read_json

    run_json = args.run_dir / "run.json"
    config = read_json(run_json).get("config", {}) if run_json.is_file() else {}
    cost = config.get("cost")
    if args.cost:
        path = Path(args.cost) if args.cost.endswith((".yaml", ".yml")) else ROOT / "conf" / "cost" / f"{args.cost}.yaml"
        if not path.is_file():
            raise HarnessError(f"{path}: cost model not found")
        cost = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    if args.volume is not None:
        cost = {**(cost or {}), "volume_per_month": args.volume}
    decision = dict(config.get("decision") or {})
    if args.tolerance is not None:
        decision["tolerance"] = args.tolerance
    comparison = rundata.decide_run(args.run_dir, cost, decision)
    paths = report.write_reports(args.run_dir)
    display.console.print(display.comparison_table(comparison))
    panel = display.verdict_panel(comparison)
    if panel:
        display.console.print(panel)
    display.console.print(f"report: {paths['html']}\n        {paths['md']}")
    return 0


def _compare(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness compare", description="What changed between two runs: code, "
                                     "model, data, settings, each arm's primary metric (paired) and the verdict.")
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--json", type=Path, help="also write the comparison to this file")
    args = parser.parse_args(argv)
    from harness.compare import compare_runs
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
    from harness.curve import write_curve

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
    from harness import sweep_report

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
    display.console.print(f"decision: {verdict['choice']} (fine-tuning justified: {verdict['fine_tuning_justified']})"
                          f"; review by {rec['review_by']}")
    display.console.print(f"decision record: {args.run_dir / 'decision_record.md'}")
    return 0


SUBCOMMANDS = {"report": _report, "compare": _compare, "curve": _curve, "sweep": _sweep, "record": _record}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:  # Hydra overrides are key=value, never a bare word
        try:
            sys.exit(SUBCOMMANDS[sys.argv[1]](sys.argv[2:]))
        except HarnessError as e:
            display.error(str(e))
            sys.exit(2)
    run()


if __name__ == "__main__":  # `python -m harness.cli`: run the importable module's main, as the `harness` script
    # does, so that launcher workers unpickle `harness.cli.run` by reference (and import this module) rather than
    # a copy of __main__'s function
    from harness.cli import main as _main

    _main()
