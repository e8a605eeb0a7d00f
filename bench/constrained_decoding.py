"""Which grammar library constrains the transformers backend: compile time, per-token mask time and JSON Schema
coverage of xgrammar, llguidance and outlines-core (each skipped with a line when it does not import here), on the
packaged model's tokenizer (49k vocabulary).

Per-token time: the held-out answers of supplier_intake are fed through each library's matcher token by token
(mask for the next token, applied to a logits row, then the answer's own token accepted), so it measures the
grammar's cost per generated token without a model. Coverage: one small schema per JSON Schema feature; 'ok' when
the library compiles it and the matcher accepts a valid instance and refuses an invalid one.

    .venv/bin/python bench/constrained_decoding.py [--answers 24]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# feature → (schema, valid instance, invalid instance)
FEATURES = {
    "type/properties/required": ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"],
                                  "additionalProperties": False}, {"a": "x"}, {"b": "x"}),
    "type union with null": ({"type": "object", "properties": {"a": {"type": ["number", "null"]}},
                              "required": ["a"], "additionalProperties": False}, {"a": None}, {"a": "1"}),
    "enum": ({"type": "object", "properties": {"a": {"enum": ["GBP", "EUR"]}}, "required": ["a"],
              "additionalProperties": False}, {"a": "EUR"}, {"a": "USD"}),
    "pattern": ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^[A-Z]{3}$"}},
                 "required": ["a"], "additionalProperties": False}, {"a": "GBP"}, {"a": "gbp"}),
    "format: date": ({"type": "object", "properties": {"a": {"type": "string", "format": "date"}},
                      "required": ["a"], "additionalProperties": False}, {"a": "2026-01-31"}, {"a": "31/01/2026"}),
    "minLength/maxLength": ({"type": "object", "properties": {"a": {"type": "string", "minLength": 2,
                                                                    "maxLength": 3}},
                             "required": ["a"], "additionalProperties": False}, {"a": "ab"}, {"a": "abcd"}),
    "integer minimum/maximum": ({"type": "object", "properties": {"a": {"type": "integer", "minimum": 1,
                                                                        "maximum": 20}},
                                 "required": ["a"], "additionalProperties": False}, {"a": 12}, {"a": 21}),
    "array items/minItems": ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"},
                                                                     "minItems": 1}},
                              "required": ["a"], "additionalProperties": False}, {"a": [1]}, {"a": []}),
    "anyOf": ({"type": "object", "properties": {"a": {"anyOf": [{"type": "integer"}, {"type": "boolean"}]}},
               "required": ["a"], "additionalProperties": False}, {"a": True}, {"a": "x"}),
    "$ref/$defs": ({"type": "object", "$defs": {"c": {"type": "string", "enum": ["x"]}},
                    "properties": {"a": {"$ref": "#/$defs/c"}}, "required": ["a"], "additionalProperties": False},
                   {"a": "x"}, {"a": "y"}),
    "multipleOf": ({"type": "object", "properties": {"a": {"type": "integer", "multipleOf": 5}}, "required": ["a"],
                    "additionalProperties": False}, {"a": 10}, {"a": 7}),
    "uniqueItems": ({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "integer"},
                                                            "uniqueItems": True}},
                     "required": ["a"], "additionalProperties": False}, {"a": [1, 2]}, {"a": [1, 1]}),
    "not": ({"type": "object", "properties": {"a": {"type": "integer", "not": {"const": 3}}}, "required": ["a"],
             "additionalProperties": False}, {"a": 2}, {"a": 3}),
    "if/then/else": ({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}},
                      "if": {"properties": {"a": {"const": 1}}}, "then": {"required": ["b"]},
                      "required": ["a"], "additionalProperties": False}, {"a": 1, "b": "x"}, {"a": 1}),
}


def dumps(value) -> str:
    return json.dumps(value, ensure_ascii=False)  # as harness.prompts.target_text writes answers


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size: int, stops: list[int]):
        import xgrammar as xgr

        self.xgr = xgr
        self.version = getattr(xgr, "__version__", "?")
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stops)
        self.compiler = xgr.GrammarCompiler(info, max_threads=1, cache_enabled=False)
        self.vocab_size = vocab_size

    def compile(self, schema: dict):
        return self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                                 separators=(", ", ": "), strict_mode=True)

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def mask_step(self, matcher, logits, bitmask) -> None:
        matcher.fill_next_token_bitmask(bitmask, 0)
        self.xgr.apply_token_bitmask_inplace(logits, bitmask)

    def bitmask(self):
        return self.xgr.allocate_token_bitmask(1, self.vocab_size)

    def accept(self, matcher, token: int) -> bool:
        return bool(matcher.accept_token(token))


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab_size: int, stops: list[int]):
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg, self.torch_ops = llguidance, llguidance.torch
        from importlib.metadata import version
        self.version = version("llguidance")
        self.tok = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=stops[0])
        self.vocab_size = vocab_size

    def compile(self, schema: dict):
        grammar = self.llg.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "})
        matcher = self.llg.LLMatcher(self.tok, grammar)  # builds the grammar: its compile step
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return grammar

    def matcher(self, compiled):
        return self.llg.LLMatcher(self.tok, compiled)

    def bitmask(self):
        return self.torch_ops.allocate_token_bitmask(1, self.vocab_size)

    def mask_step(self, matcher, logits, bitmask) -> None:
        self.torch_ops.fill_next_token_bitmask(matcher, bitmask, 0)
        self.torch_ops.apply_token_bitmask_inplace(logits, bitmask)

    def accept(self, matcher, token: int) -> bool:
        return bool(matcher.consume_token(token)) and not matcher.is_error()


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer, vocab_size: int, stops: list[int]):
        import outlines_core  # noqa: F401

        raise RuntimeError("imports, but is not wired into this bench (needs its Vocabulary from the tokenizer)")


def accepts(lib, compiled, tokenizer, text: str) -> bool:
    matcher = lib.matcher(compiled)
    return all(lib.accept(matcher, t) for t in tokenizer(text, add_special_tokens=False).input_ids)


def main() -> None:
    import torch
    from transformers import AutoTokenizer

    from harness.lm import packaged

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=24, help="held-out answers of supplier_intake fed through")
    args = parser.parse_args()
    folder = packaged.resolve("packaged:smollm2-135m-instruct", Path.home() / ".cache" / "harness")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    vocab = max(len(tokenizer), 49152)
    stops = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    schema = json.loads((ROOT / "tasks/supplier_intake/schema.json").read_text())
    rows = [json.loads(line) for line in (ROOT / "tasks/supplier_intake/heldout.jsonl").read_text().splitlines()]
    answers = [dumps(r["form"]) for r in rows[:args.answers]]
    print(f"tokenizer: packaged SmolLM2-135M ({vocab} ids); {len(answers)} supplier_intake answers; "
          f"torch threads {torch.get_num_threads()}")
    results = {}
    for cls in (XGrammar, LLGuidance, OutlinesCore):
        try:
            start = time.perf_counter()
            lib = cls(tokenizer, vocab, stops)
            setup_s = time.perf_counter() - start
        except Exception as e:  # not importable here, or not usable: say so and go on
            print(f"{cls.name}: skipped ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})")
            continue
        start = time.perf_counter()
        compiled = lib.compile(schema)
        compile_s = time.perf_counter() - start
        per_token, bad = [], 0
        for text in answers:
            matcher, bitmask = lib.matcher(compiled), lib.bitmask()
            for token in [*tokenizer(text, add_special_tokens=False).input_ids, stops[0]]:
                logits = torch.zeros(1, vocab)
                t0 = time.perf_counter()
                lib.mask_step(matcher, logits, bitmask)
                ok = lib.accept(matcher, token)
                per_token.append(time.perf_counter() - t0)
                if not ok or logits[0, token] == float("-inf"):
                    bad += 1
                    break
        coverage = {}
        for feature, (small, good, wrong) in FEATURES.items():
            try:
                c = lib.compile(small)
            except Exception as e:
                coverage[feature] = f"error ({str(e).splitlines()[0][:60]})"
                continue
            ok_good, ok_wrong = accepts(lib, c, tokenizer, dumps(good)), accepts(lib, c, tokenizer, dumps(wrong))
            coverage[feature] = ("ok" if ok_good and not ok_wrong else
                                 "ignored (invalid instance accepted)" if ok_good else "refuses a valid instance")
        results[lib.name] = {"version": lib.version, "tokenizer_setup_s": round(setup_s, 3),
                             "compile_s": round(compile_s, 4), "tokens": len(per_token),
                             "mask_ms_mean": round(1e3 * statistics.fmean(per_token), 3),
                             "mask_ms_p95": round(1e3 * sorted(per_token)[int(0.95 * (len(per_token) - 1))], 3),
                             "gold_answers_refused": bad, "coverage": coverage}
        r = results[lib.name]
        print(f"{lib.name} {r['version']}: tokenizer {r['tokenizer_setup_s']} s, schema compile {r['compile_s']} s, "
              f"mask+accept {r['mask_ms_mean']} ms/token (p95 {r['mask_ms_p95']}) over {r['tokens']} tokens, "
              f"gold answers refused {bad}")
        for feature, verdict in coverage.items():
            print(f"    {feature:28s} {verdict}")
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
