"""Output rules declared in task.yaml (`rules:`), checked on every output. Pure.

Each rule has a `name` and one of:
- `must: REGEX`       passes when `re.search(REGEX, output, re.M)` finds a match;
- `must_not: REGEX`   passes when it finds none;
- `max_words: N`      passes when the output has at most N words (`len(output.split())`);
- `section: NAME` (+ optional `max_words: N`): passes when a line `NAME: text` exists (the first one counts), its
  text is not empty and, with `max_words`, has at most N words.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Any, Mapping, Sequence

from harness.errors import TaskError

KINDS = ("must", "must_not", "section", "max_words")


def load_rules(raw: Any, path) -> tuple[Mapping[str, Any], ...]:
    """Validate `rules:` from task.yaml; errors name the rule (`rules[2].must`) and the reason."""
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise TaskError("must be a list of rules ({name: …, must: REGEX} / must_not / max_words / section)",
                        file=path, field="rules")
    rules, names = [], set()
    for i, rule in enumerate(raw):
        where = f"rules[{i}]"
        if not isinstance(rule, dict):
            raise TaskError("must be a mapping with a name and one check", file=path, field=where)
        unknown = sorted(set(rule) - {"name", *KINDS})
        if unknown:
            raise TaskError(f"unknown key {unknown[0]!r} (allowed: name, {', '.join(KINDS)})", file=path,
                            field=where)
        name = str(rule.get("name") or "").strip()
        if not name or name in names:
            raise TaskError("every rule needs a unique name", file=path, field=f"{where}.name")
        names.add(name)
        checks = [k for k in ("must", "must_not", "section") if k in rule]
        if len(checks) > 1 or (not checks and "max_words" not in rule):
            raise TaskError("give exactly one of must, must_not, section (or max_words alone)", file=path,
                            field=where)
        for key in ("must", "must_not"):
            if key in rule:
                try:
                    re.compile(str(rule[key]), re.M)
                except re.error as e:
                    raise TaskError(f"not a valid regular expression ({e})", file=path, field=f"{where}.{key}") from None
        if "max_words" in rule:
            n = rule["max_words"]
            if isinstance(n, bool) or not isinstance(n, int) or n < 1:
                raise TaskError(f"must be a positive whole number, got {n!r}", file=path, field=f"{where}.max_words")
            if checks and checks[0] != "section":
                raise TaskError("max_words goes alone or with section", file=path, field=where)
        rules.append(MappingProxyType({"name": name, **{k: rule[k] for k in KINDS if k in rule}}))
    return tuple(rules)


def _words(text: str) -> int:
    return len(text.split())


def check(rule: Mapping[str, Any], output: str) -> bool:
    if "must" in rule:
        return re.search(str(rule["must"]), output, re.M) is not None
    if "must_not" in rule:
        return re.search(str(rule["must_not"]), output, re.M) is None
    if "section" in rule:
        m = re.search(r"^" + re.escape(str(rule["section"])) + r":[ \t]*(.*)$", output, re.M)
        if m is None or not m.group(1).strip():
            return False
        return "max_words" not in rule or _words(m.group(1)) <= rule["max_words"]
    return _words(output) <= rule["max_words"]


def check_all(rules: Sequence[Mapping[str, Any]], output: str) -> dict[str, int]:
    """{rule name: 1 pass / 0 fail} for one output."""
    return {rule["name"]: int(check(rule, output)) for rule in rules}
