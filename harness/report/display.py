"""Terminal output with rich: progress bars for long steps (plain lines in logs) and the comparison table."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Group
from rich.markup import escape
from rich.panel import Panel
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from harness.console import console, status  # noqa: F401  (display.status and display.console for the CLI)
from harness.records import Comparison
from harness.report.rows import arm_rows
from harness.decision.verdict import fmt, money


class PlainProgress:
    """Progress as plain lines for logs (CI, nohup, a Slurm log), where bars would show only at the end: one line
    each time another ~10% is done or `every_s` seconds have passed, and one at the end (done/total, rate, ETA)."""

    def __init__(self, description: str, total: int, clock: Callable[[], float] = time.monotonic,
                 every_s: float = 30.0, write: Callable[[str], None] | None = None):
        self.description, self.total, self.clock, self.every_s = description, max(0, int(total)), clock, every_s
        self.write = write or (lambda line: console.print(line, highlight=False, markup=False, soft_wrap=True))
        self.done, self.first, self.last_step, self.last_time = 0, None, 0, clock()

    def __call__(self, n: int = 1) -> None:
        now = self.clock()
        self.done += n
        if self.first is None:  # rates count from the first update (a resumed step skips its finished part)
            self.first = (now, self.done)
            self.last_time = now
        step = 10 * self.done // self.total if self.total else 10
        finished = self.total and self.done >= self.total
        if step > self.last_step or now - self.last_time >= self.every_s or finished:
            self.last_step, self.last_time = step, now
            self.write(self.line(now))

    def line(self, now: float) -> str:
        t0, d0 = self.first
        rate = (self.done - d0) / (now - t0) if now > t0 and self.done > d0 else None
        text = f"{self.description}: {self.done}/{self.total}"
        if self.total:
            text += f" ({100 * self.done // self.total}%)"
        if rate:
            text += f", {rate:.2f}/s"
            if self.done < self.total:
                text += f", ETA {_duration((self.total - self.done) / rate)}"
        return text


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


@contextmanager
def progress(plain: bool | None = None) -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yields `start(description, total) -> advance(n)`; every long step gets its own bar, or, when the output is
    not a terminal (`plain`), its own plain progress lines."""
    if console.is_terminal if plain is None else not plain:
        bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console, transient=False)
        with bars:
            def start(description: str, total: int) -> Callable[[int], None]:
                task_id = bars.add_task(description, total=total)
                return lambda n=1: bars.advance(task_id, n)
            yield start
    else:
        yield PlainProgress


