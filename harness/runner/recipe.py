"""Sweep one task through the configured strategies, scoring each on the same held-out set; resumable.

The recipe, top to bottom: plan (everything validated, every arm built and checked) → the run's record and the
checks before any arm → each arm → seed replicates → forgetting → comparison → decision → reports. Knows the
Strategy protocol, not the concrete strategies: each is instantiated from its Hydra `_target_`.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from harness import provenance, rundata, tracking
from harness.report import display
from harness.report import render as report
from harness.errors import HarnessError
from harness.records import ArmResult, Comparison, replicate_mean
from harness.results import write_json
from harness.runner import checks
from harness.runner.arm import ArmRun, run_or_record
from harness.runner.plan import Plan, build_plan

CODE_DIR = Path(__file__).resolve().parent.parent.parent


class Runner:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)

    def run(self) -> dict:
        plan = build_plan(self.cfg, self.run_dir)  # refused here, in one line, before anything is written
        plan.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(plan.run_dir / "run.json", run_record(plan))
        checks.warn_about_data(plan.task)
        checks.data_checks(plan)
        judged = checks.judge_agreement(plan)
        results: dict[str, ArmResult] = {}
        with display.progress() as bars:
            for arm in plan.arms.values():
                results[arm.name] = run_or_record(arm, ArmRun(plan, bars))
        results = with_replicates(plan, results)
        checks.forgetting_check(plan, results)
        task = plan.task
        comparison = Comparison(task=task.name, task_type=task.type, primary_metric=task.metric,
                                heldout_n=len(task.heldout), run_dir=str(plan.run_dir), model=plan.model,
                                labels=list(task.labels), fields=list(task.fields), judge=judged or None,
                                arms=results).to_json()
        write_json(plan.run_dir / "comparison.json", comparison)
        try:  # what was measured is on disk already; the decision and report are re-made from it
            comparison = rundata.decide_run(plan.run_dir, cost_config=plan.cost, decision=plan.decision)
            report.write_reports(plan.run_dir)
        except HarnessError as e:
            display.error(f"decision not made: {e}")
        tracking.track(plan.cfg, plan.run_dir)  # optional (tracking=mlflow); a failure is one warning
        return comparison


def run_record(plan: Plan) -> dict:
    """run.json: provenance, the task and its data as loaded, the run's model and its whole config."""
    task, cfg = plan.task, plan.cfg
    per = (cfg.get("limit") or {}).get("per_class")  # a learning curve's x-axis in examples per class
    limits = {"train": len(task.train), "heldout": len(task.heldout), **({"per_class": int(per)} if per else {})}
    return {**provenance.collect(CODE_DIR), "task": task.name, "task_dir": str(task.directory.resolve()),
            "data_hashes": dict(task.data_hashes), "seed": plan.seed, "strategies": plan.names,
            "limits": limits, "model": plan.model, "model_source": plan.model_source,
            "inputs_cut": {"limit_chars": task.max_input_chars, "ids": list(task.cut_inputs)},
            "ids_in_train_and_heldout": list(task.shared_ids),
            "config": OmegaConf.to_container(cfg, resolve=True)}


def with_replicates(plan: Plan, results: dict[str, ArmResult]) -> dict[str, ArmResult]:
    """Each seed replicate marked as such, and each replicated arm's mean over its replicates."""
    for name, members in plan.replicates.items():
        for member, member_seed in members.items():
            results[member] = results[member].replicate(name, member_seed)
        results[name] = replicate_mean(name, [results[m] for m in members])
    return results
