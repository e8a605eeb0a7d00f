"""One arm: prepare → resumable predictions → score → usage, into an `ArmResult` (its files: prepare.json,
predictions.jsonl, metrics.json, usage.json; error.json when it fails)."""

from __future__ import annotations

import errno
import time
import traceback
from dataclasses import dataclass, replace
from typing import Any, Callable

from harness import datachecks, scoring
from harness.report import display
from harness.errors import HarnessError
from harness.records import ArmResult, Training, Usage
from harness.results import PredictionLog, write_json
from harness.runner import checks
from harness.runner.plan import ArmPlan, Plan
from harness.strategy import PrepareContext
from harness.task import Task

# The results folder cannot be written (disk full, read-only): the run stops with one line instead of failing
# arm after arm; what is on disk is kept and a rerun resumes.
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


@dataclass(frozen=True)
class ArmRun:
    """What running an arm needs besides the arm: the plan (task, folders, seed, models, judge) and the progress
    bars of this run."""

    plan: Plan
    bars: Callable[[str, int], Callable[[int], None]]


def redact_record(record: dict) -> dict:
    """A prediction record with personal data in its prompt replaced (datachecks.redact): the prompt as sent,
    minus emails, phone numbers, card numbers, IBANs and sort codes of the demonstrations and the input."""
    prompt, n = datachecks.redact(record.get("prompt") or "")
    return {**record, "prompt": prompt, "prompt_redacted": n} if n else record


def embedding_cosines(encode, outputs: list[str], references: list[Any]) -> list[float]:
    """Cosine similarity of each output to its reference(s) (the best one), with normalised embeddings."""
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    flat = [r for rs in refs for r in rs]
    out_vecs, ref_vecs = encode([o or " " for o in outputs]), encode(flat)
    values, at = [], 0
    for i, rs in enumerate(refs):
        values.append(max(float(out_vecs[i] @ ref_vecs[at + j]) for j in range(len(rs))))
        at += len(rs)
    return values


def score_strategy(task: Task, records: dict[str, dict], encode=None, extra: dict | None = None) -> dict:
    """Score an arm's recorded outputs; `encode` (texts → normalised vectors) computes embedding_cosine; `extra`
    adds per-example values measured elsewhere ({"judge_pass": {id: 0/1}})."""
    examples = [ex for ex in task.heldout if ex.id in records]
    outputs = [records[ex.id]["output"] for ex in examples]
    measures: dict[str, list] = {}
    if "embedding_cosine" in task.metrics and encode is not None and examples:
        measures["embedding_cosine"] = embedding_cosines(encode, outputs, [ex.target for ex in examples])
    if examples:
        measures.update({key: [values[ex.id] for ex in examples] for key, values in (extra or {}).items()})
    measures.update(retrieval_measures(examples, records))
    result = scoring.score_arm(task, examples, outputs, measures)
    return {"primary_metric": task.metric, "n": len(examples), "metrics": result["metrics"],
            "details": result["details"],
            "per_example": {ex.id: s for ex, s in zip(examples, result["per_example"])}}


def retrieval_measures(examples: list, records: dict[str, dict]) -> dict[str, list]:
    """recall@k and the reciprocal rank per example, when every example names its gold documents and every
    prediction recorded the documents it retrieved (k up to the fewest retrieved)."""
    gold = [(ex, records[ex.id].get("retrieved")) for ex in examples if ex.meta.get("doc_ids")]
    if not gold or len(gold) != len(examples) or not all(hits and all("doc_id" in h for h in hits)
                                                         for _, hits in gold):
        return {}
    depth = min(len(hits) for _, hits in gold)
    ks = tuple(k for k in (1, 3, 5, 10) if k <= depth)
    found = scoring.retrieval_per_example([list(ex.meta["doc_ids"]) for ex, _ in gold],
                                          [[h["doc_id"] for h in hits] for _, hits in gold], ks)
    return {key: [f[key] for f in found] for key in found[0]}


