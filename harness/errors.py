"""User-facing errors: one line naming the file, line and field, never a traceback."""

from __future__ import annotations

from pathlib import Path


class HarnessError(Exception):
    """An error caused by the user's input (task data, config, overrides), reported as one line."""

    def __init__(self, message: str, *, file: str | Path | None = None, line: int | None = None,
                 field: str | None = None):
        self.file, self.line, self.field, self.reason = file, line, field, message
        where = ""
        if file is not None:
            where = str(file) + (f":{line}" if line is not None else "") + ": "
        what = f"field '{field}': " if field else ""
        super().__init__(f"{where}{what}{message}")


class TaskError(HarnessError):
    """Task definition or task data is invalid."""


class ConfigError(HarnessError):
    """A configuration value or override is invalid."""
