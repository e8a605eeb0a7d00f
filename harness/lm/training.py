"""LoRA training for the transformers backend (part of the lm layer: strategies ask the model wrapper to train).

peft adapters, torch's AdamW with transformers' linear warm-up schedule, accelerate for device placement and bf16
autocast. The CPU levers measured on this machine class: length-grouped batches (little padding), the LM head and
the loss computed only at target positions (left padding puts every target at the end of its row), and bf16
autocast where the CPU has native bf16. Loss is on the target tokens only; the prompt is exactly the inference
prompt.

The settings: harness.lm.train_config; the examples as token ids, their batches and loss: harness.lm.train_data;
the epochs, dev evaluation and stopping rule: harness.lm.train_loop.
"""

from __future__ import annotations

import copy
import random
import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import torch
from peft import LoraConfig, get_peft_model
from transformers.utils import logging as hf_logging

from harness.errors import ConfigError
from harness.lm.train_config import TrainConfig, autocast_dtype, cpu_has_native_bf16  # noqa: F401
from harness.lm.train_data import Encoded, batches, collate, encode_pairs, shared_prefix, target_loss  # noqa: F401
from harness.lm.train_loop import DevMetric, EpochPlan, Fit, TrainingDiverged, criterion, fit_epochs  # noqa: F401

# TrainConfig, TrainingDiverged and the data helpers are imported from here by the backend, tests and benchmarks.


