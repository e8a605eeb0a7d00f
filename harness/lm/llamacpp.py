"""llama.cpp backend (llama-cpp-python, in-process) for GGUF models: fast CPU generation.

Prompts are rendered with the GGUF's own chat template (the one the Hugging Face tokenizer carries too), or the
plain format of models without one, so a prompt reads the same on every backend. Greedy generation (temperature 0)
reuses the KV cache of the longest prefix shared with the previous prompt (instruction and demonstrations).
Label scoring evaluates each prompt once and every label continuation (label + end of turn) from its cached state
(`logits_all`). The
model cannot be trained here: LoRA arms refuse this backend at config time.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from harness.lm import constrained
from harness.lm.llamacpp_cpu import plain_weight_buffers, use_extra_buffers
from harness.lm import packaged
from harness.errors import ConfigError
from harness.lm import (ANSWER_PROBE, GENERATE, LM, PLAIN_ANSWER_END, SCORE, ChoiceScores, Generation,
                        answer_done, cut_answer, cut_middle, end_of_answer, plain_prompt)


def gguf_file(model_path: str, cache_dir: Path) -> Path:
    """`packaged:NAME` → the packaged GGUF file; otherwise a .gguf path on disk."""
    if model_path.startswith(packaged.PREFIX):
        return packaged.gguf_path(model_path[len(packaged.PREFIX):], cache_dir)
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ConfigError(f"GGUF file not found: {path} (llama.cpp loads .gguf files; packaged:NAME for the "
                          f"packaged ones)", field="model.model_path")
    return path


class LlamaCppLM(LM):
    capabilities = frozenset({GENERATE, SCORE})

    def __init__(self, model_path: str, cache_dir: str | None = None, n_ctx: int = 2048, n_threads: int | None = None,
                 n_batch: int = 512, chat_template: str = "auto", extra_buffers="auto", status=None):
        try:
            from llama_cpp import Llama
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError:
            raise ConfigError("the llama.cpp backend needs llama-cpp-python (run the README's set-up command)",
                              field="model._target_") from None
        self.model_path = model_path
        path = gguf_file(str(model_path), Path(cache_dir or "~/.cache/harness").expanduser())
        self.n_ctx = int(n_ctx)
        # logits_all keeps every position's logits, which label scoring reads; generation does not need them but
        # one Llama serves both, and at n_ctx 2048 the buffer is ~0.4 GB for a 49k vocabulary.
        self.extra_buffers = use_extra_buffers(extra_buffers)  # off on a CPU with AMX: see llamacpp_cpu.py
        with plain_weight_buffers(not self.extra_buffers):
            self.llm = Llama(str(path), n_ctx=self.n_ctx, n_threads=n_threads, n_batch=int(n_batch),
                             logits_all=True, verbose=False)
        template = self.llm.metadata.get("tokenizer.chat_template")
        if chat_template not in ("auto", "on", "off"):
            raise ConfigError(f"must be auto, on or off, got {chat_template!r}", field="model.chat_template")
        if chat_template == "on" and not template:
            raise ConfigError(f"{path.name} has no chat template", field="model.chat_template")
        self.use_chat = bool(template) and chat_template != "off"
        text = self.llm._model.token_get_text
        self.formatter = (Jinja2ChatFormatter(template=template, eos_token=text(self.llm.token_eos()),
                                              bos_token=text(self.llm.token_bos()))
                          if self.use_chat else None)
        self.separator = "" if self.use_chat else " "
        self.file = path
        self.answer_end = self._answer_end()
        self._grammars: dict = {}  # constraint key → (LlamaGrammar or None, report)

    def _answer_end(self) -> str:
        """What ends an answer (as the transformers backend): the chat template's end of turn, else EOS; the plain
        format's line end without a template."""
        import llama_cpp

        if self.formatter is None:
            return PLAIN_ANSWER_END
        try:
            text = self.formatter(messages=[{"role": "user", "content": "q"},
                                            {"role": "assistant", "content": ANSWER_PROBE}]).prompt
        except Exception:  # a template that refuses this conversation: fall back to EOS
            text = ""
        suffix = text.split(ANSWER_PROBE, 1)[1] if ANSWER_PROBE in text else ""
        ids, model = self._tokens(suffix, bos=False), self.llm._model
        stops = {self.llm.token_eos(), *(t for t in ids if llama_cpp.llama_vocab_is_eog(model.vocab, t))}
        controls = {t for t in ids if model.token_get_attr(t) & llama_cpp.LLAMA_TOKEN_ATTR_CONTROL}
        ends = end_of_answer(ids, stops, controls) or [self.llm.token_eos()]
        return self.llm.detokenize(ends, special=True).decode("utf-8", "replace")

    def answer_ids(self, answer: str) -> list[int]:
        """Separator, answer and terminator as tokens: what label scoring reads (as the transformers backend)."""
        return self._tokens(self.separator + answer + self.answer_end, bos=False)

    # ---- prompts and tokens -------------------------------------------------------------------------------
    def render(self, messages: Sequence[dict]) -> str:
        if self.formatter is None:
            return plain_prompt(messages)
        return self.formatter(messages=[dict(m) for m in messages]).prompt

    def _tokens(self, text: str, bos: bool) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=bos, special=True)

    def encode(self, text: str, reserve: int = 0) -> tuple[list[int], bool]:
        ids = self._tokens(text, bos=not self.use_chat)  # as the transformers backend: BOS for plain prompts
        budget = self.n_ctx - reserve
        return (ids, False) if len(ids) <= budget else (cut_middle(ids, budget), True)

    def count_tokens(self, text: str) -> int:
        return len(self._tokens(text, bos=not self.use_chat))

    @property
    def context_length(self) -> int:
        return self.n_ctx

    def describe(self) -> dict:
        return {"backend": "llama.cpp", "name_or_path": str(self.model_path), "file": self.file.name,
                "device": "cpu", "n_ctx": self.n_ctx, "n_threads": self.llm.n_threads,
                "chat_template": self.use_chat, "answer_end": self.answer_end,
                **({} if self.extra_buffers else {"extra_buffers": False})}  # as before where they are on

    def close(self) -> None:
        self.llm.close()

    # ---- generation ---------------------------------------------------------------------------------------
    def _ender(self, start: int, stop: Sequence[str], max_sentences: int | None):
        """Ends a completion once its answer has ended (stop string, sentence limit), judged as the transformers
        backend judges it (harness.lm.answer_done); llama.cpp itself ends at the model's end-of-turn tokens."""
        from llama_cpp import StoppingCriteriaList

        llm = self.llm

        def ended(input_ids, logits) -> bool:
            text = llm.detokenize([int(t) for t in input_ids[start:]]).decode("utf-8", errors="ignore")
            return answer_done(text, stop, max_sentences)
        return StoppingCriteriaList([ended])

    # ---- constrained decoding ---------------------------------------------------------------------------
    def prepare_constraint(self, constraint, arm: str) -> dict:
        """Compile a constraint (harness.lm.constrained) to a llama.cpp grammar, once: the report for prepare.json."""
        key = constraint.key()
        if key not in self._grammars:
            self._grammars[key] = constrained.compile_for(
                self, constraint, "llama.cpp", lambda c: llama_grammar(c, self.llm._model.vocab), arm)
        return self._grammars[key][1]

    def generate(self, prompts: Sequence[str], max_new_tokens: int, stop: Sequence[str] = (),
                 max_sentences: int | None = None, constraint=None) -> list[Generation]:
        """`constraint`: llama.cpp samples only what its grammar allows (the grammar's time is inside latency_s;
        llama.cpp does not report it apart)."""
        grammar = self._grammars[constraint.key()][0] if constraint is not None else None
        out = []
        for prompt in prompts:
            ids, truncated = self.encode(prompt, reserve=max_new_tokens)
            start = time.perf_counter()
            result = self.llm.create_completion(
                ids, max_tokens=int(max_new_tokens), temperature=0.0, grammar=grammar,
                stopping_criteria=self._ender(len(ids), stop, max_sentences) if stop or max_sentences else None)
            seconds = time.perf_counter() - start
            usage = result["usage"]
            out.append(Generation(cut_answer(result["choices"][0]["text"], stop, max_sentences),
                                  usage["prompt_tokens"], usage["completion_tokens"], seconds, truncated))
            if grammar is not None:  # an answer still open at max_tokens can break its grammar (unclosed JSON)
                out[-1].grammar_unfinished = result["choices"][0].get("finish_reason") == "length"
        return out

    # ---- label scoring ------------------------------------------------------------------------------------
    def score_choices(self, prompts: Sequence[str], choices: Sequence[str]) -> list[ChoiceScores]:
        if any(not self._tokens(self.separator + c, bos=False) for c in choices):
            raise ConfigError("a label tokenizes to nothing; give it a readable label_text", field="labels")
        choice_ids = [self.answer_ids(c) for c in choices]
        llm, results = self.llm, []
        for prompt in prompts:
            ids, truncated = self.encode(prompt, reserve=max(len(c) for c in choice_ids))
            start = time.perf_counter()
            shared = llm.longest_token_prefix(llm.input_ids[:llm.n_tokens].tolist(), ids)
            llm.n_tokens = min(shared, len(ids) - 1)  # keep the cached prefix; eval re-runs at least one token
            llm.eval(ids[llm.n_tokens:])
            last = _log_softmax(llm.scores[len(ids) - 1])
            logprobs = []
            for c in choice_ids:
                total = float(last[c[0]])
                if len(c) > 1:
                    llm.n_tokens = len(ids)
                    llm.eval(c[:-1])
                    rows = llm.scores[len(ids):len(ids) + len(c) - 1]
                    total += float(sum(_log_softmax(row)[t] for row, t in zip(rows, c[1:])))
                logprobs.append(total)
            llm.n_tokens = len(ids)
            results.append(ChoiceScores(logprobs, len(ids), sum(len(c) for c in choice_ids),
                                        time.perf_counter() - start, truncated))
        return results