def error(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {escape(message)}", highlight=False, markup=True, soft_wrap=True)


def comparison_table(comparison: Comparison | dict) -> Table:
    comparison = Comparison.of(comparison)
    view = arm_rows(comparison)
    primary, currency = view.primary, view.currency
    secondary = [m for m in view.metrics
                 if m != "invalid_rate" or any(r.result.metrics.get(m) for r in view.rows)]
    chosen = comparison.other.get("task_primary_metric")
    table = Table(title=f"{comparison.task} — held-out n={comparison.heldout_n}, primary metric: {primary}"
                  + (f" (chosen at report time; the task's: {chosen})" if chosen else ""), title_justify="left")
    show_model = view.mixed_models  # arms on different models: say which model each ran on
    table.add_column("strategy", style="bold", no_wrap=True)
    if show_model:
        table.add_column("model", no_wrap=True, max_width=34, overflow="ellipsis")
    table.add_column("setup", style="dim", no_wrap=True, max_width=30, overflow="ellipsis")
    table.add_column(primary, justify="right", style="bold green", no_wrap=True)
    table.add_column("95% CI", justify="right", no_wrap=True)
    for m in secondary:
        table.add_column(m, justify="right", no_wrap=True)
    for col in ("tokens in/out", "s/ex", "train (s)", "$/1k req", "$/month", "$/1k correct"):
        table.add_column(col, justify="right", no_wrap=True)
    for row in view.rows:
        r = row.result
        if row.error is not None:
            table.add_row(row.arm, *(["–"] if show_model else []), f"[red]failed: {row.error}[/red]",
                          *["–"] * (len(secondary) + 8))
            continue
        spread = row.seed_spread(primary)
        main = fmt(row.primary(primary)) + (f" ± {spread:.3f}" if spread is not None else "")
        cost, u = row.cost, r.usage
        table.add_row(row.arm + (" ✓" if row.chosen else ""), *([row.model_label] if show_model else []),
                      r.summary, main, row.ci_text() or "–", *[fmt(r.metrics.get(s)) for s in secondary],
                      f"{fmt(u.input_tokens.mean, 0)}/{fmt(u.output_tokens.mean, 0)}",
                      fmt(u.latency_s.mean, 2), row.train_s(" cached"),
                      money(cost.get("per_1k_requests"), currency) if cost else "–",
                      money(cost.get("monthly_total"), currency) if cost else "–", row.per_correct(currency))
    return table


def verdict_title(verdict: dict) -> tuple[str, str]:
    """The verdict's headline and colour: undecided first, then the choice and whether fine-tuning is justified."""
    yes, status = verdict.get("fine_tuning_justified"), verdict.get("status", "decided")
    if verdict.get("choice") is None:
        return "[bold]No arm can be chosen[/bold]", "red"
    tuning = ("fine-tuning [green]justified[/green]" if yes else "fine-tuning [red]not justified[/red]"
              if yes is False else "whether fine-tuning is justified: [yellow]open[/yellow]")
    if status == "undecided":
        needed = f", about {verdict['n_needed']:,} held-out examples would settle it" if verdict.get("n_needed") else ""
        return (f"[bold yellow]Verdict: undecided[/bold yellow] — for now {verdict['choice']}{needed}; {tuning}",
                "yellow")
    return (f"[bold]Verdict: choose {verdict['choice']}[/bold] — {tuning}",
            "green" if yes else "red" if yes is False else "yellow")


def verdict_panel(comparison: Comparison | dict) -> Panel | None:
    verdict = Comparison.of(comparison).verdict
    if not verdict:
        return None
    parts = [Text(verdict["summary"])]
    if verdict.get("caveats"):
        parts.append(Text("\nCaveats:", style="bold yellow"))
        parts.extend(Text(f"• {c}", style="yellow") for c in verdict["caveats"])
    title, colour = verdict_title(verdict)
    return Panel(Group(*parts), title=title, title_align="left", border_style=colour)


def run_problems(comparison: Comparison | dict) -> list[str]:
    """One line when the run cannot be used as it is: no arm can be chosen, or an arm failed on every request."""
    comparison = Comparison.of(comparison)
    decision = comparison.decision or {}
    verdict = decision.get("verdict") or {}
    if verdict and verdict.get("choice") is None and any(not r.failed for r in comparison.arms.values()):
        return [verdict["summary"]]
    wholesale = [a for a, f in (decision.get("failures") or {}).items() if f.get("wholesale")]
    if wholesale:
        return [f"every request of {', '.join(wholesale)} failed (see predictions.jsonl in its folder): reported, "
                f"never chosen"]
    return []


def compare_table(diff: dict) -> Group:
    head = Table.grid(padding=(0, 2))
    head.add_row("[bold]A[/bold]", diff["a"])
    head.add_row("[bold]B[/bold]", diff["b"])
    for what in ("git", "model"):
        if diff[what]["a"] != diff[what]["b"]:
            head.add_row(what, f"{diff[what]['a']} → {diff[what]['b']}")
    for split, h in diff["data"].items():
        if h["a"] != h["b"]:
            head.add_row(f"data: {split}", "changed" if h["a"] and h["b"] else ("added" if h["b"] else "removed"))
    for s in diff["settings"][:25]:
        head.add_row(f"setting {s['key']}", f"{s['a']!r} → {s['b']!r}")
    if len(diff["settings"]) > 25:
        head.add_row("", f"… {len(diff['settings']) - 25} more settings changed")
    table = Table(title=f"{diff['primary_metric']}: B − A on the held-out ids both runs scored", title_justify="left")
    for col in ("arm", "A", "B", "B − A", "95% CI", "test", "p", "answers changed"):
        table.add_column(col, justify="left" if col in ("arm", "test") else "right")
    for r in diff["arms"]:
        if "change" not in r:
            table.add_row(r["arm"], fmt(r["a"]), fmt(r["b"]), "–", "–", r.get("error_a") or r.get("error_b") or "–",
                          "–", "–")
            continue
        table.add_row(r["arm"], fmt(r["a"]), fmt(r["b"]), f"{r['change']:+.3f}",
                      f"[{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}]", r["test"].replace("_", " "), f"{r['p_value']:.4f}",
                      f"{r['changed_answers']}/{r['paired_n']}")
    va, vb = diff["verdict"]["a"], diff["verdict"]["b"]
    verdict = Text(f"verdict A: {va.get('choice')} (fine-tuning justified: {va.get('fine_tuning_justified')})\n"
                   f"verdict B: {vb.get('choice')} (fine-tuning justified: {vb.get('fine_tuning_justified')})",
                   style="bold" if va.get("choice") != vb.get("choice") else "")
    return Group(head, table, verdict)


def cell(point: dict | None) -> str:
    """A metric with its interval, as the learning-curve tables show it."""
    return "–" if not point else f"{point['value']:.3f} [{point['ci'][0]:.3f}, {point['ci'][1]:.3f}]"


def curve_table(curve: dict) -> Group:
    axis = curve.get("x_axis", "training examples")
    table = Table(title=f"{curve['task']}: {curve['primary_metric']} by {axis} (95% CI)", title_justify="left")
    table.add_column("per class" if axis == "examples per class" else "train", justify="right")
    for arm in curve["arms"]:
        table.add_column(arm, justify="right", no_wrap=True)
    for n in curve["sizes"]:
        table.add_row(str(n), *(cell(curve["arms"][arm][n]) for arm in curve["arms"]))
    return Group(table, *[Text(f"• {f['summary']}") for f in curve["findings"]])
