"""Benchmark: the lora strategy's trainer against a plain HF Trainer + peft baseline, side by side in one run.

Same model (the packaged SmolLM2-135M-Instruct), same LoRA settings, same data (support_triage's zero-shot training
prompts, the lora arm's compact template), one epoch each, so both see the same real (non-padding) tokens.
- baseline: transformers.Trainer, pad-to-longest batches (right padding), fp32, logits and loss over every position;
- ours: harness.lm.training (length-grouped batches, LM head and loss only at target positions, bf16 autocast where
  the CPU has native bf16).
Each runs in its own process (so peak RSS is its own); times cover the training steps only (trainer.train() for
the baseline, the summed step times for ours: its per-epoch dev evaluation is excluded). Prints real tokens/s of each and the ratio, peak RSS, the CPU
and its bf16 support, and the dev loss each reaches (same evaluation, fp32).

Usage: python bench/lora_train.py [--train 160] [--dev 40]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # noqa: A001
LORA = dict(rank=8, alpha=16, dropout=0.05, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"), learning_rate=1e-3,
            epochs=1, batch_size=8, max_length=512)


def pairs(lm, n_train: int, n_dev: int):
    from harness.prompts import build_messages, target_text, template_from_config
    from harness.task import load_task

    task = load_task(ROOT / "tasks" / "support_triage")
    template = template_from_config("compact")
    make = lambda exs: [(lm.render(build_messages(task, template, ex)), target_text(task, ex.target))  # noqa: E731
                        for ex in exs]
    return make(task.train[:n_train]), make(task.train[n_train:n_train + n_dev])


def dev_loss(model, lm, dev_pairs) -> float:
    import torch

    from harness.lm.training import collate, encode_pairs, target_loss

    data, _ = encode_pairs(lm, dev_pairs, LORA["max_length"])
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(data), 8):
            loss, n = target_loss(model, collate(data[s:s + 8], lm.tokenizer.pad_token_id, "cpu"), True)
            total, count = total + float(loss), count + n
    return total / count


def run_ours(lm, train_pairs, dev_pairs) -> dict:
    from harness.lm.training import TrainConfig, train_lora
    from strategies.lora import lora_defaults  # the rest of the settings: conf/strategies/lora.yaml

    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig.from_settings({**lora_defaults(), **LORA})
        report = train_lora(lm, train_pairs, dev_pairs, cfg, Path(out), seed=0)
        from peft import PeftModel
        import copy
        model = PeftModel.from_pretrained(copy.deepcopy(lm.model), out)
    return {"tokens": report["tokens_seen"], "seconds": report["train_steps_s"], "autocast": report["autocast"],
            "dev_loss": dev_loss(model, lm, dev_pairs)}


def run_baseline(lm, train_pairs, dev_pairs) -> dict:
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from harness.lm.training import encode_pairs

    data, _ = encode_pairs(lm, train_pairs, LORA["max_length"])
    rows = [{"input_ids": e.ids, "attention_mask": [1] * len(e.ids),
             "labels": [-100] * (len(e.ids) - e.target_len) + e.ids[-e.target_len:]} for e in data]
    tokenizer = copy.copy(lm.tokenizer)
    tokenizer.padding_side = "right"
    model = get_peft_model(copy.deepcopy(lm.model).float(), LoraConfig(
        r=LORA["rank"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
        target_modules=list(LORA["target_modules"]), task_type="CAUSAL_LM"))
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, per_device_train_batch_size=LORA["batch_size"], num_train_epochs=1,
                                 learning_rate=LORA["learning_rate"], warmup_steps=max(1, round(0.06 * len(rows) / LORA["batch_size"])), lr_scheduler_type="linear",
                                 report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True, seed=0,
                                 disable_tqdm=True)
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorForSeq2Seq(tokenizer, padding="longest", label_pad_token_id=-100))
        start = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - start
    torch.set_grad_enabled(True)
    return {"tokens": sum(len(r["input_ids"]) for r in rows), "seconds": seconds, "autocast": "no (fp32)",
            "dev_loss": dev_loss(model, lm, dev_pairs)}


def child(which: str, n_train: int, n_dev: int) -> None:
    from harness.lm.hf import TransformersLM

    lm = TransformersLM("packaged:smollm2-135m-instruct",
                        cache_dir=os.environ.get("HARNESS_CACHE", str(Path.home() / ".cache" / "harness")))
    train_pairs, dev_pairs = pairs(lm, n_train, n_dev)
    result = (run_ours if which == "ours" else run_baseline)(lm, train_pairs, dev_pairs)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=160)
    ap.add_argument("--dev", type=int, default=40)
    ap.add_argument("--child", choices=["ours", "baseline"])
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.train, args.dev)
    from harness.lm.training import cpu_has_native_bf16
    from harness.provenance import cpu_info

    cpu = cpu_info()
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, native bf16 (avx512_bf16/AMX): {cpu_has_native_bf16()}; "
          f"{args.train} train / {args.dev} dev support_triage examples, one epoch, LoRA r={LORA['rank']}")
    results = {}
    for which in ("baseline", "ours"):
        out = subprocess.run([sys.executable, __file__, "--child", which, "--train", str(args.train),
                              "--dev", str(args.dev)], capture_output=True, text=True)
        line = next((x for x in out.stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"{which} failed:\n{out.stderr[-3000:]}")
        results[which] = json.loads(line[7:])
        r = results[which]
        print(f"  {which:8s}: {r['tokens']} real tokens in {r['seconds']:.1f} s = {r['tokens'] / r['seconds']:.0f} "
              f"tokens/s, autocast {r['autocast']}, peak RSS {r['peak_rss_mb']:.0f} MB, dev loss {r['dev_loss']:.4f}")
    b, o = results["baseline"], results["ours"]
    print(f"speed-up: {(o['tokens'] / o['seconds']) / (b['tokens'] / b['seconds']):.2f}x real tokens/s; "
          f"dev loss ours {o['dev_loss']:.4f} vs baseline {b['dev_loss']:.4f}")


if __name__ == "__main__":
    main()
