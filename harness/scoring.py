"""Scoring, owned by the harness: metrics per task type, kept per example so strategies can be paired.

Pure functions: records in, numbers out. No torch, no strategy imports.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from typing import Any, Mapping, Sequence

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD-style normalisation: lower case, no punctuation, no articles, single spaces."""
    text = str(text).lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _norm_label(text: str) -> str:
    return re.sub(r"[\s_\-]+", " ", str(text)).strip().strip(".:;,!\"'`*").strip().casefold()


def parse_label(output: str, labels: Sequence[str], label_text: Mapping[str, str] | None = None) -> str | None:
    """Map a model's output to a label: exact (normalised) match of the label or its text first, then the
    label whose name appears earliest in the output. None when no label can be read."""
    label_text = label_text or {}
    names = {}
    for label in labels:
        names[_norm_label(label)] = label
        names.setdefault(_norm_label(label_text.get(label, label)), label)
    out = _norm_label(output)
    if out in names:
        return names[out]
    first_line = _norm_label(out.splitlines()[0]) if out else ""
    if first_line in names:
        return names[first_line]
    best, pos = None, None
    for name, label in sorted(names.items(), key=lambda kv: -len(kv[0])):
        m = re.search(r"(?<![a-z0-9])" + re.escape(name) + r"(?![a-z0-9])", out)
        if m and (pos is None or m.start() < pos):
            best, pos = label, m.start()
    return best


def parse_json_object(output: str) -> dict | None:
    """Tolerant JSON parsing of a model's output: code fences, prose around the object, trailing commas."""
    text = str(output).strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    start = text.find("{")
    while start != -1:
        depth, in_str, esc = 0, False, False
        for i in range(start, len(text)):
            ch = text[i]
            if in_str:
                esc = (ch == "\\") and not esc
                if ch == '"' and not esc:
                    in_str = False
                continue
            if ch == '"':
                in_str = True
            elif ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth == 0:
                    candidate = text[start:i + 1]
                    for attempt in (candidate, re.sub(r",\s*([}\]])", r"\1", candidate)):
                        try:
                            obj = json.loads(attempt)
                        except json.JSONDecodeError:
                            continue
                        if isinstance(obj, dict):
                            return obj
                    break
        start = text.find("{", start + 1)
    return None


def _norm_value(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True)
    text = " ".join(str(value).split()).casefold()
    return text or None


def token_f1(prediction: str, reference: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred and not ref:
        return 1.0
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def _f1(tp: float, fp: float, fn: float) -> float:
    return 0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn)


def _mean(records: Sequence[Mapping], key: str) -> float:
    return sum(r[key] for r in records) / len(records) if records else 0.0


def macro_f1(labels: Sequence[str], gold: Sequence[str], parsed: Sequence[str | None]) -> float:
    """Mean F1 over the labels that occur in the gold set or among the predictions."""
    f1s = []
    for label in labels:
        tp = sum(1 for p, t in zip(parsed, gold) if p == label and t == label)
        fp = sum(1 for p, t in zip(parsed, gold) if p == label and t != label)
        fn = sum(1 for p, t in zip(parsed, gold) if p != label and t == label)
        if tp + fn or fp:
            f1s.append(_f1(tp, fp, fn))
    return sum(f1s) / len(f1s) if f1s else 0.0


# Metrics that are the mean of one per-example value: the key each is averaged from.
MEAN_OF = {"accuracy": "correct", "invalid_rate": "invalid", "exact_match": "exact_match", "token_f1": "token_f1",
           "field_accuracy": "field_accuracy", "record_exact_match": "record_exact_match",
           "valid_json_rate": "valid_json", "schema_valid_rate": "schema_valid", "mrr": "reciprocal_rank",
           "chrf": "chrf", "rouge_l": "rouge_l", "embedding_cosine": "embedding_cosine", "rules_pass": "rules_pass",
           "judge_pass": "judge_pass", "fact_recall": "fact_recall", "answer_exact": "answer_exact"}
GENERATION_METRICS = ("exact_match", "token_f1", "chrf", "rouge_l", "embedding_cosine", "rules_pass", "judge_pass",
                      "fact_recall", "answer_exact")
FACT_METRICS = ("fact_recall", "answer_exact")  # computed together (harness/facts.py)


def mean_key(metric: str) -> str | None:
    """The per-example key a metric averages (recall@k averages `recall@k`), or None (macro_f1, field_f1)."""
    return metric if metric.startswith("recall@") else MEAN_OF.get(metric)


