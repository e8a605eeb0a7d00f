"""Write `harness sweep`'s report: sweep.json, sweep.md, a self-contained sweep.html (figures embedded, every value
escaped) and one figure per swept numeric knob (primary metric against the knob, one line per arm). Pure."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Mapping

from jinja2 import Environment, FileSystemLoader
from rich.console import Group
from rich.table import Table
from rich.text import Text

from harness import sweep
from harness.report import plots
from harness.report.display import cell
from harness.results import write_json
from harness.decision.verdict import fmt

TEMPLATES = Path(__file__).resolve().parent / "templates"


def knob_plot(report: Mapping, knob: str) -> bytes | None:
    """The primary metric (with its interval) against one swept numeric knob; a line per arm and per combination
    of the other swept overrides."""
    others = [k for k in report["swept"] if k != knob]
    series: dict[str, list] = {}
    for r in report["rows"]:
        if r.get("value") is None or r["status"] != "finished":
            continue
        label = r["arm"] + "".join(f", {k}={r['overrides'].get(k)}" for k in others)
        series.setdefault(label, []).append((float(r["overrides"][knob]), r["value"], r.get("ci") or [r["value"]] * 2))
    if not series:
        return None
    fig, ax = plots.plt.subplots(figsize=(7.0, 4.0))
    for label, points in series.items():
        points.sort()
        xs = [p[0] for p in points]
        line, = ax.plot(xs, [p[1] for p in points], marker="o", label=label)
        ax.fill_between(xs, [p[2][0] for p in points], [p[2][1] for p in points], alpha=0.12, color=line.get_color())
    values = sorted({p[0] for pts in series.values() for p in pts})
    if values[0] > 0 and values[-1] / values[0] >= 16:
        ax.set_xscale("log", base=2)
    metric = next((r["metric"] for r in report["rows"] if r.get("metric")), "metric")
    ax.set_xlabel(knob)
    ax.set_ylabel(f"{metric} (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{metric} against {knob}", fontsize=10)
    return plots._png(fig)


def _figure_name(knob: str) -> str:
    return "sweep_" + "".join(ch if ch.isalnum() else "_" for ch in knob) + ".png"


def markdown(report: Mapping, figures: Mapping[str, str]) -> str:
    keys = report["swept"]
    c = report["counts"]
    lines = [f"# Sweep: {report['sweep_dir']}", "",
             f"{c['finished']} finished, {c['failed']} failed, {c['unfinished']} unfinished job(s); swept: "
             f"{', '.join(keys) or 'nothing (repeated cells)'}", "",
             "| job | " + " | ".join(keys) + (" | " if keys else "") + "arm | metric [95% CI] | $/1k req | $/month | chosen |",
             "|---|" + "---|" * len(keys) + "---|---:|---:|---:|---|"]
    for r in report["rows"]:
        over = "".join(f"{r['overrides'].get(k)} | " for k in keys)
        if r.get("error") or r.get("arm") is None:
            error = str(r.get("error") or "no results yet").replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {r['job']} | {over}{r.get('arm') or '–'} | {r['status']}: {error} | | | |")
            continue
        point = {"value": r["value"], "ci": r["ci"]} if r.get("ci") else None
        lines.append(f"| {r['job']} | {over}{r['arm']} | {cell(point) if point else fmt(r['value'])} | "
                     f"{fmt(r['per_1k_requests'], 4)} | {fmt(r['monthly_total'], 2)} | {'✓' if r['chosen'] else ''} |")
    lines += ["", "## Verdicts", ""]
    for job, v in report["verdicts"].items():
        lines.append(f"- job {job}: choose {v['choice']} (fine-tuning justified: {v['fine_tuning_justified']}) — "
                     f"{v['summary']}")
    for lc in report["learning_curves"]:
        lines += ["", "## Learning curve" + (f" ({lc['group']})" if lc["group"] else ""), "",
                  *[f"- {f['summary']}" for f in lc["curve"]["findings"]]]
    lines += ["", *[f"![{name}]({name})" for name in figures], ""]
    return "\n".join(lines)


def write(sweep_dir: Path) -> dict:
    sweep_dir = Path(sweep_dir)
    report = sweep.build(sweep_dir)
    figures = {}
    for knob in report["numeric_knobs"]:
        png = knob_plot(report, knob)
        if png:
            figures[_figure_name(knob)] = png
            (sweep_dir / _figure_name(knob)).write_bytes(png)
    report["figures"] = list(figures)
    write_json(sweep_dir / "sweep.json", report)
    (sweep_dir / "sweep.md").write_text(markdown(report, figures), encoding="utf-8")
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("sweep.html.j2").render(
        r=report, fmt=fmt, images={n: "data:image/png;base64," + base64.b64encode(p).decode() for n, p in figures.items()})
    (sweep_dir / "sweep.html").write_text(html, encoding="utf-8")
    return report


def table(report: Mapping) -> Group:
    keys = report["swept"]
    t = Table(title=f"sweep {report['sweep_dir']}: {report['counts']['finished']} finished, "
                    f"{report['counts']['failed']} failed, {report['counts']['unfinished']} unfinished",
              title_justify="left")
    for col in ("job", *keys, "arm", "metric", "95% CI", "$/month", "chosen"):
        t.add_column(col, justify="right" if col in ("metric", "95% CI", "$/month") else "left")
    for r in report["rows"]:
        over = [str(r["overrides"].get(k)) for k in keys]
        if r.get("error") or r.get("arm") is None:
            t.add_row(r["job"], *over, r.get("arm") or "–", Text(f"{r['status']}: {r.get('error') or 'no results'}",
                                                                  style="red"), "", "", "")
            continue
        ci = f"[{r['ci'][0]:.3f}, {r['ci'][1]:.3f}]" if r.get("ci") else "–"
        t.add_row(r["job"], *over, r["arm"], fmt(r["value"]), ci, fmt(r["monthly_total"], 2), "✓" if r["chosen"] else "")
    findings = [Text(f"• {f['summary']}") for lc in report["learning_curves"] for f in lc["curve"]["findings"]]
    return Group(t, *findings)
