"""The `harness` command: the only @hydra.main entry point."""

from __future__ import annotations

import argparse
import errno
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness import runlock
from harness.report import display
from harness.errors import ConfigError, HarnessError
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
        with runlock.hold(run_dir):
            comparison = Runner(cfg, run_dir).run()
    except HarnessError as e:
        display.error(str(e))
        if multirun:  # listed by `harness sweep` as a failed cell
            write_json(run_dir / sweep.JOB_ERROR, {"error": str(e)})
            raise JobFailed(str(e)) from None
        if not isinstance(e, runlock.FolderBusy):  # the holder's folder is not this run's to clean up
            _remove_if_unused(run_dir)
        sys.exit(2)
    except OSError as e:
        display.error(os_error_line(e))
        sys.exit(1 if e.errno in NO_SPACE else 2)
    from harness.records import Comparison

    comparison = Comparison.from_json(comparison)
    display.console.print(display.comparison_table(comparison))
    panel = display.verdict_panel(comparison)
    if panel:
        display.console.print(panel)
    report = run_dir / "report.html"
    display.console.print(f"results: {run_dir}" + (f"\nreport:  {report}" if report.exists() else ""))
    if _broken(comparison) or any(r.failed for r in comparison.arms.values()):
        if multirun:
            raise JobFailed(f"{run_dir}: an arm failed or the run is broken (see error.json / the verdict)")
        sys.exit(1)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota, file size limit: exit 1, not bad input


def os_error_line(e: OSError) -> str:
    """One line for a file-system failure (disk full, read-only or missing folder) during a run or a report."""
    where = f"{e.filename}: " if e.filename else ""
    if e.errno in NO_SPACE:
        return f"{where}disk full ({e.strerror}); what was written before is kept, and a rerun resumes"
    return f"{where}{e.strerror or e}"


def _remove_if_unused(run_dir: Path) -> None:
    """A refused run leaves no folder behind: Hydra made run_dir (and its .hydra) before the checks ran."""
    try:
        if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", runlock.LOCK, runlock.OWNER}:
            shutil.rmtree(run_dir)
    except OSError:
        pass


def _override_values(override) -> list:
    """The value(s) an override sets, for a sweep each choice."""
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    return [override.value()]


def check_overrides(args: list[str]) -> None:
    """Refuse, before Hydra makes any folder, a task name that is a path, an unknown task or strategy, and a
    results_dir that cannot be written: one line each (ConfigError) instead of Hydra's text or a traceback."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except Exception:  # malformed overrides: Hydra says what is wrong with them
        return
    given = {o.key_or_group: o for o in overrides if not o.is_delete()}
    for o in overrides:
        if o.key_or_group == "strategies" and not o.is_delete():
            known = sorted(p.stem for p in (ROOT / "conf" / "strategies").glob("*.yaml"))
            for value in _override_values(o):
                for name in value if isinstance(value, list) else [value]:
                    if str(name) not in known:
                        raise ConfigError(f"unknown strategy {str(name)!r} (available: {', '.join(known)})",
                                          field="strategies")
    if "task" in given:
        roots = given.get("tasks_root")
        root = Path(str(roots.value())).expanduser() if roots and isinstance(roots.value(), str) else ROOT / "tasks"
        for name in map(str, _override_values(given["task"])):
            if not name.strip() or name in (".", "..") or any(c in name for c in "/\\") or "${" in name:
                raise ConfigError(f"must be the name of a folder in {root}, got {name!r} (a task elsewhere: "
                                  f"task_dir=PATH)", field="task")
            if "task_dir" not in given and "${" not in str(root) and not (root / name / "task.yaml").is_file():
                known = sorted(p.name for p in root.iterdir() if (p / "task.yaml").is_file()) if root.is_dir() else []
                raise ConfigError(f"unknown task {name!r} (available in {root}: {', '.join(known) or 'none'})",
                                  field="task")
    results = given.get("results_dir")
    _check_writable(str(results.value()) if results and isinstance(results.value(), str) else "results/")
    if results and isinstance(results.value(), str) and "${" not in results.value():
        runlock.check_free(Path(results.value()).expanduser())  # a busy folder: refused before Hydra writes there


def _check_writable(results_dir: str) -> None:
    """The fixed part of results_dir (before any ${...}) must be a folder, or be creatable, and writable."""
    fixed = Path(results_dir.split("${")[0] or ".").expanduser()
    probe = fixed
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{probe} is a file, not a folder", field="results_dir")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write in {probe} ({e.strerror or e})", field="results_dir") from None


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
    target = args.run_dir
    if args.out and args.out.resolve() != args.run_dir.resolve():
        rundata.copy_decision_inputs(args.run_dir, args.out)
        target = args.out
    comparison = rundata.decide_run(target, cost, decision)
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
    return _broken(comparison)


def _broken(comparison: dict) -> int:
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


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:  # Hydra overrides are key=value, never a bare word
        try:
            sys.exit(SUBCOMMANDS[sys.argv[1]](sys.argv[2:]))
        except HarnessError as e:
            display.error(str(e))
            sys.exit(2)
        except OSError as e:
            display.error(os_error_line(e))
            sys.exit(1 if e.errno in NO_SPACE else 2)
    try:
        check_overrides(sys.argv[1:])
    except HarnessError as e:
        display.error(str(e))
        sys.exit(2)
    run()


if __name__ == "__main__":  # `python -m harness.cli`: run the importable module's main, as the `harness` script
    # does, so that launcher workers unpickle `harness.cli.run` by reference (and import this module) rather than
    # a copy of __main__'s function
    from harness.cli import main as _main

    _main()
