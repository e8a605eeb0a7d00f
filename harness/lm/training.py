"""LoRA training for the transformers backend (part of the lm layer: strategies ask the model wrapper to train).

peft adapters, torch's AdamW with transformers' linear warm-up schedule, accelerate for device placement and bf16
autocast. The CPU levers measured on this machine class: length-grouped batches (little padding), the LM head and
the loss computed only at target positions (left padding puts every target at the end of its row), and bf16
autocast where the CPU has native bf16. Loss is on the target tokens only; the prompt is exactly the inference
prompt.
"""

from __future__ import annotations

import copy
import math
import random
import resource
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from accelerate import Accelerator
from peft import LoraConfig, get_peft_model
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup
from transformers.utils import logging as hf_logging

from harness.errors import ConfigError
from harness.lm import common_prefix, cut_middle


@dataclass(frozen=True)
class TrainConfig:
    """The training settings. No defaults here: they live in conf/strategies/lora.yaml, the one source (code built
    outside Hydra reads that file through strategies.lora.lora_defaults)."""

    rank: int
    alpha: int
    dropout: float
    target_modules: tuple[str, ...]
    learning_rate: float
    epochs: int | str            # a number, or "auto": until the dev criterion plateaus (min_steps, max_epochs)
    patience: int | str          # epochs without dev improvement before stopping; auto: 2 with epochs auto, else 1
    min_steps: int               # epochs auto: optimizer steps before a plateau may stop training
    max_epochs: int              # epochs auto: the cap
    batch_size: int
    grad_accum: int
    max_length: int
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float         # gradient clipping, as transformers' Trainer does by default
    dtype: str                   # auto: bf16 autocast on CUDA or a CPU with native bf16, else fp32
    group_by_length: bool
    target_only_logits: bool
    shared_prefix: bool          # run the prompt prefix all examples share once per batch
    qlora: bool                  # 4-bit base (bitsandbytes), CUDA only

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> "TrainConfig":
        """The training fields of an arm's settings (other keys are the arm's own); every field must be given."""
        names = [f.name for f in fields(cls)]
        missing = [n for n in names if n not in settings]
        if missing:
            raise ConfigError(f"missing training setting(s) {', '.join(missing)} (defaults: "
                              f"conf/strategies/lora.yaml)", field=missing[0])
        values = {n: settings[n] for n in names}
        return cls(**{**values, "target_modules": tuple(values["target_modules"])})

    def __post_init__(self):
        for name in ("rank", "alpha", "batch_size", "grad_accum", "max_length", "max_epochs"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"must be ≥ 1, got {getattr(self, name)}", field=name)
        for name in ("epochs", "patience"):
            value = getattr(self, name)
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"must be auto or a whole number ≥ 1, got {value!r}", field=name)
        if int(self.min_steps) < 0:
            raise ConfigError(f"must be ≥ 0, got {self.min_steps}", field="min_steps")
        if not 0 < self.learning_rate < 1:
            raise ConfigError(f"must be in (0, 1), got {self.learning_rate}", field="learning_rate")

    @property
    def auto_epochs(self) -> bool:
        return self.epochs == "auto"

    @property
    def stop_patience(self) -> int:
        if self.patience != "auto":
            return int(self.patience)
        return 2 if self.auto_epochs else 1


class TrainingDiverged(RuntimeError):
    """Loss became NaN or exploded; the partial adapter is never used."""


def cpu_has_native_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(choice: str, device: torch.device) -> str:
    """'bf16' or 'no' (accelerate's mixed_precision) from the config and the hardware."""
    if choice in ("bf16", "bfloat16"):
        return "bf16"
    if choice in ("fp32", "float32", "no"):
        return "no"
    if choice != "auto":
        raise ConfigError(f"must be auto, bf16 or fp32, got {choice!r}", field="dtype")
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


@dataclass
class Encoded:
    ids: list[int]
    target_len: int  # the last target_len tokens are the target (loss), the rest the prompt


