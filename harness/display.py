"""Terminal output with rich: progress bars for long steps and the comparison table."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

console = Console()
if not console.is_terminal:  # logs and CI: wide enough that the comparison table is not squeezed
    console = Console(width=160)


@contextmanager
def progress() -> Iterator[Callable[[str, int], Callable[[int], None]]]:
    """Yields `start(description, total) -> advance(n)`; every long step gets its own bar."""
    bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=False)
    with bars:
        def start(description: str, total: int) -> Callable[[int], None]:
            task_id = bars.add_task(description, total=total)
            return lambda n=1: bars.advance(task_id, n)
        yield start


def status(message: str) -> None:
    console.print(f"[dim]• {message}[/dim]")


def error(message: str) -> None:
    console.print(f"[bold red]error:[/bold red] {message}", highlight=False, markup=True, soft_wrap=True)


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def comparison_table(comparison: dict) -> Table:
    primary = comparison["primary_metric"]
    rows = comparison["strategies"]
    secondary = sorted({m for r in rows.values() for m in r.get("metrics", {})} - {primary})
    table = Table(title=f"{comparison['task']} — held-out n={comparison['heldout_n']}, primary metric: {primary}",
                  title_justify="left")
    table.add_column("strategy", style="bold")
    table.add_column("setup", style="dim")
    table.add_column(primary, justify="right", style="bold green")
    for m in secondary:
        table.add_column(m, justify="right")
    for col in ("n", "tokens in/ex", "tokens out/ex", "latency/ex (s)", "train (s)"):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        if "error" in r:
            table.add_row(name, f"[red]failed: {r['error']}[/red]", *["–"] * (len(secondary) + 6))
            continue
        m, u, t = r["metrics"], r["usage"], r.get("training")
        spread = r.get("metrics_seed_std", {})
        main = _fmt(m.get(primary)) + (f" ± {spread[primary]:.3f}" if primary in spread else "")
        train = "–" if not t else f"{t['wall_s']:.0f}" + (" (cached)" if t.get("cached") else "")
        table.add_row(name, r.get("summary", ""), main, *[_fmt(m.get(s)) for s in secondary],
                      str(r["n"]), _fmt(u["input_tokens"]["mean"], 1), _fmt(u["output_tokens"]["mean"], 1),
                      _fmt(u["latency_s"]["mean"]), train)
    return table