CLASS_ESCAPES = {"d": "0-9", "w": "A-Za-z0-9_", "s": " \\t\\n\\r"}


def plain_classes(pattern: str) -> str:
    """`\\d`, `\\w`, `\\s` spelled as character ranges: llama-cpp-python's converter copies them into GBNF as
    escapes GBNF does not have (`"\\d"`), and the grammar then fails to parse."""
    out, i, in_class = [], 0, False
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt in CLASS_ESCAPES:
                out.append(CLASS_ESCAPES[nxt] if in_class else f"[{CLASS_ESCAPES[nxt]}]")
            else:
                out.append(pattern[i:i + 2])
            i += 2
            continue
        if ch == "[" and not in_class:
            in_class = True
        elif ch == "]" and in_class:
            in_class = False
        out.append(ch)
        i += 1
    return "".join(out)


def _patterns(schema):
    if isinstance(schema, dict):
        return {k: plain_classes(v) if k == "pattern" and isinstance(v, str) else _patterns(v)
                for k, v in schema.items()}
    if isinstance(schema, list):
        return [_patterns(v) for v in schema]
    return schema


def gbnf(constraint) -> str:
    """A constraint as GBNF: llama.cpp's own JSON-schema converter (llama-cpp-python's copy of it), or one rule of
    label alternatives."""
    if constraint.kind == constrained.JSON_SCHEMA:
        from llama_cpp.llama_grammar import json_schema_to_gbnf

        schema = _patterns(constrained.split_type_lists(constrained.thaw(constraint.schema)))
        return json_schema_to_gbnf(json.dumps(schema))
    return constrained.label_grammar(constraint.labels)


def llama_grammar(constraint, vocab=None):
    """The LlamaGrammar of a constraint; with a model's vocabulary it is parsed here, so a grammar llama.cpp cannot
    read is refused now (llama.cpp would otherwise fail inside generation)."""
    import llama_cpp
    from llama_cpp import LlamaGrammar

    grammar = LlamaGrammar.from_string(gbnf(constraint), verbose=False)
    if vocab is not None:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode("utf-8"),
                                                       grammar._root.encode("utf-8"))
        if not sampler:
            raise ValueError("llama.cpp cannot parse the grammar built from it")
        llama_cpp.llama_sampler_free(sampler)
    return grammar


def _log_softmax(row: np.ndarray) -> np.ndarray:
    row = row.astype(np.float64)
    top = row.max()
    return row - top - np.log(np.exp(row - top).sum())
