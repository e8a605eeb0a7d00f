"""Transformers backend of the model interface: any Hugging Face id or folder, or a packaged offline model.

Label scoring runs each prompt once and scores every label continuation from its KV cache; a token prefix that
all prompts share (instruction and demonstrations) is computed once for the whole call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache
from transformers.utils import logging as hf_logging

from harness import packaged
from harness.errors import ConfigError
from harness.lm import GENERATE, SCORE, TRAIN, ChoiceScores, Generation

MIN_SHARED_PREFIX = 16  # tokens; below this a shared-prefix pass is not worth its bookkeeping


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":  # fp32 on CPU keeps scores exact; bf16 where the GPU supports it
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    try:
        return {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                "float16": torch.float16, "fp16": torch.float16}[dtype]
    except KeyError:
        raise ConfigError(f"unknown dtype {dtype!r} (auto, float32, bfloat16, float16)", field="model.dtype") from None


class TransformersLM:
    capabilities = frozenset({SCORE, GENERATE, TRAIN})

    def __init__(self, name_or_path: str, cache_dir: str | None = None, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, max_length: int | None = None, chat_template: str = "auto",
                 kv_budget_mb: int = 768, revision: str | None = None, status=None):
        self.name_or_path = name_or_path
        self.batch_size, self.kv_budget = int(batch_size), int(kv_budget_mb) << 20
        if self.batch_size < 1:
            raise ConfigError(f"must be ≥ 1, got {batch_size}", field="model.batch_size")
        cache = Path(cache_dir or Path.home() / ".cache" / "harness").expanduser()
        path = packaged.resolve(name_or_path, cache, status=status)
        hf_logging.disable_progress_bar()  # our own rich bars cover loading; HF's tqdm would interleave
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype, revision=revision)
        except OSError as e:
            raise ConfigError(f"cannot load model {name_or_path!r}: {str(e).splitlines()[0]}",
                              field="model.name_or_path") from None
        self.model.to(self.device).eval()
        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        if chat_template not in ("auto", "on", "off"):
            raise ConfigError(f"must be auto, on or off, got {chat_template!r}", field="model.chat_template")
        if chat_template == "on" and not tok.chat_template:
            raise ConfigError(f"model {name_or_path!r} has no chat template", field="model.chat_template")
        self.use_chat = bool(tok.chat_template) and chat_template != "off"
        self.separator = "" if self.use_chat else " "  # plain prompts end with "Answer:"; answers start with a space
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = int(max_length or limit)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []),
                               *([tok.eos_token_id] if tok.eos_token_id is not None else [])})
        cfg = self.model.config.get_text_config()
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        kv_heads = getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads
        self.kv_bytes_per_token = 2 * cfg.num_hidden_layers * kv_heads * head_dim * self.model.dtype.itemsize

    # ---- prompts and tokens -------------------------------------------------------------------------------
    def render(self, messages: Sequence[dict]) -> str:
        if self.use_chat:
            try:
                return self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
            except Exception:  # templates without a system role: fold it into the first user turn
                merged = [dict(m) for m in messages if m["role"] != "system"]
                system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
                if merged and system:
                    merged[0]["content"] = system + "\n\n" + merged[0]["content"]
                return self.tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)
        parts = []
        for m in messages:
            if m["role"] == "system":
                parts.append(m["content"] + "\n\n")
            elif m["role"] == "user":
                parts.append(m["content"] + "\nAnswer:")
            else:
                parts.append(" " + m["content"] + "\n\n")
        return "".join(parts)

    def encode(self, text: str, reserve: int = 0) -> tuple[list[int], bool]:
        """Token ids of a prompt, cut in the middle when longer than the context (keeps instruction and input)."""
        ids = self.tokenizer(text, add_special_tokens=not self.use_chat).input_ids
        budget = self.max_length - reserve
        if len(ids) <= budget:
            return ids, False
        head = budget // 2
        return ids[:head] + ids[len(ids) - (budget - head):], True

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=not self.use_chat).input_ids)

    def describe(self) -> dict:
        return {"backend": "transformers", "name_or_path": self.name_or_path, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "chat_template": self.use_chat,
                "max_length": self.max_length,
                "parameters": sum(p.numel() for p in self.model.parameters())}

    # ---- forward helpers ----------------------------------------------------------------------------------
    def _cache(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
        return DynamicCache(ddp_cache_data=layers, config=self.model.config)

    @staticmethod
    def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in cache.layers]

    def _batches(self, lengths: list[int]):
        """Indices grouped by length (longest first) so batches carry little padding."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        for s in range(0, len(order), self.batch_size):
            yield order[s:s + self.batch_size]

    def _shared_prefix(self, encoded: list[list[int]]) -> int:
        if len(encoded) < 2:
            return 0
        first, n = encoded[0], min(len(e) for e in encoded) - 1  # every prompt keeps ≥ 1 token of its own
        k = 0
        while k < n and all(e[k] == first[k] for e in encoded):
            k += 1
        return k if k >= MIN_SHARED_PREFIX else 0

    def _prefix_layers(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        inp = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=inp, use_cache=True, logits_to_keep=1)
        return self._layers(out.cache)

    def _forward_suffixes(self, suffixes: list[list[int]], prefix, shared: int, use_cache: bool):
        """One batched forward of left-padded suffixes after an optional shared prefix cache."""
        pad = self.tokenizer.pad_token_id
        width = max(len(s) for s in suffixes)
        ids = torch.tensor([[pad] * (width - len(s)) + s for s in suffixes], device=self.device)
        own = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=self.device)
        position = shared + (own.cumsum(-1) - 1).clamp(min=0)
        mask = own
        kwargs = {}
        if prefix is not None:
            b = len(suffixes)
            mask = torch.cat([torch.ones(b, shared, dtype=own.dtype, device=self.device), own], dim=1)
            kwargs["cache"] = self._cache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix])
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=position,
                         use_cache=use_cache or prefix is not None,
                         logits_to_keep=1, **kwargs)
        return out, mask, shared + own.sum(-1)

    # ---- label scoring ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        choice_ids = [self.tokenizer(self.separator + c, add_special_tokens=False).input_ids for c in choices]
        if any(not c for c in choice_ids):
            raise ConfigError("a label tokenizes to nothing; give it a readable label_text", field="labels")
        longest = max(len(c) for c in choice_ids)
        encoded = [self.encode(p, reserve=longest) for p in prompts]
        ids = [e[0] for e in encoded]
        shared = self._shared_prefix(ids)
        prefix = self._prefix_layers(ids[0][:shared]) if shared else None
        results: list[ChoiceScores | None] = [None] * len(prompts)
        for batch in self._batches([len(i) for i in ids]):
            start = time.perf_counter()
            out, mask, lengths = self._forward_suffixes([ids[i][shared:] for i in batch], prefix, shared,
                                                        use_cache=longest > 1)
            first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            scores = first[:, [c[0] for c in choice_ids]].clone()  # [batch, choices]
            if longest > 1:
                scores += self._continuations(out.cache, mask, lengths, choice_ids)
            share = (time.perf_counter() - start) / len(batch)
            for row, i in enumerate(batch):
                results[i] = ChoiceScores(scores[row].tolist(), len(ids[i]), sum(len(c) for c in choice_ids),
                                          share, encoded[i][1])
        return results  # type: ignore[return-value]

    def _continuations(self, cache, mask, lengths, choice_ids) -> torch.Tensor:
        """Log-probability of tokens 2..n of every multi-token choice, in chunks that fit the KV budget."""
        b, total = mask.shape
        multi = [j for j, c in enumerate(choice_ids) if len(c) > 1]
        extra = torch.zeros(b, len(choice_ids), device=self.device)
        width = max(len(choice_ids[j]) for j in multi) - 1
        per_row = self.kv_bytes_per_token * (total + width)
        chunk = max(1, min(len(multi), self.kv_budget // max(1, per_row * b)))
        layers = self._layers(cache)
        pad = self.tokenizer.pad_token_id
        for s in range(0, len(multi), chunk):
            part = multi[s:s + chunk]
            n = len(part)
            inp = torch.tensor([choice_ids[j][:-1] + [pad] * (width + 1 - len(choice_ids[j])) for j in part],
                               device=self.device).repeat(b, 1)                      # [b*n, width]
            own = torch.tensor([[1] * (len(choice_ids[j]) - 1) + [0] * (width + 1 - len(choice_ids[j]))
                                for j in part], device=self.device).repeat(b, 1)
            full = torch.cat([mask.repeat_interleave(n, 0), own], dim=1)
            position = lengths.repeat_interleave(n, 0)[:, None] + torch.arange(width, device=self.device)
            expanded = self._cache([(k.repeat_interleave(n, 0), v.repeat_interleave(n, 0)) for k, v in layers])
            logits = self.model(input_ids=inp, attention_mask=full, position_ids=position, cache=expanded).logits
            logp = torch.log_softmax(logits.float(), dim=-1)                          # [b*n, width, vocab]
            target = torch.tensor([choice_ids[j][1:] + [pad] * (width + 1 - len(choice_ids[j])) for j in part],
                                  device=self.device).repeat(b, 1)
            picked = logp.gather(-1, target[..., None])[..., 0] * own                 # [b*n, width]
            extra[:, part] = picked.sum(-1).view(b, n)
        return extra

    # ---- generation ---------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = ()) -> list[Generation]:
        encoded = [self.encode(p, reserve=max_new_tokens) for p in prompts]
        results: list[Generation | None] = [None] * len(prompts)
        pad = self.tokenizer.pad_token_id
        for batch in self._batches([len(e[0]) for e in encoded]):
            start = time.perf_counter()
            seqs = [encoded[i][0] for i in batch]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      do_sample=False, eos_token_id=self.eos_ids or None, pad_token_id=pad)
            share = (time.perf_counter() - start) / len(batch)
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                cut = next((k for k, t in enumerate(new) if t in self.eos_ids), len(new))
                text = self.tokenizer.decode(new[:cut], skip_special_tokens=True)
                for s in stop:
                    if s and s in text:
                        text = text[: text.index(s)]
                results[i] = Generation(text.strip(), len(seqs[row]), cut, share, encoded[i][1])
        return results  # type: ignore[return-value]
