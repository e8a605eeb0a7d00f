"""Transformers backend of the model interface: any Hugging Face id or folder, or a packaged offline model.

Label scoring runs each prompt once and scores every label continuation from its KV cache; a token prefix that
all prompts share (instruction and demonstrations) is computed once for the whole call (harness.lm.hf_scoring).
Batched generation and constrained decoding live in harness.lm.hf_generation, LoRA training in harness.lm.training.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from harness.errors import ConfigError
from harness.lm import (ANSWER_PROBE, GENERATE, LM, PLAIN_ANSWER_END, SCORE, TRAIN, ChoiceScores, Generation,
                        common_prefix, constrained, cut_middle, end_of_answer, hf_generation, hf_scoring, packaged,
                        plain_prompt)


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


class TransformersLM(LM):
    capabilities = frozenset({SCORE, GENERATE, TRAIN})

    def __init__(self, name_or_path: str, cache_dir: str | None = None, device: str = "auto", dtype: str = "auto",
                 batch_size: int = 8, max_length: int | None = None, chat_template: str = "auto",
                 attn_implementation: str = "sdpa", revision: str | None = None, status=None):
        self.name_or_path = name_or_path
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ConfigError(f"must be ≥ 1, got {batch_size}", field="model.batch_size")
        cache = Path(cache_dir or Path.home() / ".cache" / "harness").expanduser()
        path = self.path = packaged.resolve(name_or_path, cache, status=status)
        hf_logging.disable_progress_bar()  # our own rich bars cover loading; HF's tqdm would interleave
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype, revision=revision,
                                                              attn_implementation=attn_implementation)
        except OSError as e:
            raise ConfigError(f"cannot load model {name_or_path!r}: {str(e).splitlines()[0]}",
                              field="model.name_or_path") from None
        self.model.to(self.device).eval()
        self.adapter: str | None = None
        tok = self.tokenizer
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        tok.padding_side = "left"
        if chat_template not in ("auto", "on", "off"):
            raise ConfigError(f"must be auto, on or off, got {chat_template!r}", field="model.chat_template")
        if chat_template == "on" and not tok.chat_template:
            raise ConfigError(f"model {name_or_path!r} has no chat template", field="model.chat_template")
        self.use_chat = bool(tok.chat_template) and chat_template != "off"
        config = self.model.config
        self.sliding_window = (getattr(config, "sliding_window", None)
                               if "sliding_attention" in (getattr(config, "layer_types", None) or ()) else None)
        self.separator = "" if self.use_chat else " "  # plain prompts end with "Answer:"; answers start with a space
        limit = getattr(self.model.config, "max_position_embeddings", None) or 2048
        self.max_length = int(max_length or limit)
        eos = self.model.generation_config.eos_token_id
        self.eos_ids = sorted({*(eos if isinstance(eos, list) else [eos] if eos is not None else []),
                               *([tok.eos_token_id] if tok.eos_token_id is not None else [])})
        self.answer_end = self._answer_end()
        self.eos_ids = sorted({*self.eos_ids, *self._turn_end_ids()})  # generation ends with the model's turn
        self._grammars: dict = {}  # constraint key → (compiled grammar or None, report); shared with adapter views

    def _answer_end(self) -> str:
        """What ends an answer, as text: the chat template's end of turn (the token the model stops at), or EOS
        where the template writes none; the plain format's line end for models without a chat template."""
        if not self.use_chat:
            return PLAIN_ANSWER_END
        tok = self.tokenizer
        try:
            text = tok.apply_chat_template([{"role": "user", "content": "q"},
                                            {"role": "assistant", "content": ANSWER_PROBE}], tokenize=False)
        except Exception:  # a template that refuses this conversation: fall back to EOS
            text = ""
        suffix = text.split(ANSWER_PROBE, 1)[1] if ANSWER_PROBE in text else ""
        specials = {*tok.all_special_ids, *(i for i, t in tok.added_tokens_decoder.items() if t.special)}
        ids = end_of_answer(tok(suffix, add_special_tokens=False).input_ids, self.eos_ids, specials)
        return tok.decode(ids) if ids else (tok.eos_token or "")

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of an answer as the model writes it after a prompt: separator, answer, terminator. Label
        scoring and LoRA training both use this, so they agree on what an answer is."""
        return self.tokenizer(self.separator + answer + self.answer_end, add_special_tokens=False).input_ids

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
        return plain_prompt(messages)

    def encode(self, text: str, reserve: int = 0) -> tuple[list[int], bool]:
        """Token ids of a prompt, cut in the middle when longer than the context (keeps instruction and input)."""
        ids = self.tokenizer(text, add_special_tokens=not self.use_chat).input_ids
        budget = self.max_length - reserve
        if len(ids) <= budget:
            return ids, False
        return cut_middle(ids, budget), True

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=not self.use_chat).input_ids)

    @property
    def context_length(self) -> int:
        return self.max_length

    # ---- adapters -----------------------------------------------------------------------------------------
    def with_model(self, model, adapter: str | None = None) -> "TransformersLM":
        """The same wrapper (tokenizer, prompt format, settings) around another model, e.g. one with an adapter."""
        view = copy.copy(self)
        view.model, view.adapter = model, adapter
        return view

    def train_adapter(self, train_pairs, dev_pairs, config: dict, out_dir: Path, seed: int, progress=None,
                      dev_metric=None, full: bool = False) -> dict:
        """Train a LoRA adapter on (prompt, target) pairs (harness.lm.training); see TrainConfig for settings. With
        full, every weight is trained and the whole model saved (load it with with_weights)."""
        import dataclasses

        from harness.lm.training import TrainConfig, train_lora

        cfg, retries = TrainConfig.from_settings(config), []
        while True:
            try:
                report = train_lora(self, train_pairs, dev_pairs, cfg, Path(out_dir), seed, progress,
                                    (lambda model: dev_metric(self.with_model(model))) if dev_metric else None,
                                    full=full)
                return {**report, "oom_retries": retries}
            except torch.OutOfMemoryError:  # GPU out of memory: halve the batch, keep the effective batch size
                if cfg.batch_size == 1:
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                cfg = dataclasses.replace(cfg, batch_size=cfg.batch_size // 2, grad_accum=cfg.grad_accum * 2)
                retries.append({"batch_size": cfg.batch_size, "grad_accum": cfg.grad_accum})

    def with_weights(self, path: str | Path) -> "TransformersLM":
        """The same wrapper around a fully fine-tuned copy of the model saved at path (train_adapter(full=True))."""
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=self.dtype)
        return self.with_model(model.to(self.device).eval(), adapter=str(path))

    def with_adapter(self, path: str | Path, merge: bool = True) -> "TransformersLM":
        from peft import PeftModel

        model = PeftModel.from_pretrained(copy.deepcopy(self.model), str(path))
        if merge:  # folded into the weights: inference costs the same as the base model
            model = model.merge_and_unload()
        return self.with_model(model.eval(), adapter=str(path))

    def describe(self) -> dict:
        return {"backend": "transformers", "name_or_path": self.name_or_path, "device": str(self.device),
                "dtype": str(self.dtype).replace("torch.", ""), "chat_template": self.use_chat,
                "max_length": self.max_length, "adapter": self.adapter, "answer_end": self.answer_end,
                "parameters": sum(p.numel() for p in self.model.parameters())}

    # ---- forward helpers ----------------------------------------------------------------------------------
    def _batches(self, lengths: list[int]):
        """Indices grouped by length (longest first) so batches carry little padding. A prompt longer than half the
        context runs alone: padding shorter prompts up to it cost gigabytes (attention masks grow with its square)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        alone = [i for i in order if lengths[i] > self.max_length // 2]
        yield from ([i] for i in alone)
        rest = order[len(alone):]
        for s in range(0, len(rest), self.batch_size):
            yield rest[s:s + self.batch_size]

    def _shared_prefix(self, encoded: list[list[int]]) -> int:
        if len(encoded) < 2:
            return 0
        return common_prefix(encoded, min(len(e) for e in encoded) - 1)  # every prompt keeps ≥ 1 own token

    # ---- label scoring ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        return hf_scoring.score_choices(self, prompts, choices)

    # ---- generation ---------------------------------------------------------------------------------------
    def _turn_end_ids(self) -> set[int]:
        """The special token the chat template closes an assistant turn with (<|im_end|>, <end_of_turn>, …), which
        a model's generation_config does not always list as an end of sequence."""
        if not self.use_chat:
            return set()
        marker = "Xq7Zv"
        try:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"},
                                                       {"role": "assistant", "content": marker}], tokenize=False)
        except Exception:  # a template that cannot close a turn on its own: the EOS ids only
            return set()
        after = text.split(marker, 1)[1] if marker in text else ""
        ids = self.tokenizer(after.lstrip(" "), add_special_tokens=False).input_ids
        special = set(self.tokenizer.all_special_ids) | {
            i for i, t in getattr(self.tokenizer, "added_tokens_decoder", {}).items() if t.special}
        return {ids[0]} if ids and ids[0] in special else set()

    # ---- constrained decoding ---------------------------------------------------------------------------
    def prepare_constraint(self, constraint, arm: str) -> dict:
        """Compile a constraint (harness.lm.constrained) with xgrammar, once per model: the report for prepare.json."""
        key = constraint.key()
        if key not in self._grammars:
            self._grammars[key] = constrained.compile_for(self, constraint, "xgrammar", self._compile_grammar, arm)
        return self._grammars[key][1]

    def _compile_grammar(self, constraint):
        import xgrammar as xgr

        if getattr(self, "_grammar_compiler", None) is None:  # the tokenizer's vocabulary, read once
            info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size,
                                                      stop_token_ids=list(self.eos_ids))
            self._grammar_compiler = xgr.GrammarCompiler(info, max_threads=1)
        if constraint.kind == constrained.JSON_SCHEMA:  # written as the demonstrations are (json.dumps)
            return self._grammar_compiler.compile_json_schema(json.dumps(constraint.schema), any_whitespace=False,
                                                              separators=(", ", ": "), strict_mode=True)
        return self._grammar_compiler.compile_grammar(constrained.label_grammar(constraint.labels))

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 max_sentences: int | None = None, constraint=None) -> list[Generation]:
        """`constraint` (harness.lm.constrained, prepared with `prepare_constraint`): only tokens its grammar allows,
        then only the end of turn; each Generation's `grammar_s` is its share of the mask time."""
        return hf_generation.generate(self, prompts, max_new_tokens, stop, max_sentences, constraint)
