"""A decision record of a finished run (`harness record RUN_DIR` → decision_record.json and .md): task and metric
definition, data sets with content hashes and sizes, the personal-data scan (ids only), the arms and their models
with versions and adapter hashes, held-out results with intervals, the forgetting check, the verdict and the
settings it was reached with, the primary metric per slice when the task declares `slices:`, and a review date.
`harness compare RECORDED_RUN NEW_RUN` is the review. Pure: reads the results folder (and the task's held-out file
for slice values)."""

from __future__ import annotations

import calendar
import hashlib
from datetime import date, datetime
from pathlib import Path
from typing import Any, Mapping

from harness.decision import stats
from harness.decision import uncertainty
from harness.scoring import aggregate
from harness.errors import HarnessError
from harness.records import ArmResult, Comparison
from harness.results import read_json, write_json
from harness.rundata import read_run_file
from harness.task import load_task

METRIC_DEFINITIONS = {
    "accuracy": "share of held-out examples whose predicted label equals the gold label (invalid answers count as wrong)",
    "macro_f1": "F1 per label, averaged over labels with equal weight",
    "field_f1": "micro-averaged F1 over the extracted fields (true positives = fields matching the gold value)",
    "field_accuracy": "share of fields whose value matches the gold value",
    "record_exact_match": "share of examples whose every field matches",
    "exact_match": "share of outputs equal to a reference after normalisation",
    "token_f1": "token-overlap F1 between output and the best reference",
    "chrf": "character n-gram F-score (sacrebleu chrF, 0-1)",
    "rouge_l": "ROUGE-L F-measure (stemmed)",
    "embedding_cosine": "cosine similarity of output and reference embeddings",
    "rules_pass": "share of outputs that pass all of the task's rules",
    "judge_pass": "share of outputs the LLM judge marks PASS",
}
DEFAULT_REVIEW_MONTHS = 6


def add_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _optional(path: Path) -> Any:
    return read_json(path) if path.is_file() else None


