"""Data checks run before any training: held-out inputs that also occur (exactly or nearly) in train or the
knowledge corpus, held-out answers that are also training answers, label balance, and personal-data patterns in
training data. Pure: texts and vectors in, a JSON-able report out. PII is reported as counts and example ids, never
the matched values; `redact` replaces what the same detector finds (the prompts stored in predictions.jsonl go
through it).

Phone numbers: Google's libphonenumber (the `phonenumbers` package) finds candidates in international form
(+CC, any country) and in the national forms of PHONE_REGIONS, e.g. UK mobiles as 07700 900123, 07700900123 or
+44 7700 900123; a candidate counts when it has 9-15 digits and a phone's shape (a leading +, ( or trunk 0, or three
or more digit groups), so dates, amounts and order numbers do not.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable, Mapping, Sequence

import numpy as np
import phonenumbers

from harness import kinds
from harness.task import Task, exact_overlap

PII_PATTERNS = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "phone": re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,5}\)[\s.-]?)?\d{2,5}(?:[\s.-]\d{2,5}){1,4}(?![\w])"),
    "card_number": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b"),
    "sort_code": re.compile(r"(?<![\d-])\d{2}-\d{2}-\d{2}(?![\d-])"),
}


def _luhn(digits: str) -> bool:
    total, parity = 0, len(digits) % 2
    for i, ch in enumerate(digits):
        d = int(ch)
        if i % 2 == parity:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


PHONE_REGIONS = ("GB", "US")  # national number formats searched besides the international +CC form
DETECTOR = f"phonenumbers {phonenumbers.__version__} {','.join(PHONE_REGIONS)}"  # part of data_checks.json's key
CHECKS = ("overlap", "label_balance", "answers_in_train", "pii")  # also part of it: a new check is computed afresh
_DIGIT_RUN = re.compile(r"\d(?:[\s().+/-]{0,3}\d){6}")  # seven digits close together: a phone is possible


def _phone_shaped(raw: str) -> bool:
    digits = re.sub(r"\D", "", raw)
    groups = len(re.findall(r"\d+", raw))
    # "2211-40915" is an order number, not a phone; a trunk 0 or a + or ( is a phone's shape
    return 9 <= len(digits) <= 15 and (raw.lstrip().startswith(("+", "(", "0")) or groups >= 3)


def pii_spans(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) of each personal-data match, not overlapping, in text order (card numbers must pass the
    Luhn check; phone numbers as the module says)."""
    found = []
    for m in PII_PATTERNS["card_number"].finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and _luhn(digits):
            found.append(("card_number", *m.span()))
    for kind in ("email", "iban", "sort_code"):
        found.extend((kind, *m.span()) for m in PII_PATTERNS[kind].finditer(text))
    taken = [(s, e) for _, s, e in found]
    phones = [m.span() for m in PII_PATTERNS["phone"].finditer(text) if _phone_shaped(m.group())]
    if _DIGIT_RUN.search(text):
        for region in PHONE_REGIONS:
            for m in phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.POSSIBLE):
                if _phone_shaped(m.raw_string):
                    phones.append((m.start, m.end))
    for start, end in sorted(phones, key=lambda span: (span[0], -span[1])):
        if not any(s < end and start < e for s, e in taken):
            found.append(("phone", start, end))
            taken.append((start, end))
    return sorted(found, key=lambda f: f[1])


def pii_kinds(text: str) -> Counter:
    """How many matches of each personal-data kind a text holds."""
    return Counter(kind for kind, _, _ in pii_spans(text))


def redact(text: str) -> tuple[str, int]:
    """The text with each personal-data match replaced by its kind in brackets ([email], [phone], ...), and how many
    were replaced."""
    spans = pii_spans(text)
    if not spans:
        return text, 0
    out, at = [], 0
    for kind, start, end in spans:
        if start >= at:
            out.append(text[at:start] + f"[{kind}]")
            at = end
    return "".join(out) + text[at:], len(spans)