def encode_pairs(lm, pairs: Sequence[tuple[str, str]], max_length: int) -> tuple[list[Encoded], int]:
    """Prompt + target + end of answer token ids; prompts longer than max_length are cut in the middle."""
    out, truncated = [], 0
    for prompt, target in pairs:
        t = lm.answer_ids(target)  # ends with the terminator label scoring reads (lm.answer_end)
        t = t[: max_length // 2]
        p = lm.tokenizer(prompt, add_special_tokens=not lm.use_chat).input_ids
        budget = max_length - len(t)
        if len(p) > budget:
            truncated += 1
            p = cut_middle(p, budget)
        out.append(Encoded(p + t, len(t)))
    return out, truncated


def batches(data: Sequence[Encoded], size: int, rng: random.Random, group_by_length: bool) -> list[list[int]]:
    order = list(range(len(data)))
    rng.shuffle(order)
    if group_by_length:  # sort within mega-batches so a batch holds similar lengths, then shuffle the batches
        mega = size * 32
        order = [i for s in range(0, len(order), mega)
                 for i in sorted(order[s:s + mega], key=lambda i: len(data[i].ids))]
    out = [order[s:s + size] for s in range(0, len(order), size)]
    rng.shuffle(out)
    return out


def shared_prefix(data: Sequence[Encoded], minimum: int = 16) -> list[int]:
    """The token prefix every sequence shares inside its prompt (e.g. the system instruction), or []."""
    limit = min(len(e.ids) - e.target_len for e in data) - 1  # each row keeps ≥ 1 prompt token of its own
    return data[0].ids[:common_prefix([e.ids for e in data], limit, minimum)]


def collate(data: Sequence[Encoded], pad: int, device, prefix: Sequence[int] = ()) -> dict:
    """Left-padded batch of the sequences after the shared prefix (which runs once per batch, see target_loss)."""
    p = len(prefix)
    rows = [e.ids[p:] for e in data]
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=device)
    labels = torch.full_like(ids, -100)
    for row, e in enumerate(data):
        labels[row, width - e.target_len:] = ids[row, width - e.target_len:]
    position = p + (mask.cumsum(-1) - 1).clamp(min=0)
    return {"input_ids": ids, "attention_mask": mask, "position_ids": position, "labels": labels,
            "prefix": torch.tensor([list(prefix)], device=device) if p else None,
            "keep": max(e.target_len for e in data) + 1, "tokens": int(mask.sum()) + p * len(data)}


