"""Classification: the answer is one label of a closed set (task.yaml `labels:`, optional `label_text:`).

Scored by accuracy and macro-F1 over the labels; an output no label can be read from counts as invalid.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from harness.answer_constraint import LABELS, Constraint
from harness.errors import TaskError
from harness.kinds.base import Breakdown, Where, f1, mean, no_meta

name = "classification"
metrics = ("accuracy", "macro_f1")
default_metric = "accuracy"
mean_of = {"accuracy": "correct", "invalid_rate": "invalid"}
proxy_of = {"macro_f1": "correct"}
labelled = True
keys = frozenset({"labels", "label_text"})
breakdown = Breakdown("per_label.png", "F1 per label",
                      lambda details: {k: v["f1"] for k, v in details.get("per_label", {}).items()})
example_meta = no_meta


def read_spec(raw: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """labels: a list, or label: description; label_text: label → the text shown to and scored by the model."""
    labels, descriptions = raw.get("labels"), {}
    if isinstance(labels, dict):
        descriptions = {str(k): str(v) for k, v in labels.items() if v}
        labels = tuple(str(k) for k in labels)
    elif isinstance(labels, list):
        labels = tuple(str(v) for v in labels)
    else:
        labels = ()
    if len(labels) < 2:
        raise TaskError("a classification task needs at least two labels (a list, or label: description)",
                        file=path, field="labels")
    if len(set(labels)) != len(labels):
        raise TaskError("labels are not unique", file=path, field="labels")
    label_text = raw.get("label_text") or {}
    if not isinstance(label_text, dict) or set(label_text) - set(labels):
        raise TaskError("must map labels of the label set to readable text", file=path, field="label_text")
    return {"labels": labels, "label_descriptions": descriptions,
            "label_text": {str(k): str(v) for k, v in label_text.items()}}


def parse_target(settings: Mapping[str, Any], value: Any, where: Where) -> str:
    target, labels = str(value), settings["labels"]
    if target not in labels:
        shown = ", ".join(labels[:12]) + (", …" if len(labels) > 12 else "")
        raise where.error(f"label {target!r} is not in the task's label set ({shown})")
    return target


def answer_text(task: Any, target: Any) -> str:
    return task.text_of(target)


def constraint(task: Any, mode: str, insist: bool, field: str) -> Constraint | None:
    """Generated answers are held to the label texts; label scoring already chooses among the labels."""
    if mode == "generate":
        return Constraint(LABELS, labels=tuple(task.text_of(label) for label in task.labels))
    return None


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
    for text, label in sorted(names.items(), key=lambda kv: -len(kv[0])):
        m = re.search(r"(?<![a-z0-9])" + re.escape(text) + r"(?![a-z0-9])", out)
        if m and (pos is None or m.start() < pos):
            best, pos = label, m.start()
    return best


def _counts(label: str, gold: Sequence[str], parsed: Sequence[str | None]) -> tuple[int, int, int]:
    tp = sum(1 for p, t in zip(parsed, gold) if p == label and t == label)
    fp = sum(1 for p, t in zip(parsed, gold) if p == label and t != label)
    fn = sum(1 for p, t in zip(parsed, gold) if p != label and t == label)
    return tp, fp, fn


def macro_f1(labels: Sequence[str], gold: Sequence[str], parsed: Sequence[str | None]) -> float:
    """Mean F1 over the labels that occur in the gold set or among the predictions."""
    f1s = []
    for label in labels:
        tp, fp, fn = _counts(label, gold, parsed)
        if tp + fn or fp:
            f1s.append(f1(tp, fp, fn))
    return sum(f1s) / len(f1s) if f1s else 0.0


def aggregate(records: Sequence[Mapping], labels: Sequence[str]) -> dict[str, float]:
    return {"accuracy": mean(records, "correct"),
            "macro_f1": macro_f1(labels, [r["gold"] for r in records], [r["parsed"] for r in records]),
            "invalid_rate": mean(records, "invalid")}


def score_labels(labels: Sequence[str], targets: Sequence[str], outputs: Sequence[str],
                 label_text: Mapping[str, str] | None = None) -> dict:
    """Metrics, per-example records, and details: precision/recall/F1 per label and the confusion matrix."""
    parsed = [parse_label(o, labels, label_text) for o in outputs]
    per_example = [{"correct": int(p == t), "invalid": int(p is None), "gold": t, "parsed": p}
                   for p, t in zip(parsed, targets)]
    per_label = {}
    for label in labels:
        tp, fp, fn = _counts(label, targets, parsed)
        support = tp + fn
        per_label[label] = {"precision": tp / (tp + fp) if tp + fp else 0.0,
                            "recall": tp / support if support else 0.0, "f1": f1(tp, fp, fn), "support": support}
    columns = list(labels) + ["(invalid)"]
    matrix = [[sum(1 for p, t in zip(parsed, targets) if t == gold and (p or "(invalid)") == col)
               for col in columns] for gold in labels]
    return {"metrics": aggregate(per_example, labels) if per_example else {}, "per_example": per_example,
            "details": {"per_label": per_label,
                        "confusion": {"rows": list(labels), "columns": columns, "counts": matrix}}}


def score(task: Any, examples: Sequence[Any], outputs: Sequence[str]) -> dict:
    return score_labels(task.labels, [ex.target for ex in examples], outputs, task.label_text)


def bootstrap(metric: str, records: Sequence[Mapping], idx: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Macro-F1 per resample, vectorised (label code len(labels) means invalid)."""
    if metric != "macro_f1":
        raise ValueError(f"no bootstrap rule for metric {metric!r}")
    code = {label: i for i, label in enumerate(labels)}
    gold = np.asarray([code[r["gold"]] for r in records])
    pred = np.asarray([code.get(r["parsed"], len(labels)) for r in records])
    side, rows = len(labels) + 1, idx.shape[0]
    codes = (np.arange(rows)[:, None] * side * side + gold[idx] * side + pred[idx]).ravel()
    counts = np.bincount(codes, minlength=rows * side * side).reshape(rows, side, side)[:, :len(labels), :]
    tp = np.einsum("bii->bi", counts[:, :, :len(labels)])
    fn = counts.sum(axis=2) - tp                    # gold label, predicted anything else (incl. invalid)
    fp = counts[:, :, :len(labels)].sum(axis=1) - tp   # predicted label, gold anything else
    present = (tp + fn + fp) > 0
    values = np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)
    return np.where(present.any(axis=1), (values * present).sum(axis=1) / np.maximum(present.sum(axis=1), 1), 0.0)
