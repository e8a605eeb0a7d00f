"""Benchmark: is the prompt-only arm a straw man without contextual calibration? (Zhao et al. 2021)

On the same held-out examples and the same model, scores the prompt-only arm four ways: zero-shot and k-shot, each
with and without contextual calibration (each label's probability divided by its mean probability on content-free
inputs). Prints accuracy, macro-F1, how many distinct labels the arm predicts and the share of its most frequent
prediction (a collapse onto one label shows up there).

Usage: python bench/calibration.py [--tasks support_triage banking77] [--heldout 200] [--shots 10]
(banking77 is read in place from ../shared/datasets through the recipe in tasks/banking77.)
"""

from __future__ import annotations

import argparse
import functools
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

from harness.lm.hf import TransformersLM
from harness.provenance import cpu_info
from harness.scoring import score_arm
from harness.strategy import PrepareContext
from harness.task import load_task
from strategies.prompt_only import PromptOnly

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # noqa: A001


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", nargs="+", default=["support_triage", "banking77"])
    ap.add_argument("--heldout", type=int, default=200, help="stratified held-out subset per task (seed 0)")
    ap.add_argument("--shots", type=int, default=10)
    ap.add_argument("--model", default="packaged:smollm2-135m-instruct")
    args = ap.parse_args()
    cache = Path(os.environ.get("HARNESS_CACHE", "~/.cache/harness")).expanduser()
    lm = TransformersLM(args.model, cache_dir=str(cache))
    print(f"model {args.model} on {cpu_info()}")
    for name in args.tasks:
        task = load_task(ROOT / "tasks" / name, limit_heldout=args.heldout, sample="stratified")
        print(f"\n{name}: {len(task.labels)} labels, held-out {len(task.heldout)}, train {len(task.train)}")
        print(f"{'arm':<28}{'accuracy':>9}{'macro-F1':>10}{'labels used':>13}{'top label share':>17}{'s':>7}")
        for shots in (0, args.shots):
            for calibrate in (False, True):
                arm = PromptOnly(shots=shots, calibrate=calibrate, name="bench")
                start = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    arm.prepare(PrepareContext(task, lm, Path(tmp), cache, 0, lambda *a: (lambda n: None)))
                preds = arm.predict(task.heldout)
                seconds = time.perf_counter() - start
                outputs = [p.output for p in preds]
                result = score_arm(task, task.heldout, outputs)
                counts = Counter(outputs)
                label = f"{shots}-shot" + (" + calibration" if calibrate else "")
                print(f"{label:<28}{result['metrics']['accuracy']:>9.3f}{result['metrics']['macro_f1']:>10.3f}"
                      f"{len(counts):>8} / {len(task.labels):<3}{counts.most_common(1)[0][1] / len(outputs):>15.2f}"
                      f"{seconds:>8.0f}")


if __name__ == "__main__":
    main()
