"""The one terminal console and its status line. Every layer may print a status or a warning through it; the report
layer (harness.report.display) formats tables and panels on the same console. Backends, inference and strategies
import this module, never the report package."""
from __future__ import annotations

from rich.console import Console

console = Console()
if not console.is_terminal:  # logs and CI: wide enough that the comparison table is not squeezed
    console = Console(width=160)


def status(message: str) -> None:
    """A dim one-line status (rich markup allowed: callers escape what they did not write)."""
    console.print(f"[dim]• {message}[/dim]")
