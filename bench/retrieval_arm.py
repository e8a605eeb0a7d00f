"""Benchmark: the retrieval arm's per-example cost (issue 18, item 4), side by side in one run on the same prompts.

The prompts are the retrieval arm's own (support_triage by default: instruction and label list, then the 5 nearest
train tickets as demonstrations, then the ticket), built for TRAIN examples with each left out of its own
neighbours (the prompts the combined arm trains on), so nothing here reads a held-out example. Each variant scores
every label of every prompt (label scoring, as the arm does on a classification task):

  fp32            the default on this CPU: the token prefix all prompts share (instruction + label list) runs once
                  per call, each prompt's own tokens (demonstrations + ticket) and the labels in one pass per batch;
  fp32, no reuse  the same with the shared prefix recomputed in every row (what the reuse saves);
  fp32, batch 16  model.batch_size=16 instead of 8;
  bf16 autocast   matrix products in bfloat16, weights and norms in fp32 (torch.autocast);
  bf16 weights    model.dtype=bfloat16 (everything in bfloat16; what a user gets with that setting).

Prints seconds per example and the ratio to fp32, and for each variant how its outputs differ from fp32's: the
share of prompts whose best label is the same, and the largest difference of a label's normalised log-probability.
With --profile, the operators that take fp32's time (torch.profiler, 16 prompts).

First, the embedding a run does on a fresh cache, as the demo's arms ask for it (the near-duplicate check: held-out,
then train; the retrieval arm: train, then held-out queries; the embedding classifier: train from the disk cache,
then held-out): each call with its own freshly loaded embedder and nothing remembered (before the shared embedder),
against one process-wide embedder and vector memo (harness.retriever); seconds of each, texts embedded, and whether
the vectors are identical.

Usage: python bench/retrieval_arm.py [--task support_triage] [--n 64]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import tempfile
import time
from pathlib import Path

import torch

from harness.inference import log_softmax
from harness.lm.hf import TransformersLM
from harness.provenance import cpu_info
from harness.retriever import Retriever
from harness.strategy import PrepareContext
from harness.task import load_task
from label_scoring import agreement  # bench/, beside this script
from strategies.retrieval import Retrieval

ROOT = Path(__file__).resolve().parent.parent
MODEL = "packaged:smollm2-135m-instruct"
print = functools.partial(print, flush=True)  # noqa: A001


def timed(lm: TransformersLM, prompts: list[str], labels: list[str], context=contextlib.nullcontext):
    lm.score_choices(prompts[:2], labels)  # warm-up: first-call allocations are not per-example cost
    start = time.perf_counter()
    with context():
        scores = lm.score_choices(prompts, labels)
    return time.perf_counter() - start, [log_softmax(s.logprobs) for s in scores]


def embedding(task) -> None:
    from harness import retriever

    held, train = [ex.input for ex in task.heldout], [ex.input for ex in task.train]
    # one retriever each, in run order: the near-duplicate check (held-out, train), the retrieval arm (train corpus,
    # held-out queries), the embedding classifier (train from the disk cache the retrieval arm wrote, held-out)
    users = [[held, train], [train, held], [held]]
    out = {}
    for name, shared in (("each its own", False), ("shared", True)):
        retriever._LOADED.clear()
        retriever._VECTORS.clear()
        fed, start, vectors = 0, time.perf_counter(), []
        for calls in users:
            if not shared:  # before: a retriever loaded its own embedder and remembered nothing
                retriever._LOADED.clear()
            r = Retriever()
            for texts in calls:
                if not shared:
                    retriever._VECTORS.clear()
                fed += sum(1 for t in dict.fromkeys(texts) if (r.embedder, r.device, t) not in retriever._VECTORS)
                vectors.append(r.encode(texts))
        out[name] = (time.perf_counter() - start, fed, vectors)
    (t0, n0, v0), (t1, n1, v1) = out.values()
    same = all((a == b).all() for a, b in zip(v0, v1))
    print(f"embedding as a demo run asks for it: each retriever its own {t0:.1f} s ({n0} texts, 3 model loads), "
          f"shared {t1:.1f} s ({n1} texts, 1 load): {t0 / t1:.2f}×; vectors identical: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="support_triage")
    ap.add_argument("--n", type=int, default=64, help="train examples whose retrieval prompts are scored")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    cpu = cpu_info()
    print(f"CPU: {cpu.get('model')} ({cpu.get('cores')} cores), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    task = load_task(ROOT / "tasks" / args.task)
    if task.type != "classification":
        raise SystemExit(f"{args.task} is not a classification task: this bench times label scoring")
    embedding(task)
    lm = TransformersLM(MODEL)
    arm = Retrieval(Retriever(), mode="demonstrations", k=5)
    with tempfile.TemporaryDirectory() as tmp:
        arm.prepare(PrepareContext(task, lm, Path(tmp), Path(tmp), 0, lambda d, t: (lambda n=1: None)))
        prompts = arm.prompts.build(task.train[: args.n], exclude_self=True)[0]
    labels = [task.text_of(label) for label in task.labels]
    ids = [lm.encode(p)[0] for p in prompts]
    shared = lm._shared_prefix(ids)
    own = sum(len(i) - shared for i in ids) / len(ids)
    print(f"{args.task}: {len(prompts)} retrieval prompts (train, each left out of its neighbours), {len(labels)} "
          f"labels; shared prefix {shared} tokens, own tokens {own:.0f} per prompt (mean)")

    results: dict[str, tuple[float, list[list[float]]]] = {}
    results["fp32"] = timed(lm, prompts, labels)
    keep = lm._shared_prefix
    lm._shared_prefix = lambda encoded: 0
    results["fp32, no reuse"] = timed(lm, prompts, labels)
    lm._shared_prefix = keep
    batch, lm.batch_size = lm.batch_size, 16
    results["fp32, batch 16"] = timed(lm, prompts, labels)
    lm.batch_size = batch
    results["bf16 autocast"] = timed(lm, prompts, labels, lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    results["bf16 weights"] = timed(TransformersLM(MODEL, dtype="bfloat16"), prompts, labels)

    base_s, base = results["fp32"]
    print(f"\n{'variant':<16} {'s/example':>10} {'vs fp32':>8} {'same best label':>16} {'max |Δ logprob|':>16}")
    for name, (seconds, scores) in results.items():
        share, diff = agreement(scores, base)
        print(f"{name:<16} {seconds / len(prompts):>10.3f} {base_s / seconds:>7.2f}× {round(share * len(base)):>10}/"
              f"{len(base):<5} {diff:>16.3f}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            lm.score_choices(prompts[:16], labels)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


if __name__ == "__main__":
    main()
