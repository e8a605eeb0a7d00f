"""The training settings of the transformers backend (harness.lm.training) and the autocast precision they resolve
to on this hardware."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Mapping

import torch

from harness.errors import ConfigError


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
    max_step_tokens: int         # a batch over this many padded tokens runs as micro-batches (same gradient)

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
        for name in ("rank", "alpha", "batch_size", "grad_accum", "max_length", "max_epochs", "max_step_tokens"):
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
