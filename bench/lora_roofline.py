"""Benchmark: where the LoRA trainer's time goes, against the CPU's own matrix-product rate (issue 18's "why").

`bench/lora_train.py` measures ours at about 2× the tokens/s of transformers' Trainer (bf16, length grouping) on
the same model and data. This script says how much further the same arithmetic could go. On the same batches
(support_triage or snips train prompts, length-grouped, batch 8, LoRA r=8 on every linear layer, bf16 autocast
where the CPU has native bf16) it runs, one after the other in one process:
- ours: a step as `harness.lm.train_data.target_loss` takes it (the shared prompt prefix once per batch, left
  padding, the LM head at target positions only, the frozen weights held in bf16), then AdamW;
- hf-style: the step transformers' Trainer takes with a causal LM (the whole sequence per row, right padding,
  `labels` with -100 on the prompt: logits at every position, the model's own loss), then AdamW.
For each it counts the floating-point operations of every step with torch's FlopCounterMode (matrix products and
attention, forward and backward) and times the steps (the first two left out: warm-up). Then it times the
model's own linear-layer shapes (tokens × 576 by 576 × 1536 and back) in the autocast dtype: the rate the
arithmetic itself reaches on this CPU. Prints, per engine, GFLOP per real token, tokens/s, the achieved GFLOP/s
and its share of the matrix-product rate, and what 3× the hf-style tokens/s would need.

Usage: python bench/lora_roofline.py [--task support_triage|snips] [--steps 12] [--dropout 0.05] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
print = functools.partial(print, flush=True)  # noqa: A001


def step_fn(engine: str, model, lm, prefix):
    """One training step's loss for `engine` on a list of encoded examples."""
    from lora_train import trainer_rows

    from harness.lm.train_data import collate, target_loss

    def ours(examples):
        batch = collate(examples, lm.tokenizer.pad_token_id, "cpu", prefix)
        loss, n = target_loss(model, batch, True)
        return loss / max(1, n)

    def hf(examples):  # the rows and right-padding collator bench/lora_train.py gives Trainer
        rows, collator = trainer_rows(lm, examples)
        return model(**collator(rows)).loss

    return ours if engine == "ours" else hf


