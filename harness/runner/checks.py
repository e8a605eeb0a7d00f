"""The run's checks around the arms: warnings about the data as loaded, data checks before any training
(data_checks.json), the LLM judge (its agreement with hand marks, its verdict per output) and the
forgetting check after the arms (control.json)."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf
from rich.markup import escape

from harness import datachecks, forgetting, judge
from harness.report import display
from harness.records import ArmResult
from harness.results import read_json, write_json
from harness.task import Task
from harness.runner.plan import Plan, fingerprint, positive_or_none


def warn_about_data(task: Task) -> None:
    """Inputs cut to limit.input_chars, ids in both splits, held-out inputs also in train (allowed)."""
    if task.cut_inputs:
        display.status(f"[yellow]warning:[/yellow] {len(task.cut_inputs)} input(s) longer than "
                       f"{task.max_input_chars:,} characters (limit.input_chars) were cut in the middle; ids in "
                       f"run.json")
    if task.shared_ids:
        display.status(f"[yellow]warning:[/yellow] {len(task.shared_ids)} id(s) appear in both train and held-out "
                       f"(first: {escape(repr(task.shared_ids[0]))}), usually a data bug; ids in run.json")
    if task.overlap:
        display.status(f"[yellow]warning:[/yellow] {len(task.overlap)} held-out inputs also appear in train "
                       f"(allowed by allow_overlap)")


def data_checks(plan: Plan) -> dict:
    """Overlap, label balance and personal data, before any training (data_checks.json)."""
    task, path = plan.task, plan.run_dir / "data_checks.json"
    checks = plan.cfg.get("checks") or {}
    key = fingerprint(dict(task.data_hashes), OmegaConf.to_container(checks, resolve=True),
                      {k: p.pattern for k, p in datachecks.PII_PATTERNS.items()}, datachecks.DETECTOR,
                      datachecks.CHECKS)
    if path.exists() and read_json(path).get("key") == key:
        return read_json(path)
    encode = plan.models.encoder() if checks.get("near_duplicates", True) else None
    display.status("data checks: overlap with train/knowledge, label balance, personal data")
    result = {"key": key, "data_hashes": dict(task.data_hashes),
              **datachecks.run_checks(task, encode, float(checks.get("near_threshold", 0.95)))}
    write_json(path, result)
    for split, found in result["overlap"].items():
        if found["exact"] or found["near"]:
            display.status(f"[yellow]warning:[/yellow] {len(found['exact'])} held-out input(s) identical and "
                           f"{len(found['near'])} nearly identical to {split} examples")
    seen = result.get("answers_in_train") or {}
    if seen.get("n"):
        display.status(f"[yellow]warning:[/yellow] {seen['n']} of {seen['of']} held-out answers are also training "
                       f"answers: a tuned arm can recall them (ids in data_checks.json)")
    if result["pii"]["examples"]:
        display.status(f"[yellow]warning:[/yellow] {len(result['pii']['examples'])} training example(s) contain "
                       f"personal-data patterns ({result['pii']['counts']}); ids in data_checks.json")
    return result


def _judge_tokens(plan: Plan) -> int:
    return int((plan.cfg.get("judge") or {}).get("max_new_tokens", 4))


def judge_agreement(plan: Plan) -> dict | None:
    """The judge on the task's hand-marked outputs, once per judge model and rubric (judge.json)."""
    if plan.judge_lm is None:
        return None
    display.status(f"LLM judge: agreement with {len(plan.task.judge['marked'])} hand-marked outputs")
    result = judge.agreement_file(plan.judge_lm, plan.task, plan.run_dir / "judge.json", _judge_tokens(plan))
    agree = result["agreement"]
    if agree.get("n"):
        kappa = "undefined" if agree["cohen_kappa"] is None else f"{agree['cohen_kappa']:.2f}"
        display.status(f"LLM judge agrees with the hand marks on {agree['agreement']:.0%} of {agree['n']} "
                       f"(Cohen's kappa {kappa})")
    return result


def judge_outputs(plan: Plan, name: str, records: dict[str, dict]) -> dict | None:
    """judge_pass per held-out output of one arm (<arm>/judge.json, resumable); a failing judge is reported and
    the arm keeps its other metrics."""
    if plan.judge_lm is None:
        return None
    key = read_json(plan.run_dir / "judge.json")["key"]
    try:
        return {"judge_pass": judge.judge_file(plan.judge_lm, plan.task, records, plan.run_dir / name / "judge.json",
                                               key, plan.chunk, _judge_tokens(plan))}
    except Exception as e:
        display.error(f"LLM judge failed on {name}: {type(e).__name__}: {e}")
        return None


def forgetting_check(plan: Plan, results: dict[str, ArmResult]) -> None:
    """Base model vs each fine-tuned model (`strategy.tuned_lm`) of the arms that ran on the run's model, on the
    control set (control.json); a failing check is reported and the comparison still made."""
    try:
        tuned = {name: arm.strategy.tuned_lm for name, arm in plan.arms.items()
                 if name in results and not results[name].failed and arm.lm is plan.lm
                 and arm.strategy.tuned_lm is not None}
        _score_control(plan, tuned)
    except Exception as e:
        display.error(f"forgetting check failed: {type(e).__name__}: {e}")


def _score_control(plan: Plan, tuned: dict[str, Any]) -> None:
    settings = plan.cfg.get("forgetting") or {}
    control = forgetting.load_control(plan.task, str(settings.get("control", "auto")),
                                      positive_or_none(settings.get("limit"), "forgetting.limit"))
    if not tuned or control is None:
        return
    path = plan.run_dir / "control.json"
    done = read_json(path) if path.exists() else {}
    if done.get("ids") != list(control.ids) or done.get("method") != control.method:
        done = {"name": control.name, "method": control.method, "ids": list(control.ids), "arms": {}}
    todo = [name for name in tuned if name not in done["arms"]]
    if not todo:
        return
    display.status(f"forgetting check: base and {len(todo)} fine-tuned model(s) on the {control.name} "
                   f"({len(control.ids)} items)")
    if "base" not in done:
        done["base"] = control.score(plan.lm)
    for name in todo:
        done["arms"][name] = control.score(tuned[name])
        write_json(path, done)