def target_loss(model, batch: dict, target_only: bool) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over target tokens, and their count. With target_only the LM head runs only on the
    last `keep` positions (every target sits at the end of its left-padded row). A shared prefix runs once (batch
    of one, in the graph so the adapter learns through it) and its keys and values are broadcast to every row."""
    keep = batch["keep"] if target_only else 0
    kwargs, mask = {}, batch["attention_mask"]
    if batch.get("prefix") is not None:
        from transformers import DynamicCache

        prefix = batch["prefix"]
        b = batch["input_ids"].shape[0]
        cache = model(input_ids=prefix, use_cache=True, logits_to_keep=1).cache
        config = model.config if hasattr(model, "config") else None
        kwargs["cache"] = DynamicCache(ddp_cache_data=[(layer.keys.expand(b, -1, -1, -1),
                                                        layer.values.expand(b, -1, -1, -1)) for layer in cache.layers],
                                       config=config)
        mask = torch.cat([torch.ones(b, prefix.shape[1], dtype=mask.dtype, device=mask.device), mask], dim=1)
    logits = model(input_ids=batch["input_ids"], attention_mask=mask, position_ids=batch["position_ids"],
                   logits_to_keep=keep, use_cache=bool(kwargs), **kwargs).logits
    labels = batch["labels"][:, -logits.shape[1]:]
    shift_logits, shift_labels = logits[:, :-1].float(), labels[:, 1:]
    n = int((shift_labels != -100).sum())
    loss = torch.nn.functional.cross_entropy(shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
                                             ignore_index=-100, reduction="sum")
    return loss, n


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


def train_lora(lm, train_pairs: Sequence[tuple[str, str]], dev_pairs: Sequence[tuple[str, str]], cfg: TrainConfig,
               out_dir: Path, seed: int, progress: Callable[[str, int], Callable[[int], None]] | None = None,
               dev_metric: Callable[[torch.nn.Module], float] | None = None, full: bool = False) -> dict:
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
    train, truncated = encode_pairs(lm, train_pairs, cfg.max_length)
    dev, _ = encode_pairs(lm, dev_pairs, cfg.max_length)
    prefix = shared_prefix(list(train) + list(dev)) if cfg.shared_prefix else []
    accelerator = Accelerator(mixed_precision=precision, cpu=device.type == "cpu",
                              gradient_accumulation_steps=cfg.grad_accum)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    updates_per_epoch = math.ceil(steps_per_epoch / cfg.grad_accum)
    if cfg.auto_epochs:
        # Warm-up, then a constant learning rate: a decaying schedule must know the number of updates in advance,
        # and "until the dev criterion stops improving" does not. Decaying over max_epochs instead would leave the
        # rate at an arbitrary point when the plateau comes (a different one for every train size).
        epoch_cap, floor = cfg.max_epochs, cfg.min_steps
        scheduler = get_constant_schedule_with_warmup(optimizer,
                                                      int(cfg.warmup_ratio * max(floor, updates_per_epoch)))
    else:
        epoch_cap, floor = int(cfg.epochs), 0
        total_updates = updates_per_epoch * epoch_cap
        scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_updates), total_updates)
    patience = cfg.stop_patience
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    pad = lm.tokenizer.pad_token_id
    trained_names = {n for n, p in accelerator.unwrap_model(model).named_parameters() if p.requires_grad}

    def evaluate() -> float:
        model.eval()
        loss_sum, count = 0.0, 0
        with torch.no_grad(), accelerator.autocast():
            for idx in batches(dev, cfg.batch_size, random.Random(0), True):
                loss, n = target_loss(model, collate([dev[i] for i in idx], pad, accelerator.device, prefix), True)
                loss_sum, count = loss_sum + float(loss), count + n
        model.train()
        return loss_sum / max(1, count)

    history, best, best_state, bad_epochs, tokens_seen, step_s, updates = [], None, None, 0, 0, 0.0, 0
    stop_reason = "max_epochs" if cfg.auto_epochs else "fixed epochs"
    kind = "full_ft" if full else "lora"
    start = time.perf_counter()
    advance = progress(f"{kind}: train" + (f" (≤ {epoch_cap} ep)" if cfg.auto_epochs else ""),
                       steps_per_epoch * epoch_cap) if progress else None
    model.train()
    for epoch in range(1, epoch_cap + 1):
        loss_sum, count = 0.0, 0
        for idx in batches(train, cfg.batch_size, rng, cfg.group_by_length):
            step_start = time.perf_counter()
            batch = collate([train[i] for i in idx], pad, accelerator.device, prefix)
            with accelerator.accumulate(model), accelerator.autocast():
                loss, n = target_loss(model, batch, cfg.target_only_logits)
                per_token = float(loss.detach()) / max(1, n)
                if not math.isfinite(per_token) or (count and per_token > 50):
                    raise TrainingDiverged(f"training loss became {per_token:.3g} in epoch {epoch}; "
                                           f"lower learning_rate (now {cfg.learning_rate})")
                accelerator.backward(loss / max(1, n))
                if cfg.max_grad_norm and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                updates += int(accelerator.sync_gradients)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            loss_sum, count, tokens_seen = loss_sum + float(loss.detach()), count + n, tokens_seen + batch["tokens"]
            step_s += time.perf_counter() - step_start
            if advance:
                advance(1)
        dev_loss = evaluate()
        record = {"epoch": epoch, "train_loss": loss_sum / max(1, count), "dev_loss": dev_loss,
                  "optimizer_steps": updates}
        if dev_metric is not None:
            model.eval()  # measured as the model will predict (no dropout)
            record["dev_metric"] = dev_metric(accelerator.unwrap_model(model))
            model.train()
        history.append(record)
        score = -record["dev_metric"] if dev_metric is not None else dev_loss
        if best is None or score < best:
            best, bad_epochs = score, 0
            best_state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(model).state_dict().items()
                          if k in trained_names}
        else:
            bad_epochs += 1
        if bad_epochs >= patience and updates >= floor:  # the floor keeps a small train set training
            stop_reason = "plateau"
            break
    wall = time.perf_counter() - start
    unwrapped = accelerator.unwrap_model(model)
    unwrapped.load_state_dict(best_state, strict=False)
    if full:  # the whole model, in the base model's dtype, loadable with from_pretrained (no tqdm bar in our output)
        hf_logging.disable_progress_bar()
        unwrapped.to(next(lm.model.parameters()).dtype).save_pretrained(str(out_dir), safe_serialization=True)
    else:
        unwrapped.save_pretrained(str(out_dir), safe_serialization=True)
    best_epoch = min(history, key=lambda r: -r["dev_metric"] if dev_metric is not None else r["dev_loss"])["epoch"]
    last = history[-1]
    warnings = []
    if last["train_loss"] < 0.25 * last["dev_loss"]:
        warnings.append(f"memorising: train loss {last['train_loss']:.3f} is far below dev loss "
                        f"{last['dev_loss']:.3f}")
    if stop_reason != "plateau" and best_epoch == last["epoch"] and len(history) > 1:
        warnings.append(f"dev {'metric' if dev_metric is not None else 'loss'} still improving at the last epoch "
                        f"({last['epoch']}): more epochs may help" + (" (max_epochs)" if cfg.auto_epochs else ""))
    return {
        "config": {**asdict(cfg), "target_modules": list(cfg.target_modules)}, "seed": seed, "method": kind,
        "device": str(device), "autocast": precision, "train_examples": len(train), "dev_examples": len(dev),
        "prompts_truncated": truncated, "shared_prefix_tokens": len(prefix), "epochs_run": len(history),
        "best_epoch": best_epoch, "stop_reason": stop_reason, "optimizer_steps": updates,
        "min_steps": floor if cfg.auto_epochs else None, "max_epochs": epoch_cap, "patience": patience,
        "lr_schedule": "warm-up, then constant" if cfg.auto_epochs else "warm-up, then linear decay",
        "history": history, "wall_s": wall, "train_steps_s": step_s, "tokens_seen": tokens_seen,
        "tokens_per_s": tokens_seen / step_s if step_s else None,  # training steps only (dev evaluation excluded)
        "peak_memory_mb": peak_memory_mb(device), "peak_memory_kind": "cuda_max_allocated" if device.type == "cuda"
        else "process_max_rss", "trainable_parameters": trainable, "total_parameters": total, "warnings": warnings,
    }
