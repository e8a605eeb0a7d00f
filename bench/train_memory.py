"""Benchmark: a fine-tuned arm's training memory and speed under `max_step_tokens`, side by side in one run.

One `harness` process per setting (so each peak RSS is its own), the same arm, task, model and settings, each with
a fresh adapter cache (the converted model, embeddings and indexes are shared through links, so nothing else is
redone): `whole` never splits a batch (the trainer before micro-batches), a number runs each batch over that many
padded tokens (rows x longest row) as micro-batches. The gradient is the same, summed in another order, so the dev
loss should agree to about 1e-5. Prints per setting the process's peak RSS at the end of training (the trainer's
own `peak_memory_mb`), training tokens/s, training seconds and the dev loss of each epoch, then each setting
against `whole`.

Default: the knowledge task of the bench (covid_faq) on gemma3-270m with the combined arm at the bench's settings
(2 passages in 384 tokens, 1 epoch), where whole batches took the process to 23.3 GB of a 24 GB machine.

Usage: python bench/train_memory.py [--task covid_faq] [--model packaged:gemma3-270m] [--arm combined]
       [--settings whole 4096 2048] [--out bench_results/train_memory] [--set strategies.combined.k=2 ...]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # noqa: A001
COVID_COMBINED = ["strategies.combined.k=2", "strategies.combined.budget_tokens=384", "strategies.combined.epochs=1",
                  "strategies.combined.max_new_tokens=64"]  # bench/real_tasks.py's covid_faq settings for combined
WHOLE = 10**9


def cache_for(out: Path, setting: str) -> Path:
    """A cache folder whose adapters are its own and whose models, embeddings and indexes are the user's."""
    shared = Path(os.path.expanduser(os.environ.get("HARNESS_CACHE", "~/.cache/harness")))
    cache = out / f"cache_{setting}"
    shutil.rmtree(cache, ignore_errors=True)
    cache.mkdir(parents=True)
    for name in ("models", "gguf", "embeddings", "indexes"):
        (shared / name).mkdir(parents=True, exist_ok=True)
        (cache / name).symlink_to(shared / name)
    return cache


def run(args, setting: str) -> dict:
    budget = WHOLE if setting == "whole" else int(setting)
    folder = args.out / f"run_{setting}"
    shutil.rmtree(folder, ignore_errors=True)
    cmd = [sys.executable, "-m", "harness.cli", f"task={args.task}", f"results_dir={folder}",
           f"strategies=[{args.arm}]", f"model.name_or_path={args.model}", f"limit.heldout={args.heldout}",
           f"cache_dir={cache_for(args.out, setting)}", "forgetting.control=none",
           f"strategies.{args.arm}.max_step_tokens={budget}", *args.set]
    start = time.perf_counter()
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    prepare = folder / args.arm / "prepare.json"
    if not prepare.exists():
        raise SystemExit(f"{setting}: the run failed (exit {r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    training = json.loads(prepare.read_text())["report"]["training"]
    return {"setting": setting, "peak_gb": training["peak_memory_mb"] / 1024, "tokens_per_s": training["tokens_per_s"],
            "train_s": training["train_steps_s"], "dev_loss": [h["dev_loss"] for h in training["history"]],
            "tokens_seen": training["tokens_seen"], "wall_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--task", default="covid_faq")
    parser.add_argument("--model", default="packaged:gemma3-270m")
    parser.add_argument("--arm", default="combined")
    parser.add_argument("--heldout", type=int, default=2, help="held-out questions predicted (the bench is training)")
    parser.add_argument("--settings", nargs="+", default=["whole", "4096", "2048"])
    parser.add_argument("--set", nargs="*", default=None, help="extra overrides (default: the covid combined ones)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_results" / "train_memory")
    args = parser.parse_args()
    if args.set is None:
        args.set = COVID_COMBINED if (args.task, args.arm) == ("covid_faq", "combined") else []
    rows = []
    for setting in args.settings:
        rows.append(run(args, setting))
        row = rows[-1]
        print(f"{setting:>6}: peak RSS {row['peak_gb']:.1f} GB, {row['tokens_per_s']:.0f} tokens/s, training "
              f"{row['train_s']:.0f} s, dev loss {', '.join(f'{d:.5f}' for d in row['dev_loss'])} "
              f"({row['tokens_seen']} tokens, run {row['wall_s']:.0f} s)")
    base = next((r for r in rows if r["setting"] == "whole"), None)
    if base:
        for row in rows:
            if row is not base:
                print(f"{row['setting']} against whole: peak RSS {row['peak_gb'] - base['peak_gb']:+.1f} GB, "
                      f"tokens/s x{row['tokens_per_s'] / base['tokens_per_s']:.2f}, dev loss "
                      f"{max(abs(a - b) for a, b in zip(row['dev_loss'], base['dev_loss'])):.1e} apart")
    (args.out / "train_memory.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