def run_or_record(arm: ArmPlan, run: ArmRun) -> ArmResult:
    """The arm's result; a failing arm is recorded (error.json) and the other arms still run. An unwritable results
    folder stops the run."""
    try:
        return run_arm(arm, run)
    except Exception as e:
        if isinstance(e, OSError) and e.errno in UNWRITABLE:
            raise
        user_error = isinstance(e, HarnessError)
        message = str(e) if user_error else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        write_json(run.plan.run_dir / arm.name / "error.json",  # a full disk here stops the run: one line
                   {"error": message, "traceback": None if user_error else traceback.format_exc()})
        display.error(f"strategy {arm.name} failed: {message}")
        return ArmResult(name=arm.name, error=message)


def run_arm(arm: ArmPlan, run: ArmRun) -> ArmResult:
    plan = run.plan
    report, prepare_s = _prepare(arm, run)
    counters = dict(arm.lm.counters) if arm.lm is not None else {}
    log = _predict(arm, run)
    records = [log.records[ex.id] for ex in plan.task.heldout]
    encode = plan.models.encoder() if "embedding_cosine" in plan.task.metrics else None
    metrics = score_strategy(plan.task, log.records, encode, checks.judge_outputs(plan, arm.name, log.records))
    usage = Usage.of_predictions(records)
    if counters:  # requests, retries, cache hits and failures of this arm's backend during this run
        usage = replace(usage, backend={k: v - counters.get(k, 0) for k, v in arm.lm.counters.items()})
    folder = plan.run_dir / arm.name
    write_json(folder / "metrics.json", metrics)
    write_json(folder / "usage.json", usage.to_json())
    _warn_about_usage(arm.name, usage)
    for warning in (report.get("training") or {}).get("warnings") or []:  # memorising, best at epoch 1, undertrained
        display.status(f"[yellow]warning:[/yellow] {arm.name}: training: {warning}")
    return ArmResult.measured(arm.name, summary=report.get("summary", ""), metrics=metrics["metrics"],
                              n=metrics["n"], prepare_s=prepare_s, usage=usage, model=arm.model,
                              training=Training.from_report(report.get("training"), report.get("cached", False)))


def _prepare(arm: ArmPlan, run: ArmRun) -> tuple[dict, float]:
    """The strategy's prepare (with what its check resolved), timed and recorded in prepare.json."""
    plan, task = run.plan, run.plan.task
    ctx = PrepareContext(task=task, lm=arm.lm, workdir=plan.run_dir / arm.name, cache_dir=plan.models.cache_dir,
                         seed=plan.seed, progress=lambda what, total: run.bars(f"{arm.name}: {what}", total),
                         checked=arm.checked)  # progress lines name the arm (combined trains a LoRA adapter too)
    start = time.perf_counter()
    report = arm.strategy.prepare(ctx)
    prepare_s = time.perf_counter() - start
    write_json(plan.run_dir / arm.name / "prepare.json",
               {"strategy": arm.name, "target": arm.target, "settings": arm.strategy.describe(), "model": arm.model,
                "fingerprint": arm.key, "prepare_s": prepare_s, "report": report,
                **({"answer_stops": task.answer_settings()} if task.answer_settings() else {})})
    return report, prepare_s


def _predict(arm: ArmPlan, run: ArmRun) -> PredictionLog:
    """Predictions for the held-out examples not yet in predictions.jsonl, appended every `write_every`."""
    plan, heldout = run.plan, run.plan.task.heldout
    log = PredictionLog(plan.run_dir / arm.name / "predictions.jsonl")
    todo = [ex for ex in heldout if ex.id not in log.done()]
    advance = run.bars(f"{arm.name}: predict", len(heldout))
    advance(len(heldout) - len(todo))
    for s in range(0, len(todo), plan.chunk):
        batch = todo[s:s + plan.chunk]
        predictions = arm.strategy.predict(batch)
        if [p.id for p in predictions] != [ex.id for ex in batch]:
            raise RuntimeError(f"strategy {arm.name} returned predictions out of order or incomplete")
        log.append(redact_record(p.to_json()) for p in predictions)
        advance(len(batch))
    return log


def _warn_about_usage(name: str, usage: Usage) -> None:
    if usage.failed:
        display.status(f"[yellow]warning:[/yellow] {name}: {usage.failed} request(s) failed (malformed or empty "
                       f"answers, prompts over the server's context); scored as wrong, listed in predictions.jsonl")
    if usage.truncated:
        display.status(f"[yellow]warning:[/yellow] {name}: {usage.truncated} prompt(s) were longer than the "
                       f"model's context and were cut in the middle (counted in usage.json)")