def profile_steps(run, batches_: list, top: int = 8) -> None:
    """Self time per operator over the given steps (torch.profiler), the `top` largest as shares."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for examples in batches_:
            run(examples)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    print("  " + ", ".join(f"{e.key} {e.self_cpu_time_total / total:.0%}" for e in events[:top]))


def measure(engine: str, lm, cfg, data, order, prefix, autocast: bool, profiled: bool = False) -> dict:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from harness.lm.training import build_trainable, frozen_weights_in_bf16

    torch.manual_seed(0)
    model = build_trainable(lm, cfg, False)
    if engine == "ours" and autocast:  # as train_lora does; Trainer keeps fp32 weights under its bf16 autocast
        frozen_weights_in_bf16(model)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    step = step_fn(engine, model, lm, prefix)

    def run(examples):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss = step(examples)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    flops, seconds, tokens = [], [], []
    for i, idx in enumerate(order):
        examples = [data[j] for j in idx]
        tokens.append(sum(len(e.ids) for e in examples))  # real (non-padding) tokens, as bench/lora_train.py counts
        with FlopCounterMode(display=False) as counter:
            run(examples)
        flops.append(counter.get_total_flops())
        start = time.perf_counter()
        run(examples)
        seconds.append(time.perf_counter() - start)
    if profiled:
        print(f"{engine}: self time by operator over {len(order) - 2} steps")
        profile_steps(run, [[data[j] for j in idx] for idx in order[2:]])
    keep = slice(2, None)  # warm-up steps left out of the rate
    t, f, s = sum(tokens[keep]), sum(flops[keep]), sum(seconds[keep])
    del model, optimizer
    return {"tokens_per_s": t / s, "gflop_per_token": f / t / 1e9, "gflop_per_s": f / s / 1e9, "steps": len(order) - 2}


def matmul_rate(tokens: int, hidden: int, inner: int, autocast: bool, repeats: int = 30) -> float:
    """GFLOP/s of the model's MLP shapes (tokens × hidden by hidden × inner, then back) in the training dtype."""
    import torch

    dtype = torch.bfloat16 if autocast else torch.float32
    x = torch.randn(tokens, hidden, dtype=dtype)
    up, down = torch.randn(inner, hidden, dtype=dtype), torch.randn(hidden, inner, dtype=dtype)
    for _ in range(3):
        torch.nn.functional.linear(torch.nn.functional.linear(x, up), down)
    start = time.perf_counter()
    for _ in range(repeats):
        torch.nn.functional.linear(torch.nn.functional.linear(x, up), down)
    return repeats * 2 * 2 * tokens * hidden * inner / (time.perf_counter() - start) / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="support_triage")
    ap.add_argument("--steps", type=int, default=12, help="batches per engine (the first two are warm-up)")
    ap.add_argument("--dropout", type=float, help="LoRA dropout (default: lora.yaml's)")
    ap.add_argument("--profile", action="store_true", help="also print each engine's largest operators by self time "
                    "(a third pass over the steps, after the timed one)")
    args = ap.parse_args()
    from lora_train import pairs, settings

    from harness.lm.hf import TransformersLM
    from harness.lm.training import TrainConfig, autocast_dtype, batches, encode_pairs, shared_prefix
    from harness.provenance import cpu_info
    import torch

    lm = TransformersLM("packaged:smollm2-135m-instruct",
                        cache_dir=os.environ.get("HARNESS_CACHE", str(Path.home() / ".cache" / "harness")))
    cfg = TrainConfig.from_settings({**settings(1), **({} if args.dropout is None else {"dropout": args.dropout})})
    autocast = autocast_dtype(cfg.dtype, torch.device("cpu")) == "bf16"
    train_pairs, _ = pairs(lm, args.task, 160, 0)
    data, _ = encode_pairs(lm, train_pairs, cfg.max_length)
    prefix = shared_prefix(data) if cfg.shared_prefix else []
    order = batches(data, cfg.batch_size, random.Random(0), cfg.group_by_length)[:args.steps]
    cpu = cpu_info()
    mean_len = sum(len(data[j].ids) for idx in order for j in idx) / sum(len(idx) for idx in order)
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"{args.task}, {len(order)} batches of {cfg.batch_size} ({mean_len:.0f} tokens per example, shared prefix "
          f"{len(prefix)}), autocast {'bf16' if autocast else 'off (fp32)'}, LoRA dropout {cfg.dropout}")
    results = {engine: measure(engine, lm, cfg, data, order, prefix, autocast, args.profile)
               for engine in ("ours", "hf")}
    config = lm.model.config
    rows = int(cfg.batch_size * mean_len)
    peak = matmul_rate(rows, config.hidden_size, config.intermediate_size, autocast)
    print(f"matrix products of the model's MLP shapes ({rows} x {config.hidden_size} by {config.hidden_size} x "
          f"{config.intermediate_size} and back, {'bf16' if autocast else 'fp32'}): {peak:.0f} GFLOP/s")
    print("| engine | GFLOP per real token | real tokens/s | achieved GFLOP/s | share of the matrix-product rate |")
    print("|---|---:|---:|---:|---:|")
    for engine, r in results.items():
        print(f"| {engine} | {r['gflop_per_token']:.3f} | {r['tokens_per_s']:.0f} | {r['gflop_per_s']:.0f} | "
              f"{r['gflop_per_s'] / peak:.0%} |")
    ours, hf = results["ours"], results["hf"]
    print(f"ours vs hf-style: {ours['tokens_per_s'] / hf['tokens_per_s']:.2f}x tokens/s = "
          f"{hf['gflop_per_token'] / ours['gflop_per_token']:.2f}x fewer FLOPs per token x "
          f"{ours['gflop_per_s'] / hf['gflop_per_s']:.2f}x the FLOP rate")
    need = 3 * hf["tokens_per_s"] * ours["gflop_per_token"]
    print(f"3x hf-style tokens/s at ours' FLOPs per token needs {need:.0f} GFLOP/s: {need / peak:.0%} of the "
          f"matrix-product rate (ours reaches {ours['gflop_per_s'] / peak:.0%})")


if __name__ == "__main__":
    main()
