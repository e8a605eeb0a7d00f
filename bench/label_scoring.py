"""Benchmark: three ways to classify with an LM, side by side in one run on the same prompts and model.

(a) shared-prefix label scoring (harness.lm.hf.TransformersLM.score_choices): each prompt runs once, every label is
    scored from its KV cache, and the token prefix all prompts share (instruction + demonstrations) runs once;
(b) naive scoring: one full forward pass per (prompt, label + end of turn) pair, batched over labels (the lm-eval
    approach);
(c) generate-and-parse: greedy generation, then the harness's label parser;
(d) lm-evaluation-harness (the peer, when `lm_eval` is importable; skipped with a line otherwise): its HFLM's
    loglikelihood on the same (prompt, label + end of turn) pairs, in this process, at --lm-eval-batch.

Prints examples/s of each, (a)/(b), (a)/(c) and (a)/(d) speed-ups, agreement of (a) with (b) and (d), and (c)'s
invalid rate; and the accuracy of scoring the label tokens alone, without the end of turn (as before issue 20).

Then the whole process, as a user runs each tool (imports, model load, checks, report: wall clock of a fresh
process), on the prompt a user gets by default: `harness task=T strategies=[prompt_only]` (shots auto, contextual
calibration, the data checks and the report included), and the `lm_eval` command on a multiple_choice task whose
documents are the exact prompts that run wrote (predictions.jsonl) and whose choices are label + end of turn
(target_delimiter ""). Each in its own fresh process, one after the other; prints both times and the ratio.
Usage: python bench/label_scoring.py [--n 40] [--shots 0 10] [--process-n 130] [--lm-eval-batch 8]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from harness.lm import packaged
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


def argmaxes(table: list[list[float]]) -> list[int]:
    """Each row's best label index."""
    return [max(range(len(row)), key=row.__getitem__) for row in table]


def agreement(table: list[list[float]], other: list[list[float]]) -> tuple[float, float]:
    """Share of rows whose best label is the same in both score tables, and the largest |score difference|."""
    same = sum(a == b for a, b in zip(argmaxes(table), argmaxes(other))) / len(table)
    return same, max(abs(x - y) for r1, r2 in zip(table, other) for x, y in zip(r1, r2))