def _texts(ex) -> str:
    target = ex.target
    if isinstance(target, Mapping):
        target = " ".join(str(v) for v in target.values() if v is not None)
    elif isinstance(target, (tuple, list)):
        target = " ".join(target)
    return f"{ex.input}\n{target or ''}"


def pii_scan(examples: Sequence) -> dict:
    counts, hits = Counter(), []
    for ex in examples:
        kinds = pii_kinds(_texts(ex))
        if kinds:
            counts.update(kinds)
            hits.append({"id": ex.id, "kinds": sorted(kinds)})
    return {"counts": dict(sorted(counts.items())), "examples": hits}


def near_duplicates(heldout_ids: Sequence[str], heldout_vecs: np.ndarray, other_ids: Sequence[str],
                    other_vecs: np.ndarray, threshold: float, skip: set[str] = frozenset(),
                    block: int = 1024) -> list[dict]:
    """Held-out examples whose nearest `other` example has cosine ≥ threshold (vectors L2-normalised)."""
    found = []
    for start in range(0, len(heldout_ids), block):
        sims = heldout_vecs[start:start + block] @ other_vecs.T
        best = sims.argmax(axis=1)
        for row, col in enumerate(best):
            hid = heldout_ids[start + row]
            if sims[row, col] >= threshold and hid not in skip:
                found.append({"heldout": hid, "other": other_ids[col], "cosine": round(float(sims[row, col]), 4)})
    return found


def answers_in_train(task: Task) -> dict | None:
    """Held-out examples of a generation task whose reference answer is also a training answer (the leakage check's
    `exact_overlap`: case and whitespace aside). A tuned arm can reproduce such an answer from memory, so on them the
    held-out set tests recall of trained answers (an FAQ's), not answers the model never saw. None for other kinds:
    a label is a training answer by design, and an extraction's field values come from its input."""
    if task.type != "generation":
        return None
    found = exact_overlap([(ex.id, ex.target) for ex in task.heldout],
                          [(ex.id, ex.target) for ex in [*task.train, *task.split("dev")]])
    return {"n": len(found), "of": len(task.heldout), "ids": [heldout_id for heldout_id, _ in found]}


def label_balance(task: Task) -> dict | None:
    if not kinds.of(task).labelled:
        return None
    train, held = Counter(ex.target for ex in task.train), Counter(ex.target for ex in task.heldout)
    present = [train[label] for label in task.labels if train[label]]
    return {"train": {label: train[label] for label in task.labels},
            "heldout": {label: held[label] for label in task.labels},
            "missing_from_train": [label for label in task.labels if not train[label]],
            "imbalance_ratio": max(present) / min(present) if present else None}


def run_checks(task: Task, encode: Callable[[Sequence[str]], np.ndarray] | None, threshold: float) -> dict:
    """All checks; `encode` (texts → normalised vectors) enables the near-duplicate check."""
    heldout = [(ex.id, ex.input) for ex in task.heldout]
    others = {"train": [(ex.id, ex.input) for ex in task.train]}
    if task.split("knowledge"):
        others["knowledge"] = [(ex.id, ex.input) for ex in task.split("knowledge")]
    overlap = {}
    held_vecs = encode([t for _, t in heldout]) if encode else None
    for split, items in others.items():
        exact = [{"heldout": h, "other": o} for h, o in exact_overlap(heldout, items)]
        near = []
        if encode:
            near = near_duplicates([i for i, _ in heldout], held_vecs, [i for i, _ in items],
                                   encode([t for _, t in items]), threshold, skip={e["heldout"] for e in exact})
        overlap[split] = {"exact": exact, "near": near}
    training = list(task.train) + list(task.split("dev"))
    return {"near_threshold": threshold if encode else None, "overlap": overlap, "label_balance": label_balance(task),
            "answers_in_train": answers_in_train(task), "pii": pii_scan(training), "train_examples": len(training)}
