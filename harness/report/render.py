"""report.md and a self-contained report.html (figures embedded), re-rendered from a results folder's JSON.

`harness report RUN_DIR` calls `write_reports`; so does the end of every run. Nothing here loads a model.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any, Mapping

from jinja2 import Environment, FileSystemLoader

from harness import kinds
from harness.report import plots
from harness.records import Comparison
from harness.results import read_json, write_bytes, write_text
from harness.report.rows import arm_rows
from harness.decision.verdict import fmt, headline, money

TEMPLATES = Path(__file__).resolve().parent / "templates"


def _optional(path: Path) -> Any:
    return read_json(path) if path.exists() else None


def _rows(comparison: Comparison, details: Mapping[str, Mapping] | None = None) -> list[dict]:
    """The report's table: one row per arm the decision compares and per failed arm (seed replicates are shown by
    their mean)."""
    view = arm_rows(comparison)
    primary, currency, details = view.primary, view.currency, details or {}
    rows = []
    for row in view.rows:
        r = row.result
        if r.is_replicate:
            continue
        if row.error is not None:
            rows.append({"arm": row.arm, "error": row.error})
            continue
        spread, p, t, u = row.seed_spread(primary), row.cost, r.training, r.usage
        rows.append({
            "arm": row.arm, "summary": r.summary, "model": (r.model or {}).get("name_or_path", ""),
            "model_label": row.model_label if view.mixed_models else "", "details": details.get(row.arm, {}),
            "primary": fmt(row.primary(primary)), "ci": row.ci_text() or "",
            "spread": f"± {spread:.3f} over seeds" if spread else "",
            "others": {m: fmt(v) for m, v in r.metrics.items() if m != primary},
            "per_1k": money(p.get("per_1k_requests"), currency), "monthly": money(p.get("monthly_total"), currency),
            "per_correct": row.per_correct(currency), "relation": row.relation,
            "one_off": money(p.get("one_off"), currency) if p else "–", "train_s": row.train_s(" (cached)"),
            "tokens_in": fmt(u.input_tokens.mean, 1), "tokens_out": fmt(u.output_tokens.mean, 1),
            "latency": fmt(u.latency_s.mean),
            "memory": f"{t.peak_memory_mb / 1024:.1f} GB" if t and t.peak_memory_mb else "–",
            "epochs": (f"best epoch {t.best_epoch} of {t.epochs_run}, stopped: {t.stop_reason}"
                       + (f", {t.optimizer_steps} optimizer steps" if t.optimizer_steps else "")
                       if t and t.stop_reason else ""),  # runs before epochs were chosen on dev recorded no reason
            "chosen": row.chosen, "fine_tuned": r.fine_tuned})
    return rows


def _uncovered(prepared: Mapping[str, Mapping]) -> list[str]:
    """One line per arm whose prompt demonstrates fewer labels than the task has (prepare.json demo_coverage)."""
    lines = []
    for arm, p in prepared.items():
        c = p.get("demo_coverage") or {}
        if c and c["labels_shown"] < c["labels"]:
            lines.append(f"{arm}: its demonstrations show {c['labels_shown']} of {c['labels']} labels "
                         f"(shots={c.get('shots')}); the others are only named in the instruction")
    return lines


def build_view(run_dir: Path) -> dict:
    """Everything the templates show, from the folder's JSON; figures as PNG bytes keyed by file name."""
    run_dir = Path(run_dir)
    comparison = Comparison.from_json(read_json(run_dir / "comparison.json"))
    run = _optional(run_dir / "run.json") or {}
    decision = comparison.decision or {}
    arms = [a for a, r in comparison.arms.items() if r.scored_here]
    details = {a: (_optional(run_dir / a / "metrics.json") or {}).get("details", {}) for a in arms}
    prepared = {a: (_optional(run_dir / a / "prepare.json") or {}).get("report", {}) for a in arms}
    figures: dict[str, bytes] = {}

    def add(name: str, png: bytes | None) -> None:
        if png:
            figures[name] = png

    add("pareto.png", plots.pareto(comparison))
    add("decision_map.png", plots.decision_map(comparison))
    choice = (decision.get("verdict") or {}).get("choice")
    shown = [a for a in dict.fromkeys([choice, decision.get("best")]) if a in details]
    for arm in shown:
        add(f"confusion_{arm}.png", plots.confusion(details[arm], arm))
    breakdown = kinds.get(comparison.task_type, field="task_type").breakdown  # per label, per field, or none
    if breakdown is not None:
        add(breakdown.figure, plots.per_label({a: breakdown.values(d) for a, d in details.items()}, breakdown.title))
    histories = {a: (p.get("training") or {}).get("history") for a, p in prepared.items()}
    add("training_curves.png", plots.training_curves(histories))
    primary = comparison.primary_metric
    others = sorted({m for r in comparison.arms.values() for m in r.metrics} - {primary})
    return {"confusions": [n for n in figures if n.startswith("confusion_")], "c": comparison, "run": run,
            "d": decision, "v": decision.get("verdict"),
            "headline": headline(decision.get("verdict")), "rows": _rows(comparison, details),
            "rules": {a: d["per_rule_pass_rate"] for a, d in details.items() if d.get("per_rule_pass_rate")},
            "others": others, "primary": primary, "figures": figures, "checks": _optional(run_dir / "data_checks.json"),
            "prepared": prepared, "uncovered": _uncovered(prepared), "money": money, "fmt": fmt,
            "currency": (decision.get("costs") or {}).get("currency", "USD")}


def write_reports(run_dir: Path) -> dict[str, Path]:
    run_dir = Path(run_dir)
    view = build_view(run_dir)
    # Task names, labels, rule names, model names and error texts come from users and models: every value shown is
    # escaped (HTML: autoescape; Markdown: <, > and & as entities, so no raw HTML reaches a Markdown renderer).
    html_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    md_env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=False, trim_blocks=True, lstrip_blocks=True,
                         finalize=markdown_safe)
    for name, png in view["figures"].items():
        write_bytes(run_dir / name, png)
    md = md_env.get_template("report.md.j2").render(**view, images={n: n for n in view["figures"]})
    html = html_env.get_template("report.html.j2").render(
        **view, images={n: "data:image/png;base64," + base64.b64encode(p).decode() for n, p in view["figures"].items()})
    out = {"md": run_dir / "report.md", "html": run_dir / "report.html"}
    write_text(out["md"], md)
    write_text(out["html"], html)
    return out


def markdown_safe(value: Any) -> Any:
    """A value printed into report.md, with HTML's special characters as entities (shown as typed)."""
    if isinstance(value, str):
        return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return value
