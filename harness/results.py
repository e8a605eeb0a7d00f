"""Results on disk: atomic JSON writes and an append-only predictions log that survives kill -9."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable


def write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to a temporary file in the same folder, then rename it into place: a reader (or a full disk, or
    a kill) sees the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary file in the same folder, then rename it into place."""
    write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n").encode("utf-8"))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


class PredictionLog:
    """predictions.jsonl: one line per held-out id. Each batch is appended with a single write and fsync;
    on open, a torn last line (a kill mid-write) is cut off and duplicate ids are never written."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, dict] = {}
        if self.path.exists():
            self._recover()

    def _recover(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end != len(data):  # torn final line: drop it, it will be predicted again
            with open(self.path, "r+b") as f:
                f.truncate(end)
                f.flush()
                os.fsync(f.fileno())
            data = data[:end]
        for line in data.decode("utf-8").splitlines():
            if line.strip():
                rec = json.loads(line)
                self.records.setdefault(rec["id"], rec)

    def done(self) -> set[str]:
        return set(self.records)

    def append(self, records: Iterable[dict]) -> None:
        new = [r for r in records if r["id"] not in self.records]
        if not new:
            return
        payload = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in new).encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            view = memoryview(payload)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        for r in new:
            self.records[r["id"]] = r