def load_4bit_base(lm):
    """QLoRA: the base model loaded again in 4-bit NF4 (bitsandbytes, CUDA only), prepared for k-bit training."""
    if lm.device.type != "cuda":
        raise ConfigError("QLoRA (4-bit base) needs a CUDA GPU; set qlora: false on CPU", field="qlora")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("QLoRA needs the bitsandbytes package (pip install bitsandbytes)", field="qlora") from None
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(lm.path, quantization_config=quant, device_map={"": lm.device.index or 0})
    return prepare_model_for_kbit_training(model)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def build_trainable(lm, cfg: TrainConfig, full: bool):
    """The model to train: the base wrapped in a peft LoRA adapter, or (full) a float32 copy of the whole base with
    every weight trainable."""
    device = lm.device
    if full:
        model = copy.deepcopy(lm.model).float()  # AdamW on fp32 weights (strategies/full_ft.py estimates the memory)
        model.config.use_cache = False
        return model.requires_grad_(True)
    if cfg.qlora:
        base = load_4bit_base(lm)
    else:
        base = copy.deepcopy(lm.model).float() if device.type == "cpu" else copy.deepcopy(lm.model)
    base.config.use_cache = False
    peft_cfg = LoraConfig(r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")
    try:
        return get_peft_model(base, peft_cfg)
    except ValueError as e:
        raise ConfigError(f"{e}", field="target_modules") from None


def frozen_weights_in_bf16(model) -> int:
    """Hold the frozen weights of the adapted linear layers in bf16; returns how many were converted.

    Under bf16 autocast every matrix product casts an fp32 weight to bf16 on each call, and autocast caches only
    the casts of weights that train, so the frozen base weights were copied twice per step (the shared prefix's
    pass and the batch's). Stored in bf16 they give the very same products (the same round-to-nearest cast, done
    once), with half their memory. Embeddings and norms stay fp32 (they are not matrix products under autocast)."""
    converted = 0
    for module in model.modules():
        base = getattr(module, "base_layer", None)
        if isinstance(base, torch.nn.Linear):
            for param in (base.weight, base.bias):
                if param is not None and not param.requires_grad and param.dtype == torch.float32:
                    param.data = param.data.to(torch.bfloat16)
                    converted += param.numel()
    return converted


def train_lora(lm, train_pairs: Sequence[tuple[str, str]], dev_pairs: Sequence[tuple[str, str]], cfg: TrainConfig,
               out_dir: Path, seed: int, progress: Callable[[str, int], Callable[[int], None]] | None = None,
               dev_metric: DevMetric | None = None, full: bool = False) -> dict:
    """Train a LoRA adapter (or, with full, every weight of the model) on (prompt, target) pairs, keep the epoch with
    the best dev loss (or dev metric), stop early, save the adapter (safetensors + peft config) or the whole model
    to out_dir. Returns the training report.

    Epochs: a number trains at most that many (linear decay after warm-up, stopping after `patience` epochs without
    dev improvement); "auto" trains until the dev criterion has not improved for `patience` epochs, but never
    fewer than `min_steps` optimizer steps and never more than `max_epochs` epochs."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    device = lm.device
    precision = autocast_dtype(cfg.dtype, device)
    model = build_trainable(lm, cfg, full)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    # Only where the trained model itself never predicts outside autocast: a dev metric generates with it.
    in_bf16 = frozen_weights_in_bf16(model) if precision == "bf16" and not full and dev_metric is None else 0
    train, truncated = encode_pairs(lm, train_pairs, cfg.max_length)
    dev, _ = encode_pairs(lm, dev_pairs, cfg.max_length)
    prefix = shared_prefix(list(train) + list(dev)) if cfg.shared_prefix else []
    plan = EpochPlan.of(cfg, len(train))
    fit = Fit.start(lm, model, cfg, precision, plan, prefix)
    kind = "full_ft" if full else "lora"
    start = time.perf_counter()
    label = ("train all weights" if full else "train LoRA") + (f" (≤ {plan.epoch_cap} ep)" if cfg.auto_epochs else "")
    advance = progress(label, plan.steps_per_epoch * plan.epoch_cap) if progress else None
    history, best_state, stop_reason = fit_epochs(fit, train, dev, rng, plan, dev_metric, advance)
    wall = time.perf_counter() - start
    save_best(fit, lm, best_state, out_dir, full)
    best_epoch = min(history, key=lambda r: criterion(r, dev_metric))["epoch"]
    return {
        "config": {**asdict(cfg), "target_modules": list(cfg.target_modules)}, "seed": seed, "method": kind,
        "device": str(device), "autocast": precision, "frozen_weights_bf16": in_bf16, "train_examples": len(train),
        "dev_examples": len(dev),
        "prompts_truncated": truncated, "shared_prefix_tokens": len(prefix), "epochs_run": len(history),
        "best_epoch": best_epoch, "stop_reason": stop_reason, "optimizer_steps": fit.updates,
        "min_steps": plan.floor if cfg.auto_epochs else None, "max_epochs": plan.epoch_cap, "patience": plan.patience,
        "lr_schedule": "warm-up, then constant" if cfg.auto_epochs else "warm-up, then linear decay",
        "history": history, "wall_s": wall, "train_steps_s": fit.step_s, "tokens_seen": fit.tokens_seen,
        "tokens_per_s": fit.tokens_seen / fit.step_s if fit.step_s else None,  # training steps only (no dev evaluation)
        "peak_memory_mb": peak_memory_mb(device), "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda"
        else "process_max_rss", "trainable_parameters": trainable, "total_parameters": total,
        "warnings": training_warnings(history, best_epoch, stop_reason, dev_metric is not None, cfg),
    }


def save_best(fit: Fit, lm, best_state: dict, out_dir: Path, full: bool) -> None:
    """The best epoch's weights, saved: the adapter, or (full) the whole model in the base model's dtype, loadable
    with from_pretrained."""
    unwrapped = fit.unwrapped
    unwrapped.load_state_dict(best_state, strict=False)
    if full:  # no tqdm bar in our output
        hf_logging.disable_progress_bar()
        unwrapped.to(next(lm.model.parameters()).dtype).save_pretrained(str(out_dir), safe_serialization=True)
    else:
        unwrapped.save_pretrained(str(out_dir), safe_serialization=True)


def training_warnings(history: list[dict], best_epoch: int, stop_reason: str, has_metric: bool,
                      cfg: TrainConfig) -> list[str]:
    """Memorising (train loss far below dev loss); best at the first epoch, so perhaps before it; or still improving
    when training stopped."""
    last, warnings = history[-1], []
    what = "metric" if has_metric else "loss"
    if last["train_loss"] < 0.25 * last["dev_loss"]:
        warnings.append(f"memorising: train loss {last['train_loss']:.3f} is far below dev loss "
                        f"{last['dev_loss']:.3f}")
    if best_epoch == 1 and len(history) > 1:
        warnings.append(f"dev {what} best after the first epoch and worse after it: the best point may lie within "
                        f"that epoch (a lower learning_rate may train a better model)")
    if stop_reason != "plateau" and best_epoch == last["epoch"] and len(history) > 1:
        warnings.append(f"dev {what} still improving at the last epoch "
                        f"({last['epoch']}): more epochs may help" + (" (max_epochs)" if cfg.auto_epochs else ""))
    return warnings