def lm_eval_scores(model_dir: str, pairs: list[tuple[str, str]], batch: int):
    """lm-evaluation-harness's HFLM log-likelihoods of (context, continuation) pairs; (model load s, scoring s)."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    t = time.perf_counter()
    peer = HFLM(pretrained=model_dir, device="cpu", dtype="float32", batch_size=batch)
    t_load = time.perf_counter() - t
    requests = [Instance(request_type="loglikelihood", doc={}, arguments=pair, idx=i) for i, pair in enumerate(pairs)]
    t = time.perf_counter()
    out = [ll for ll, _greedy in peer.loglikelihood(requests, disable_tqdm=True)]
    return out, t_load, time.perf_counter() - t


def whole_process(args, lm: TransformersLM, labels: list[str], model_dir: str, have_peer: bool) -> None:
    """Wall clock of `harness` and of `lm_eval`, each a fresh process, on the harness's default prompts."""
    bindir = Path(sys.executable).parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cmd = [str(bindir / "harness"), f"task={args.task}", "strategies=[prompt_only]", f"model.name_or_path={args.model}",
               f"results_dir={tmp / 'harness'}"] + ([f"limit.heldout={args.process_n}"] if args.process_n else [])
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_harness = time.perf_counter() - t
        rows = [json.loads(line) for line in (tmp / "harness" / "prompt_only" / "predictions.jsonl").open()]
        task = load_task(ROOT / "tasks" / args.task)
        gold = {ex.id: task.labels.index(ex.target) for ex in task.heldout}
        acc_harness = sum(r["output"] == task.labels[gold[r["id"]]] for r in rows) / len(rows)
        if not have_peer:
            print(f"\nwhole process: harness {t_harness:.1f} s for {len(rows)} examples; lm_eval is not installed "
                  f"(pip install lm_eval==0.4.13, or the project's bench extra), so no peer ratio")
            return
        docs = tmp / "docs.jsonl"
        choices = [lm.separator + label + lm.answer_end for label in labels]
        docs.write_text("".join(json.dumps({"prompt": r["prompt"], "choices": choices, "gold": gold[r["id"]]}) + "\n"
                                for r in rows))
        (tmp / "tasks").mkdir()
        (tmp / "tasks" / "harness_bench.yaml").write_text(
            "task: harness_label_bench\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {docs}\ntest_split: test\noutput_type: multiple_choice\ndoc_to_text: prompt\n"
            "doc_to_choice: choices\ndoc_to_target: gold\ntarget_delimiter: \"\"\nmetric_list:\n  - metric: acc\n")
        cmd = [str(bindir / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={model_dir},dtype=float32",
               "--tasks", "harness_label_bench", "--include_path", str(tmp / "tasks"), "--device", "cpu",
               "--batch_size", str(args.lm_eval_batch), "--output_path", str(tmp / "lm_eval")]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t_peer = time.perf_counter() - t
        result = json.loads(next((tmp / "lm_eval").rglob("results_*.json")).read_text())
        acc_peer = result["results"]["harness_label_bench"]["acc,none"]
    n = len(rows)
    print(f"\nwhole process on the default prompt ({n} held-out examples, each tool a fresh process):")
    print(f"  harness prompt_only (calibrated, checks, report) : {t_harness:7.1f} s  {n / t_harness:6.2f} examples/s  "
          f"accuracy {acc_harness:.3f}")
    print(f"  lm_eval multiple_choice, batch {args.lm_eval_batch:<2}              : {t_peer:7.1f} s  "
          f"{n / t_peer:6.2f} examples/s  accuracy {acc_peer:.3f} (uncalibrated)")
    print(f"  speed-up harness / lm_eval = {t_peer / t_harness:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="support_triage")
    ap.add_argument("--n", type=int, default=40, help="held-out examples per method")
    ap.add_argument("--shots", type=int, nargs="+", default=[0, 10])
    ap.add_argument("--model", default="packaged:smollm2-135m-instruct")
    ap.add_argument("--process-n", type=int, default=None, help="held-out examples of the whole-process runs "
                    "(default: all)")
    ap.add_argument("--lm-eval-batch", type=int, default=8)
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
    model_dir = packaged.resolve(args.model, cache)
    have_peer = importlib.util.find_spec("lm_eval") is not None
    if not have_peer:
        print("(d) lm-evaluation-harness: skipped, lm_eval is not importable (pip install lm_eval==0.4.13)")
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

        if have_peer:
            flat, t_peer_load, t_peer = lm_eval_scores(
                model_dir, [(p, lm.separator + label + lm.answer_end) for p in prompts for label in labels],
                args.lm_eval_batch)
            peer = [flat[i:i + len(labels)] for i in range(0, len(flat), len(labels))]

        argmax, argmax_naive = argmaxes(fast), argmaxes(slow)
        agree, max_diff = agreement(fast, slow)
        parsed = [parse_label(g.text, task.labels, task.label_text) for g in gens]
        invalid = sum(p is None for p in parsed) / len(prompts)
        gold = [ex.target for ex in task.heldout]
        acc = lambda preds: sum(p == g for p, g in zip(preds, gold)) / len(gold)  # noqa: E731
        n = len(prompts)
        print(f"\n{shots}-shot prompts, {mean_tokens:.0f} tokens on average")
        print(f"  (a) shared-prefix scoring : {n / t_fast:7.2f} examples/s  accuracy {acc([task.labels[i] for i in argmax]):.3f}")
        print(f"  (b) naive pair scoring    : {n / t_naive:7.2f} examples/s  accuracy {acc([task.labels[i] for i in argmax_naive]):.3f}")
        argmax_old = argmaxes(label_only)
        changed = sum(a != b for a, b in zip(argmax, argmax_old)) / len(prompts)
        print(f"      label tokens only     :                    accuracy {acc([task.labels[i] for i in argmax_old]):.3f}  "
              f"(without the end of turn; {changed:.1%} of answers differ from (a))")
        print(f"  (c) generate and parse    : {n / t_gen:7.2f} examples/s  accuracy {acc(parsed):.3f}  "
              f"invalid outputs {invalid:.1%}")
        if have_peer:
            argmax_peer = argmaxes(peer)
            agree_peer, diff_peer = agreement(fast, peer)
            print(f"  (d) lm-evaluation-harness : {n / t_peer:7.2f} examples/s  accuracy "
                  f"{acc([task.labels[i] for i in argmax_peer]):.3f}  (HFLM batch {args.lm_eval_batch}, model load "
                  f"{t_peer_load:.1f} s not counted; (a)/(d) = {t_peer / t_fast:.1f}x, argmax agreement "
                  f"{agree_peer:.1%}, max |logprob difference| {diff_peer:.2e})")
        print(f"  speed-up (a)/(b) = {t_naive / t_fast:.1f}x   (a)/(c) = {t_gen / t_fast:.1f}x   "
              f"argmax agreement (a) vs (b) = {agree:.1%}   max |logprob difference| = {max_diff:.2e}")
    whole_process(args, lm, labels, model_dir, have_peer)


if __name__ == "__main__":
    main()
