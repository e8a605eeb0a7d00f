"""What produced a run: code version, package versions, data hashes, seeds, machine. Written to run.json."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

PACKAGES = ("torch", "transformers", "peft", "accelerate", "sentence-transformers", "faiss-cpu", "hydra-core",
            "numpy", "scipy", "rich", "tokenizers", "gguf")


def _git(*args: str, cwd: Path) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_info() -> dict:
    model, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model in ("unknown", "", "x86_64"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"model": model, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags}


def collect(code_dir: Path) -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    status = _git("status", "--porcelain", "--untracked-files=no", cwd=code_dir)
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "git": {"sha": _git("rev-parse", "HEAD", cwd=code_dir), "dirty": bool(status) if status is not None else None},
        "python": platform.python_version(),
        "packages": versions,
        "machine": {"platform": platform.platform(), "cpu": cpu_info()},  # the device is in the model record
    }
