"""Benchmark: three ways to classify with an LM, side by side in one run on the same prompts and model.

(a) shared-prefix label scoring (harness.lm.hf.TransformersLM.score_choices): each prompt runs once, every label is
    scored from its KV cache, and the token prefix all prompts share (instruction + demonstrations) runs once;
(b) naive scoring: one full forward pass per (prompt, label + end of turn) pair, batched over labels (the lm-eval
    approach);
(c) generate-and-parse: greedy generation, then the harness's label parser.

Prints examples/s of each, (a)/(b) and (a)/(c) speed-ups, agreement of (a) with (b), and (c)'s invalid rate; and the
accuracy of scoring the label tokens alone, without the end of turn (as before issue 20).
Usage: python bench/label_scoring.py [--n 40] [--shots 0 10]
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

import torch

from harness.lm.hf import TransformersLM
from harness.prompts import PromptTemplate, build_messages, pick_demos
from harness.provenance import cpu_info
from harness.kinds.classification import parse_label
from harness.task import load_task

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # noqa: A001 (progress visible when piped)


@torch.inference_mode()
def naive_scores(lm: TransformersLM, prompts: list[str], labels: list[str]) -> list[list[float]]:
    """One forward pass per (prompt, label) pair; the pairs of one prompt go in one right-padded batch. A label is
    its whole answer: its tokens and the terminator the model writes after an answer (lm.answer_end)."""
    label_ids = [lm.answer_ids(label) for label in labels]
    pad = lm.tokenizer.pad_token_id
    out = []
    for prompt in prompts:
        p = lm.encode(prompt)[0]
        seqs = [p + c for c in label_ids]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
        logits = lm.model(input_ids=ids, attention_mask=mask).logits  # every position, as lm-eval computes them
        logp = torch.log_softmax(logits[:, len(p) - 1:].float(), -1)  # normalised only where labels are read
        out.append([sum(logp[row, j, t].item() for j, t in enumerate(c)) for row, c in enumerate(label_ids)])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="support_triage")
    ap.add_argument("--n", type=int, default=40, help="held-out examples per method")
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 10])
    ap.add_argument("--model", default="packaged:smollm2-135m-instruct")
    args = ap.parse_args()
    cache = Path(os.environ.get("HARNESS_CACHE", "~/.cache/harness")).expanduser()
    lm = TransformersLM(args.model, cache_dir=str(cache))
    task = load_task(ROOT / "tasks" / args.task, limit_heldout=args.n)
    labels = [task.text_of(label) for label in task.labels]
    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({cpu['cores']} cores, avx512_bf16={cpu['avx512_bf16']}), torch threads "
          f"{torch.get_num_threads()}, model {args.model}, task {task.name}, n={len(task.heldout)}, "
          f"{len(labels)} labels")
    lm.score_choices([lm.render(build_messages(task, PromptTemplate(), task.heldout[0]))], labels)  # warm-up
    for shots in args.shots:
        demos = pick_demos(task, shots, seed=0)
        prompts = [lm.render(build_messages(task, PromptTemplate(), ex, demos)) for ex in task.heldout]
        mean_tokens = sum(lm.count_tokens(p) for p in prompts) / len(prompts)

        t = time.perf_counter()
        fast = [s.logprobs for s in lm.score_choices(prompts, labels)]
        t_fast = time.perf_counter() - t
        t = time.perf_counter()
        slow = naive_scores(lm, prompts, labels)
        t_naive = time.perf_counter() - t
        end, lm.answer_end = lm.answer_end, ""  # the label's tokens only (scoring before issue 20), for comparison
        label_only = [s.logprobs for s in lm.score_choices(prompts, labels)]
        lm.answer_end = end
        t = time.perf_counter()
        gens = lm.generate(prompts, max_new_tokens=8)
        t_gen = time.perf_counter() - t

        argmax = [max(range(len(labels)), key=row.__getitem__) for row in fast]
        argmax_naive = [max(range(len(labels)), key=row.__getitem__) for row in slow]
        agree = sum(a == b for a, b in zip(argmax, argmax_naive)) / len(prompts)
        max_diff = max(abs(x - y) for r1, r2 in zip(fast, slow) for x, y in zip(r1, r2))
        parsed = [parse_label(g.text, task.labels, task.label_text) for g in gens]
        invalid = sum(p is None for p in parsed) / len(prompts)
        gold = [ex.target for ex in task.heldout]
        acc = lambda preds: sum(p == g for p, g in zip(preds, gold)) / len(gold)  # noqa: E731
        n = len(prompts)
        print(f"\n{shots}-shot prompts, {mean_tokens:.0f} tokens on average")
        print(f"  (a) shared-prefix scoring : {n / t_fast:7.2f} examples/s  accuracy {acc([task.labels[i] for i in argmax]):.3f}")
        print(f"  (b) naive pair scoring    : {n / t_naive:7.2f} examples/s  accuracy {acc([task.labels[i] for i in argmax_naive]):.3f}")
        argmax_old = [max(range(len(labels)), key=row.__getitem__) for row in label_only]
        changed = sum(a != b for a, b in zip(argmax, argmax_old)) / len(prompts)
        print(f"      label tokens only     :                    accuracy {acc([task.labels[i] for i in argmax_old]):.3f}  "
              f"(without the end of turn; {changed:.1%} of answers differ from (a))")
        print(f"  (c) generate and parse    : {n / t_gen:7.2f} examples/s  accuracy {acc(parsed):.3f}  "
              f"invalid outputs {invalid:.1%}")
        print(f"  speed-up (a)/(b) = {t_naive / t_fast:.1f}x   (a)/(c) = {t_gen / t_fast:.1f}x   "
              f"argmax agreement (a) vs (b) = {agree:.1%}   max |logprob difference| = {max_diff:.2e}")


if __name__ == "__main__":
    main()
