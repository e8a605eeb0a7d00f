"""Prompt construction shared by every strategy: instruction, demonstrations, context, input → chat messages.

Templates are jinja2 strings from config; the model wrapper turns messages into its own prompt format.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

import jinja2

from harness import kinds
from harness.errors import ConfigError
from harness.task import Example, Task

DEFAULT_SYSTEM = """{{ instruction }}
{% if labels %}
Answer with exactly one of these labels and nothing else:
{% for l in labels %}- {{ l.text }}{% if l.description %}: {{ l.description }}{% endif %}
{% endfor %}{% endif %}{% if fields %}
Answer with one JSON object with exactly these keys: {{ fields | join(', ') }}. Use null for a value that is missing.
{% endif %}"""
# For fine-tuned arms: the adapter learns what the labels mean from the data, so the prompt names them without
# descriptions — shorter prompts make training and every later request cheaper.
COMPACT_SYSTEM = """{{ instruction }}{% if labels %}
Answer with one of: {{ labels | map(attribute='text') | join(', ') }}.{% endif %}{% if fields %}
Answer with a JSON object with keys: {{ fields | join(', ') }}.{% endif %}"""
DEFAULT_USER = """{% if context %}{{ context }}

{% endif %}{{ input }}"""

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@dataclass(frozen=True)
class PromptTemplate:
    system: str = DEFAULT_SYSTEM
    user: str = DEFAULT_USER

    def __post_init__(self):
        for name in ("system", "user"):
            try:
                _ENV.from_string(getattr(self, name))
            except jinja2.TemplateSyntaxError as e:
                raise ConfigError(f"template syntax error: {e.message} (line {e.lineno})",
                                  field=f"template.{name}") from None


def template_from_config(value) -> PromptTemplate:
    """null → the default template; "compact" → the short one; a mapping → {system: …, user: …} jinja2 strings."""
    if value is None or value == "default":
        return PromptTemplate()
    if value == "compact":
        return PromptTemplate(system=COMPACT_SYSTEM)
    if isinstance(value, str):
        raise ConfigError(f"unknown template {value!r} (null, default, compact, or {{system: …, user: …}})",
                          field="template")
    try:
        return PromptTemplate(**dict(value))
    except TypeError:
        raise ConfigError(f"a template has the keys system and user, got {sorted(dict(value))}",
                          field="template") from None


def target_text(task: Task, target: Any) -> str:
    """How a target is written as the assistant's answer (demonstrations, training): its task kind's way."""
    return kinds.of(task).answer_text(task, target)


def _render(template: str, **variables) -> str:
    try:
        return _ENV.from_string(template).render(**variables).strip()
    except jinja2.UndefinedError as e:
        raise ConfigError(f"template uses an unknown variable ({e.message})", field="template") from None


def build_messages(task: Task, template: PromptTemplate, example: Example, demos: Sequence[Example] = (),
                   context: str = "", system_context: str = "") -> list[dict]:
    """System instruction, then each demonstration as a user/assistant turn, then the input. `context` goes into
    the last user turn (the template's `context`); `system_context` after the instruction, before any turn."""
    labels = [{"name": label, "text": task.text_of(label), "description": task.label_descriptions.get(label, "")}
              for label in task.labels]
    common = {"instruction": task.instruction, "labels": labels, "fields": list(task.fields),
              "task_type": task.type}
    system = _render(template.system, **common)
    messages = [{"role": "system", "content": system + ("\n\n" + system_context if system_context else "")}]
    for demo in demos:
        messages.append({"role": "user", "content": _render(template.user, input=demo.input, context="", **common)})
        messages.append({"role": "assistant", "content": target_text(task, demo.target)})
    messages.append({"role": "user", "content": _render(template.user, input=example.input, context=context,
                                                        **common)})
    return messages


def pick_demos(task: Task, k: int, seed: int) -> list[Example]:
    """k demonstrations from train, seeded; for a labelled task kind (classification) balanced across labels
    (round robin over shuffled labels), then shuffled so the last demonstration's label is not predictable."""
    rng = random.Random(seed)
    pool = list(task.train)
    if k <= 0:
        return []
    if not kinds.of(task).labelled:
        return rng.sample(pool, min(k, len(pool)))
    by_label: dict[str, list[Example]] = defaultdict(list)
    for ex in pool:
        by_label[ex.target].append(ex)
    for exs in by_label.values():
        rng.shuffle(exs)
    order = [label for label in task.labels if by_label[label]]
    rng.shuffle(order)
    demos: list[Example] = []
    while len(demos) < min(k, len(pool)):
        for label in order:
            if by_label[label] and len(demos) < k:
                demos.append(by_label[label].pop())
    rng.shuffle(demos)
    return demos
