"""Generation: the answer is free text, scored against one or more reference texts.

Always exact match and token F1 (SQuAD-style normalisation); chrF, ROUGE-L, fact recall / answer exactness
(declared `facts` of a data record, harness/facts.py) and output rules when task.yaml asks for them; embedding
cosine and the LLM judge's pass rate are measured by the runner and joined per example (scoring.score_arm).
task.yaml may end answers early: `stop:` strings and `max_sentences:`.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from harness.errors import ConfigError, TaskError
from harness.facts import fact_scores
from harness.kinds.base import Where, mean, no_ratio
from harness.rules import check_all

name = "generation"
metrics = ("exact_match", "token_f1", "chrf", "rouge_l", "embedding_cosine", "rules_pass", "judge_pass",
           "fact_recall", "answer_exact")
default_metric = "token_f1"
mean_of = {m: m for m in metrics}
proxy_of: dict[str, str] = {}
labelled = False
keys = frozenset({"stop", "max_sentences"})
breakdown = None
bootstrap = no_ratio
FACT_METRICS = ("fact_recall", "answer_exact")  # computed together (harness/facts.py)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def read_spec(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """`stop:` (strings that end a generated answer) and `max_sentences:` (a sentence limit)."""
    stop, most = raw.get("stop"), raw.get("max_sentences")
    stop = [stop] if isinstance(stop, str) else stop
    if stop is not None and (not isinstance(stop, list) or not all(isinstance(x, str) and x for x in stop)):
        raise TaskError('must be a list of non-empty strings, e.g. ["\\n"]', file=path, field="stop")
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise TaskError(f"must be a positive whole number, got {most!r}", file=path, field="max_sentences")
    return {"stop": tuple(stop or ()), "max_sentences": most}


def parse_target(settings: Mapping[str, Any], value: Any, where: Where) -> str | tuple[str, ...]:
    """One reference text, or a list of acceptable ones."""
    if isinstance(value, list):
        if not all(isinstance(t, str) for t in value):
            raise where.error("references must be strings")
        return tuple(value)
    return str(value)


def example_meta(settings: Mapping[str, Any], record: Mapping[str, Any], where: Where) -> dict:
    """The declared facts of the answer (harness/facts.py), when the record has them."""
    facts = record.get(where.columns["facts"])
    if facts is None:
        return {}
    if not _valid_facts(facts):
        raise where.error('must be a non-empty list of facts, each a phrase or a list of acceptable phrasings '
                          '(e.g. ["27 days", ["Lantern", "the HR portal"]])', column="facts")
    return {"facts": facts}


def _valid_facts(facts: Any) -> bool:
    def phrase(x: Any) -> bool:
        return isinstance(x, str) and bool(x.strip())

    return isinstance(facts, list) and bool(facts) and all(
        phrase(f) or (isinstance(f, list) and f and all(map(phrase, f))) for f in facts)


def answer_text(task: Any, target: Any) -> str:
    return target if isinstance(target, str) else target[0]


def constraint(task: Any, mode: str, insist: bool, field: str) -> None:
    if insist:
        raise ConfigError(f"constrained decoding needs an extraction schema or a label set ({task.name} is a "
                          f"{task.type} task)", field=field)
    return None


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = str(text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred and not ref:
        return 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def chrf(prediction: str, references: Sequence[str]) -> float:
    """chrF (sacrebleu, character n-grams, β = 2) against the references, on a 0–1 scale."""
    from sacrebleu.metrics import CHRF

    return CHRF().sentence_score(prediction, list(references)).score / 100


_ROUGE = None


def rouge_l(prediction: str, references: Sequence[str]) -> float:
    """ROUGE-L F-measure (rouge-score, Porter stemming), the best over the references."""
    global _ROUGE
    if _ROUGE is None:
        from rouge_score import rouge_scorer

        _ROUGE = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return max(_ROUGE.score(r, prediction)["rougeL"].fmeasure for r in references)


def score_texts(targets: Sequence[str | Sequence[str]], outputs: Sequence[str], rules: Sequence[Mapping] = (),
                metrics: Sequence[str] = (), inputs: Sequence[str] | None = None,
                facts: Sequence[Sequence[Any] | None] | None = None) -> dict:
    """Metrics, per-example records and details (pass rate per rule). `inputs` (the questions) and `facts`
    (each example's declared facts, or None) feed fact_recall and answer_exact when asked for."""
    per_example = []
    want_facts = any(m in FACT_METRICS for m in metrics)
    for i, (refs, out) in enumerate(zip(targets, outputs)):
        refs = [refs] if isinstance(refs, str) else list(refs)
        record = {"exact_match": max(int(normalize_answer(out) == normalize_answer(r)) for r in refs),
                  "token_f1": max(token_f1(out, r) for r in refs)}
        if want_facts:
            record.update(fact_scores(out, refs, inputs[i] if inputs else "", facts[i] if facts else None))
        if "chrf" in metrics:
            record["chrf"] = chrf(out, refs)
        if "rouge_l" in metrics:
            record["rouge_l"] = rouge_l(out, refs)
        if rules:
            record["rules"] = check_all(rules, out)
            record["rules_pass"] = int(all(record["rules"].values()))
        per_example.append(record)
    details = {}
    if rules and per_example:
        details["per_rule_pass_rate"] = {r["name"]: sum(e["rules"][r["name"]] for e in per_example) / len(per_example)
                                         for r in rules}
    return {"metrics": aggregate(per_example, ()) if per_example else {}, "per_example": per_example,
            "details": details}


def score(task: Any, examples: Sequence[Any], outputs: Sequence[str]) -> dict:
    return score_texts([ex.target for ex in examples], outputs, task.rules, task.metrics,
                       [ex.input for ex in examples], [ex.meta.get("facts") for ex in examples])


def aggregate(records: Sequence[Mapping], labels: Sequence[str]) -> dict[str, float]:
    return {m: mean(records, key) for m, key in mean_of.items() if key in records[0]}
