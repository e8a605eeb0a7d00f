"""Check the brand_rewrite data against its own task.yaml.

Run from the repository root:  python tasks/brand_rewrite/check_rules.py
Prints, per rule, the pass rate over the drafts and over the reference rewrites (which must be 100%), then the
rule results of the hand-marked judge outputs, and validates the files: JSON parses, ids unique and well formed,
no duplicate or near-copy drafts between train and held-out, word counts, and that every number in a draft
survives in its rewrite. Exits 1 on any problem. Rule semantics are the harness's (harness/rules.py):
must -> re.search(REGEX, text, re.M) matches; must_not -> it does not; max_words -> len(text.split()) <= N.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SIGN_OFF = "Warm regards,\nThe Northwind Home team"


def passes(rule: dict, text: str) -> bool:
    if "must" in rule:
        return re.search(rule["must"], text, re.M) is not None
    if "must_not" in rule:
        return re.search(rule["must_not"], text, re.M) is None
    return len(text.split()) <= rule["max_words"]


def numbers(text: str) -> list[str]:
    return re.findall(r"\d+(?:[.,:]\d+)*", text)


def trigrams(text: str) -> set[tuple[str, ...]]:
    w = re.findall(r"[a-z0-9£']+", text.lower())
    return {tuple(w[i:i + 3]) for i in range(len(w) - 2)}


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 0.0


def main() -> int:
    spec = yaml.safe_load((HERE / "task.yaml").read_text())
    rules = spec["rules"]
    problems: list[str] = []
    data: dict[str, list[dict]] = {}
    for split, prefix in (("train", "br-tr-"), ("heldout", "br-ho-")):
        rows = []
        for n, line in enumerate((HERE / spec["splits"][split]).read_text().splitlines(), 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                problems.append(f"{split}:{n}: bad JSON ({e.msg})")
                continue
            if set(rec) != {"id", "draft", "rewrite"}:
                problems.append(f"{split}:{n}: keys {sorted(rec)}")
            if not re.fullmatch(re.escape(prefix) + r"\d{4}", rec.get("id", "")):
                problems.append(f"{split}:{n}: id {rec.get('id')!r}")
            rows.append(rec)
        data[split] = rows

    everything = data["train"] + data["heldout"]
    ids = [r["id"] for r in everything]
    if len(ids) != len(set(ids)):
        problems.append("duplicate ids")
    drafts = [r["draft"] for r in everything]
    if len(drafts) != len(set(drafts)):
        problems.append("duplicate drafts")
    if len(data["train"]) < 210 or len(data["heldout"]) < 110:
        problems.append(f"counts: train {len(data['train'])}, heldout {len(data['heldout'])}")

    print(f"train {len(data['train'])}, heldout {len(data['heldout'])}")
    for split, rows in data.items():
        dw = [len(r["draft"].split()) for r in rows]
        rw = [len(r["rewrite"].split()) for r in rows]
        print(f"  {split}: draft words {min(dw)}-{max(dw)} (mean {sum(dw) / len(dw):.0f}), "
              f"rewrite words {min(rw)}-{max(rw)} (mean {sum(rw) / len(rw):.0f})")
        for r, d in zip(rows, dw):
            if not 30 <= d <= 160:
                problems.append(f"{r['id']}: draft has {d} words")
            missing = [x for x in numbers(r["draft"]) if x not in set(numbers(r["rewrite"]))]
            if missing:
                problems.append(f"{r['id']}: numbers of the draft missing from the rewrite: {missing}")
            m = re.match(r"Hi ([A-Za-z'-]+),", r["rewrite"])
            if m and m.group(1) not in r["draft"]:
                problems.append(f"{r['id']}: greeting name {m.group(1)!r} not in the draft")
            if not r["rewrite"].endswith("\n\n" + SIGN_OFF):
                problems.append(f"{r['id']}: rewrite does not end with the sign-off")

    def rate(check, rows) -> str:
        k = sum(check(r) for r in rows)
        return f"{k:>3}/{len(rows):<3} {100 * k / len(rows):5.1f}%"

    print("\nrule pass rates:        train drafts        held-out drafts     all rewrites")
    for rule in [*rules, None]:
        ok = (lambda t: all(passes(x, t) for x in rules)) if rule is None else (lambda t, rule=rule: passes(rule, t))
        name = "all rules" if rule is None else rule["name"]
        print(f"  {name:<18} {rate(lambda r: ok(r['draft']), data['train']):<19} "
              f"{rate(lambda r: ok(r['draft']), data['heldout']):<19} {rate(lambda r: ok(r['rewrite']), everything)}")
        for r in everything:
            if not ok(r["rewrite"]):
                problems.append(f"{r['id']}: rewrite fails {name}")

    # near-copies: word-trigram Jaccard similarity of each held-out draft with every train draft
    tr = [trigrams(r["draft"]) for r in data["train"]]
    best = max((jaccard(trigrams(h["draft"]), t), h["id"]) for h in data["heldout"] for t in tr)
    print(f"\nhighest held-out/train draft similarity (word-trigram Jaccard): {best[0]:.3f} ({best[1]})")
    if best[0] > 0.3:
        problems.append(f"near-copy draft between splits: {best[1]} ({best[0]:.2f})")

    marked_file = HERE / spec["judge"]["marked"]
    marked = [json.loads(line) for line in marked_file.read_text().splitlines()]
    held_ids = {r["id"] for r in data["heldout"]}
    n_pass = sum(m["mark"] == "PASS" for m in marked)
    print(f"\njudge_marked: {len(marked)} outputs, {n_pass} PASS / {len(marked) - n_pass} FAIL")
    for m in marked:
        if m["example_id"] not in held_ids:
            problems.append(f"{m['id']}: unknown example_id {m['example_id']}")
        if m["mark"] not in ("PASS", "FAIL"):
            problems.append(f"{m['id']}: mark {m['mark']!r}")
        ok = all(passes(rule, m["output"]) for rule in rules)
        if m["mark"] == "PASS" and not ok:
            problems.append(f"{m['id']}: marked PASS but breaks a rule")
    caught = sum(m["mark"] == "FAIL" and not all(passes(rule, m["output"]) for rule in rules) for m in marked)
    print(f"  FAILs the rules catch: {caught}/{len(marked) - n_pass}; the rest break facts or tone and need the judge")

    print()
    for p in problems:
        print("PROBLEM", p)
    print("OK" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
