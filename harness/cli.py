"""The `harness` command: the only @hydra.main entry point."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harness import display
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parent.parent


def _task_label(task: str, task_dir: str | None = None) -> str:
    return Path(str(task_dir)).name if task_dir else str(task)


@hydra.main(config_path=str(ROOT / "conf"), config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> None:
    from harness.runner import Runner  # after Hydra has parsed the command line: `--help` stays fast

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        comparison = Runner(cfg, run_dir).run()
    except HarnessError as e:
        display.error(str(e))
        sys.exit(2)
    display.console.print(display.comparison_table(comparison))
    panel = display.verdict_panel(comparison)
    if panel:
        display.console.print(panel)
    report = run_dir / "report.html"
    display.console.print(f"results: {run_dir}" + (f"\nreport:  {report}" if report.exists() else ""))
    if any("error" in r for r in comparison["strategies"].values()):
        sys.exit(1)


def _report(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness report", description="Re-make the decision and the reports of a "
                                     "results folder from its JSON (no model is loaded).")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--cost", help="a cost model: a name in conf/cost/ or a YAML file (default: the run's)")
    parser.add_argument("--volume", type=float, help="requests per month (overrides the cost model's)")
    parser.add_argument("--tolerance", type=float, help="accepted difference on the primary metric")
    parser.add_argument("--out", type=Path, help="write the new decision and report into this new folder (the JSON "
                        "they need is copied there) and leave RUN_DIR as it is")
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


SUBCOMMANDS = {"report": _report, "compare": _compare, "curve": _curve}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:  # Hydra overrides are key=value, never a bare word
        try:
            sys.exit(SUBCOMMANDS[sys.argv[1]](sys.argv[2:]))
        except HarnessError as e:
            display.error(str(e))
            sys.exit(2)
    OmegaConf.register_new_resolver("task_label", _task_label, replace=True)
    OmegaConf.register_new_resolver("harness_root", lambda: str(ROOT), replace=True)
    run()


if __name__ == "__main__":
    main()
