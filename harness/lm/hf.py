"""Transformers backend of the model interface: any Hugging Face id or folder, or a packaged offline model.

Label scoring runs each prompt once and scores every label continuation from its KV cache; a token prefix that
all prompts share (instruction and demonstrations) is computed once for the whole call.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache, LogitsProcessor
from transformers.utils import logging as hf_logging

from harness.lm import constrained
from harness.lm import packaged
from harness.errors import ConfigError
from harness.lm import (ANSWER_PROBE, GENERATE, LM, PLAIN_ANSWER_END, SCORE, TRAIN, ChoiceScores, Generation,
                        answer_done, common_prefix, cut_answer, cut_middle, end_of_answer, plain_prompt)


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


class GrammarMask(LogitsProcessor):
    """xgrammar's token mask for each row of a generate() batch: a row's logits keep only what its grammar allows
    next. A row that has ended (end of turn, stop string) is left unmasked: generate() pads it anyway."""

    def __init__(self, compiled, rows: int, start: int, vocab_size: int):
        import xgrammar as xgr

        self.xgr, self.start = xgr, start
        self.matchers = [xgr.GrammarMatcher(compiled) for _ in range(rows)]
        self.left = [False] * rows
        self.bitmask = xgr.allocate_token_bitmask(rows, vocab_size)
        self.seconds = [0.0] * rows

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        fed = input_ids.shape[1] > self.start
        for row, matcher in enumerate(self.matchers):
            t0 = time.perf_counter()
            if fed and not self.left[row]:
                self.left[row] = matcher.is_terminated() or not matcher.accept_token(int(input_ids[row, -1]))
            if self.left[row] or matcher.is_terminated():
                self.bitmask[row].fill_(-1)  # every token allowed
            else:
                matcher.fill_next_token_bitmask(self.bitmask, row)
            self.seconds[row] += time.perf_counter() - t0
        t0 = time.perf_counter()
        self.xgr.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        share = (time.perf_counter() - t0) / len(self.matchers)
        self.seconds = [s + share for s in self.seconds]
        return scores


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
    def _cache(self, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> DynamicCache:
        return DynamicCache(ddp_cache_data=layers, config=self.model.config)

    @staticmethod
    def _layers(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(layer.keys, layer.values) for layer in cache.layers]

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

    def _prefix_layers(self, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        inp = torch.tensor([ids], device=self.device)
        out = self.model(input_ids=inp, use_cache=True, logits_to_keep=1)
        return self._layers(out.cache)

    def _additive(self, mask: torch.Tensor) -> torch.Tensor:
        """Eager attention takes an additive float mask; sdpa takes the boolean one as it is."""
        if self.model.config._attn_implementation != "eager":
            return mask
        return torch.zeros(mask.shape, dtype=self.model.dtype, device=mask.device).masked_fill(
            ~mask, torch.finfo(self.model.dtype).min)

    def _score_batch(self, suffixes: list[list[int]], prefix, shared: int, choice_ids: list[list[int]]):
        """One forward pass for a batch: each row holds its left-padded prompt suffix followed by the tokens 1..n-1
        of every choice. A 4D mask lets each choice see the prompt and its own earlier tokens only, so all choices
        are scored from one pass without copying the KV cache; logits are computed only where they are read."""
        dev, b = self.device, len(suffixes)
        width = max(len(s) for s in suffixes)
        conts = [c[:-1] for c in choice_ids]               # tokens fed for choice j (the last one is only predicted)
        offsets, m = [], 0
        for c in conts:
            offsets.append(m)
            m += len(c)
        pad = self.tokenizer.pad_token_id
        flat = [t for c in conts for t in c]
        ids = torch.tensor([[pad] * (width - len(s)) + s + flat for s in suffixes], device=dev)
        own = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], dtype=torch.bool, device=dev)
        q = width + m
        # which continuation block (choice) each continuation slot belongs to, and its index inside the block
        block = torch.tensor([j for j, c in enumerate(conts) for _ in c], dtype=torch.long, device=dev)
        step = torch.tensor([t for c in conts for t in range(len(c))], dtype=torch.long, device=dev)
        mask = torch.zeros(b, q, shared + q, dtype=torch.bool, device=dev)
        mask[:, :, :shared] = True
        causal = torch.tril(torch.ones(width, width, dtype=torch.bool, device=dev))
        mask[:, :width, shared:shared + width] = causal & own[:, None, :]
        mask[:, :width, shared:shared + width] |= torch.eye(width, dtype=torch.bool, device=dev)  # no empty rows
        if m:
            mask[:, width:, shared:shared + width] = own[:, None, :]
            same = (block[:, None] == block[None, :]) & (step[None, :] <= step[:, None])
            mask[:, width:, shared + width:] = same
        lengths = own.sum(-1)
        position = torch.cat([shared + (own.long().cumsum(-1) - 1).clamp(min=0),
                              (shared + lengths)[:, None] + step[None, :]], dim=1)
        attn = self._additive(mask[:, None])
        if self.sliding_window:  # e.g. Gemma 3: its local layers see only the last `sliding_window` positions
            keys = torch.cat([torch.arange(shared, device=dev).expand(b, -1), position], dim=1)
            local = mask & (position[:, :, None] - keys[:, None, :] < self.sliding_window)
            attn = {"full_attention": attn, "sliding_attention": self._additive(local[:, None])}
        kwargs = {}
        if prefix is not None:
            kwargs["cache"] = self._cache([(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in prefix])
        keep = torch.arange(width - 1, q, device=dev)        # last prompt token + every continuation slot
        logits = self.model(input_ids=ids, attention_mask=attn, position_ids=position, logits_to_keep=keep,
                            use_cache=prefix is not None, **kwargs).logits
        logp = torch.log_softmax(logits.float(), dim=-1)      # [b, 1 + m, vocab]
        scores = logp[:, 0, [c[0] for c in choice_ids]].clone()
        for j, c in enumerate(choice_ids):
            for t in range(1, len(c)):
                scores[:, j] += logp[:, 1 + offsets[j] + t - 1, c[t]]
        return scores

    # ---- label scoring ------------------------------------------------------------------------------------
    @torch.inference_mode()
    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        if any(not self.tokenizer(self.separator + c, add_special_tokens=False).input_ids for c in choices):
            raise ConfigError("a label tokenizes to nothing; give it a readable label_text", field="labels")
        choice_ids = [self.answer_ids(c) for c in choices]
        extra = sum(len(c) - 1 for c in choice_ids)
        encoded = [self.encode(p, reserve=max(len(c) for c in choice_ids)) for p in prompts]
        ids = [e[0] for e in encoded]
        shared = 0 if self.sliding_window else self._shared_prefix(ids)  # a sliding cache would drop the prefix
        prefix = self._prefix_layers(ids[0][:shared]) if shared else None
        results: list[ChoiceScores | None] = [None] * len(prompts)
        for batch in self._batches([len(i) for i in ids]):
            start = time.perf_counter()
            scores = self._score_batch([ids[i][shared:] for i in batch], prefix, shared, choice_ids)
            share = (time.perf_counter() - start) / len(batch)
            for row, i in enumerate(batch):
                results[i] = ChoiceScores(scores[row].tolist(), len(ids[i]), extra + len(choice_ids), share,
                                          encoded[i][1])
        return results  # type: ignore[return-value]

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

    def _ender(self, start: int, stop: Sequence[str], max_sentences: int | None):
        """A stopping criterion that ends each row once its answer has ended (stop string, sentence limit)."""
        from transformers import StoppingCriteria, StoppingCriteriaList

        tokenizer = self.tokenizer

        class AnswerEnded(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                texts = tokenizer.batch_decode(input_ids[:, start:], skip_special_tokens=True)
                return torch.tensor([answer_done(t, stop, max_sentences) for t in texts], dtype=torch.bool,
                                    device=input_ids.device)
        return StoppingCriteriaList([AnswerEnded()])

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
        grammar = self._grammars[constraint.key()][0] if constraint is not None else None
        encoded = [self.encode(p, reserve=max_new_tokens) for p in prompts]
        results: list[Generation | None] = [None] * len(prompts)
        pad = self.tokenizer.pad_token_id
        ended = {*self.eos_ids, pad}  # a row that has ended is filled with padding
        for batch in self._batches([len(e[0]) for e in encoded]):
            start = time.perf_counter()
            seqs = [encoded[i][0] for i in batch]
            width = max(len(s) for s in seqs)
            ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=self.device)
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device)
            ender = self._ender(width, stop, max_sentences) if stop or max_sentences else None
            masker = GrammarMask(grammar, len(batch), width, self.model.config.vocab_size) if grammar else None
            out = self.model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                      do_sample=False, eos_token_id=self.eos_ids or None, pad_token_id=pad,
                                      stopping_criteria=ender, logits_processor=[masker] if masker else None)
            share = (time.perf_counter() - start) / len(batch)
            for row, i in enumerate(batch):
                new = out[row, width:].tolist()
                cut = next((k for k, t in enumerate(new) if t in ended), len(new))  # tokens generated
                text = self.tokenizer.decode(new[:cut], skip_special_tokens=True)
                results[i] = Generation(cut_answer(text, stop, max_sentences), len(seqs[row]), cut, share,
                                        encoded[i][1])
                if masker:  # an answer still open at max_new_tokens can break its grammar (unclosed JSON)
                    results[i].grammar_s = masker.seconds[row]
                    results[i].grammar_unfinished = cut >= max_new_tokens
        return results  # type: ignore[return-value]