def aggregate(task_type: str, records: Sequence[Mapping], labels: Sequence[str] = ()) -> dict[str, float]:
    """Every metric of a task type from per-example records: the one place metrics are computed, used for the
    point estimates and for bootstrap resamples alike."""
    records = list(records)
    metrics = {}
    if not records:
        return metrics
    if task_type == "classification":
        metrics = {"accuracy": _mean(records, "correct"),
                   "macro_f1": macro_f1(labels, [r["gold"] for r in records], [r["parsed"] for r in records]),
                   "invalid_rate": _mean(records, "invalid")}
    elif task_type == "extraction":
        tp, fp, fn = (sum(r[k] for r in records) for k in ("tp", "fp", "fn"))
        metrics = {"field_f1": _f1(tp, fp, fn), **{m: _mean(records, MEAN_OF[m]) for m in
                                                   ("field_accuracy", "record_exact_match", "valid_json_rate",
                                                    "schema_valid_rate") if MEAN_OF[m] in records[0]}}
    elif task_type == "generation":
        metrics = {m: _mean(records, m) for m in GENERATION_METRICS if m in records[0]}
    else:
        raise ValueError(f"unknown task type {task_type!r}")
    extra = sorted({k for r in records[:1] for k in r if k.startswith("recall@")})
    metrics.update({k: _mean(records, k) for k in extra})
    if records and "reciprocal_rank" in records[0]:
        metrics["mrr"] = _mean(records, "reciprocal_rank")
    return metrics


def score_classification(labels: Sequence[str], targets: Sequence[str], outputs: Sequence[str],
                         label_text: Mapping[str, str] | None = None) -> dict:
    parsed = [parse_label(o, labels, label_text) for o in outputs]
    per_example = [{"correct": int(p == t), "invalid": int(p is None), "gold": t, "parsed": p}
                   for p, t in zip(parsed, targets)]
    per_label = {}
    for label in labels:
        tp = sum(1 for p, t in zip(parsed, targets) if p == label and t == label)
        fp = sum(1 for p, t in zip(parsed, targets) if p == label and t != label)
        fn = sum(1 for p, t in zip(parsed, targets) if p != label and t == label)
        support = tp + fn
        per_label[label] = {"precision": tp / (tp + fp) if tp + fp else 0.0,
                            "recall": tp / support if support else 0.0, "f1": _f1(tp, fp, fn), "support": support}
    columns = list(labels) + ["(invalid)"]
    matrix = [[sum(1 for p, t in zip(parsed, targets) if t == gold and (p or "(invalid)") == col)
               for col in columns] for gold in labels]
    return {"metrics": aggregate("classification", per_example, labels), "per_example": per_example,
            "details": {"per_label": per_label,
                        "confusion": {"rows": list(labels), "columns": columns, "counts": matrix}}}


def _number_fields(schema: Mapping | None) -> set[str]:
    """Fields whose schema type is a number: compared as numbers (1250 = 1250.00 = "1,250.00")."""
    props = (schema or {}).get("properties") or {}
    out = set()
    for name, prop in props.items():
        kinds = prop.get("type") if isinstance(prop, Mapping) else None
        kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
        if "number" in kinds or "integer" in kinds:
            out.add(name)
    return out


def _as_number(value: Any) -> Any:
    if value is None or isinstance(value, bool):
        return value
    try:
        return format(float(str(value).replace(",", "").strip()), ".6g")
    except ValueError:
        return value


def schema_validator(schema: Mapping):
    """A JSON Schema validator for the task's schema (built once per scoring call)."""
    import jsonschema

    plain = _thaw(schema)
    return jsonschema.validators.validator_for(plain)(plain)


def _thaw(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(v) for v in value]
    return value