def _file_hash(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _arm(run_dir: Path, name: str, result: ArmResult, interval: Mapping, primary: str) -> dict:
    prepared = _optional(run_dir / name / "prepare.json") or {}
    report = prepared.get("report") or {}
    adapter = report.get("adapter")
    arm = {"arm": name, "target": prepared.get("target"), "settings": prepared.get("settings"),
           "model": result.model or prepared.get("model"), "error": result.error,
           "primary": {"metric": primary, **(interval.get(primary) or {})},
           "metrics": dict(result.metrics) if not result.failed else None, "fine_tuned": result.fine_tuned}
    if adapter:
        folder = Path(adapter)
        arm["adapter"] = {"key": folder.name, "path": adapter,
                          "weights_sha256": _file_hash(folder / "adapter_model.safetensors")}
    return arm


def _slices(run_dir: Path, run: Mapping, comparison: Mapping, arms: list[str], seed: int) -> dict:
    """{field: {value: {arm: {value, ci, n}}}} from the task's held-out metadata and each arm's per-example scores."""
    task_dir = run.get("task_dir")
    if not task_dir or not Path(task_dir).is_dir():
        return {}
    limits, config = run.get("limits") or {}, run.get("config") or {}
    try:
        task = load_task(task_dir, limit_heldout=limits.get("heldout"), limit_train=limits.get("train"),
                         sample=str((config.get("limit") or {}).get("sample", "first")), sample_seed=seed,
                         allow_overlap=True)
    except HarnessError:
        return {}
    if not task.slices:
        return {}
    changed = dict(task.data_hashes).get("heldout") != (run.get("data_hashes") or {}).get("heldout")
    primary, task_type, labels = comparison["primary_metric"], comparison["task_type"], comparison.get("labels", [])
    per_example = {a: (read_run_file(run_dir / a / "metrics.json") or {}).get("per_example", {}) for a in arms}
    out: dict[str, Any] = {"_heldout_changed_since_run": changed} if changed else {}
    for field in task.slices:
        groups: dict[str, list[str]] = {}
        for ex in task.heldout:
            groups.setdefault(str(ex.meta.get(field)), []).append(ex.id)
        table = {}
        for value, ids in sorted(groups.items()):
            row = {}
            for a in arms:
                records = [per_example[a][i] for i in ids if i in per_example[a]]
                if not records:
                    continue
                idx = stats.bootstrap_indices(len(records), 1000, seed)
                samples = uncertainty.metric_samples(task_type, records, idx, labels)[primary]
                row[a] = {"value": aggregate(task_type, records, labels)[primary],
                          "ci": list(stats.percentile_interval(samples)), "n": len(records)}
            table[value] = row
        out[field] = table
    return out


def build(run_dir: Path, review_after_months: int | None = None) -> dict:
    run_dir = Path(run_dir)
    comparison = read_run_file(run_dir / "comparison.json")
    run = read_run_file(run_dir / "run.json")
    decision = comparison.get("decision")
    if not decision:
        raise HarnessError(f"{run_dir / 'comparison.json'}: no decision recorded (run `harness report {run_dir}` first)")
    config = run.get("config") or {}
    months = review_after_months if review_after_months is not None else int(
        (config.get("decision") or {}).get("review_after_months", DEFAULT_REVIEW_MONTHS))
    created = datetime.fromisoformat(run["created"]).date() if run.get("created") else date.today()
    primary = comparison["primary_metric"]
    intervals = decision.get("intervals") or {}
    results = Comparison.of(comparison).arms
    arms = [_arm(run_dir, a, r, intervals.get(a) or {}, primary) for a, r in results.items()]
    scored = [a for a, r in results.items() if r.scored_here]
    checks = _optional(run_dir / "data_checks.json") or {}
    verdict = decision.get("verdict") or {}
    return {
        "record_version": 1, "run_dir": str(run_dir), "created": run.get("created"),
        "review_after_months": months, "review_by": add_months(created, months).isoformat(),
        "review_how": f"rerun the task on current data and code, then `harness compare {run_dir} NEW_RUN_DIR`",
        "task": {"name": comparison["task"], "type": comparison["task_type"], "task_dir": run.get("task_dir"),
                 "primary_metric": primary, "metric_definition": METRIC_DEFINITIONS.get(primary, primary),
                 "labels": comparison.get("labels"), "fields": comparison.get("fields")},
        "data": {"hashes_sha256": run.get("data_hashes"), "sizes": run.get("limits"),
                 "heldout_n": comparison.get("heldout_n"), "limit": config.get("limit")},
        "personal_data": {"counts": (checks.get("pii") or {}).get("counts"),
                          "examples": [{"id": e.get("id"), "kinds": e.get("kinds")}
                                       for e in (checks.get("pii") or {}).get("examples", [])]},
        "code": {"git": run.get("git"), "python": run.get("python"), "packages": run.get("packages")},
        "arms": arms, "forgetting": decision.get("forgetting"),
        "verdict": {"choice": verdict.get("choice"), "status": verdict.get("status"),
                    "fine_tuning_justified": verdict.get("fine_tuning_justified"), "summary": verdict.get("summary"),
                    "reasons": verdict.get("reasons", []), "caveats": verdict.get("caveats", [])},
        "settings": {"decision": decision.get("settings"), "cost": config.get("cost"), "seed": run.get("seed")},
        "slices": _slices(run_dir, run, comparison, scored, int(run.get("seed") or 0)),
    }


def _ci(point: Mapping | None) -> str:
    if not point or point.get("value") is None:
        return "–"
    ci = point.get("ci")
    return f"{point['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def markdown(rec: Mapping) -> str:
    t, v, d = rec["task"], rec["verdict"], rec["data"]
    lines = [f"# Decision record: {t['name']}", "",
             f"- run: `{rec['run_dir']}` ({rec['created']}); git {((rec['code'] or {}).get('git') or {}).get('sha')}",
             f"- **review by {rec['review_by']}** ({rec['review_after_months']} months): {rec['review_how']}", "",
             "## Decision", "", f"**Choose {v['choice']}** — fine-tuning justified: {v['fine_tuning_justified']}"
             + (f" (status: {v['status']})" if v.get("status") else ""), "", str(v.get("summary") or ""), "",
             *[f"- {r}" for r in v["reasons"]], *[f"- caveat: {c}" for c in v["caveats"]], "",
             "## Task and metric", "", f"- {t['type']} task `{t['name']}` ({t['task_dir']})",
             f"- primary metric `{t['primary_metric']}`: {t['metric_definition']}", "",
             "## Data", "", "| split | examples used | sha256 |", "|---|---:|---|"]
    for split, digest in (d.get("hashes_sha256") or {}).items():
        lines.append(f"| {split} | {(d.get('sizes') or {}).get(split, '')} | `{digest}` |")
    pii = rec["personal_data"]
    lines += ["", f"Personal-data scan of the training data: {pii['counts'] or 'nothing found'}"
              + (f"; example ids: {', '.join(str(e['id']) for e in pii['examples'])}" if pii["examples"] else ""),
              "", "## Arms and held-out results", "",
              f"| arm | model | adapter | {t['primary_metric']} [95% CI] |", "|---|---|---|---:|"]
    for a in rec["arms"]:
        model = (a.get("model") or {}).get("name_or_path", "")
        model = f"no LLM: {model}" if (a.get("model") or {}).get("backend") == "no LLM" else model
        adapter = (a.get("adapter") or {}).get("weights_sha256") or (a.get("adapter") or {}).get("key") or "–"
        lines.append(f"| {a['arm']} | {model} | {str(adapter)[:16]} | "
                     f"{'failed: ' + a['error'] if a.get('error') else _ci(a['primary'])} |")
    forgetting = rec.get("forgetting")
    if forgetting:
        lines += ["", f"## Forgetting check ({forgetting.get('control_set')}, n={forgetting.get('n')})", ""]
        for arm, f in (forgetting.get("arms") or {}).items():
            lines.append(f"- {arm}: accuracy {f.get('accuracy'):.3f}, change {f.get('change'):+.3f} against the base "
                         f"model (p={f.get('p_value')})")
    for field, table in rec["slices"].items():
        if field.startswith("_"):
            continue
        arms = list(dict.fromkeys(a for row in table.values() for a in row))
        lines += ["", f"## {t['primary_metric']} per `{field}` slice", "",
                  f"| {field} | " + " | ".join(arms) + " |", "|---|" + "---:|" * len(arms)]
        for value, row in table.items():
            n = max((p["n"] for p in row.values()), default=0)
            lines.append(f"| {value} (n={n}) | " + " | ".join(_ci(row.get(a)) for a in arms) + " |")
    if rec["slices"].get("_heldout_changed_since_run"):
        lines += ["", "Note: the task's held-out file changed since the run; slice values are read from today's file."]
    packages = (rec["code"] or {}).get("packages") or {}
    lines += ["", "## Settings and versions", "", f"- decision: {rec['settings']['decision']}",
              f"- cost: {rec['settings']['cost']}", f"- seed: {rec['settings']['seed']}; python "
              f"{(rec['code'] or {}).get('python')}; " + ", ".join(f"{k} {v}" for k, v in packages.items()), ""]
    return "\n".join(lines)


def write(run_dir: Path, review_after_months: int | None = None) -> dict:
    rec = build(run_dir, review_after_months)
    write_json(Path(run_dir) / "decision_record.json", rec)
    (Path(run_dir) / "decision_record.md").write_text(markdown(rec), encoding="utf-8")
    return rec