def score_extraction(fields: Sequence[str], targets: Sequence[Mapping], outputs: Sequence[str],
                     schema: Mapping | None = None) -> dict:
    field_hits = Counter()
    numbers = _number_fields(schema)
    validator = schema_validator(schema) if schema is not None else None
    per_example = []
    for gold, out in zip(targets, outputs):
        obj = parse_json_object(out)
        pred = obj if obj is not None else {}
        hits, tp, fp, fn = {}, 0, 0, 0
        for f in fields:
            g, p = gold.get(f), pred.get(f)
            if f in numbers:
                g, p = _as_number(g), _as_number(p)
            g, p = _norm_value(g), _norm_value(p)
            hits[f] = int(g == p)
            field_hits[f] += hits[f]
            if p is not None and p == g:
                tp += 1
            else:
                fp += p is not None
                fn += g is not None
        record = {"valid_json": int(obj is not None), "fields": hits, "tp": tp, "fp": fp, "fn": fn,
                  "record_exact_match": int(all(hits.values())), "field_accuracy": sum(hits.values()) / len(fields)}
        if validator is not None:
            record["schema_valid"] = int(obj is not None and validator.is_valid(obj))
        per_example.append(record)
    n = len(targets)
    micro = {k: sum(e[k] for e in per_example) for k in ("tp", "fp", "fn")}
    return {"metrics": aggregate("extraction", per_example), "per_example": per_example,
            "details": {"per_field_exact_match": {f: field_hits[f] / n if n else 0.0 for f in fields},
                        "micro": micro}}


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


def score_generation(targets: Sequence[str | Sequence[str]], outputs: Sequence[str], rules: Sequence[Mapping] = (),
                     metrics: Sequence[str] = (), inputs: Sequence[str] | None = None,
                     facts: Sequence[Sequence[Any] | None] | None = None) -> dict:
    """`inputs` (the questions) and `facts` (each example's declared facts, or None) feed fact_recall and
    answer_exact when the task asks for either (harness/facts.py)."""
    from harness.facts import fact_scores
    from harness.rules import check_all

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
    return {"metrics": aggregate("generation", per_example), "per_example": per_example, "details": details}


def retrieval_per_example(gold: Sequence[Sequence[str]], ranked: Sequence[Sequence[str]],
                           ks: Sequence[int] = (1, 5)) -> list[dict]:
    """Per example: recall@k (share of its gold documents in the top k) and the reciprocal rank of the first gold
    document (repeated ids, e.g. several chunks of one document, count at their first rank)."""
    out = []
    for gold_ids, ranking in zip(gold, ranked):
        docs = list(dict.fromkeys(ranking))
        gold_set = set(gold_ids)
        rank = next((i for i, d in enumerate(docs, start=1) if d in gold_set), None)
        out.append({**{f"recall@{k}": len(gold_set & set(docs[:k])) / len(gold_set) for k in ks},
                    "reciprocal_rank": 1 / rank if rank else 0.0})
    return out


def retrieval_metrics(gold: Sequence[Sequence[str]], ranked: Sequence[Sequence[str]], ks: Sequence[int] = (1, 5)) -> dict:
    """recall@k and MRR averaged over examples (see retrieval_per_example)."""
    records = retrieval_per_example(gold, ranked, ks)
    if not records:
        return {}
    return {**{f"recall@{k}": _mean(records, f"recall@{k}") for k in ks}, "mrr": _mean(records, "reciprocal_rank")}


def score(task_type: str, targets: Sequence[Any], outputs: Sequence[str], *, labels: Sequence[str] = (),
          label_text: Mapping[str, str] | None = None, fields: Sequence[str] = (), schema: Mapping | None = None,
          rules: Sequence[Mapping] = (), metrics: Sequence[str] = (), inputs: Sequence[str] | None = None,
          facts: Sequence[Sequence[Any] | None] | None = None) -> dict:
    """Score aligned targets and raw model outputs for one strategy. Returns metrics, per-example scores
    (same order as the inputs) and details (confusion matrix, per-label or per-field breakdown)."""
    if len(targets) != len(outputs):
        raise ValueError(f"{len(targets)} targets but {len(outputs)} outputs")
    if task_type == "classification":
        return score_classification(labels, targets, outputs, label_text)
    if task_type == "extraction":
        return score_extraction(fields, targets, outputs, schema)
    if task_type == "generation":
        return score_generation(targets, outputs, rules, metrics, inputs, facts)
    raise ValueError(f"unknown task type {task_type!r}")


def score_examples(task, examples: Sequence[Any], outputs: Sequence[str]) -> dict:
    """`score` for examples of a task (harness.task.Task): its labels, fields, schema, rules and metrics, and the
    examples' inputs and declared facts."""
    return score(task.type, [ex.target for ex in examples], outputs, labels=task.labels, label_text=task.label_text,
                 fields=task.fields, schema=task.schema, rules=task.rules, metrics=task.metrics,
                 inputs=[ex.input for ex in examples], facts=[ex.meta.get("facts") for ex in examples])
