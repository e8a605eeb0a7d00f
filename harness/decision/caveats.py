"""The verdict's caveats: what a reader should know before acting on it (held-out size, broken arms, forgetting,
leakage, answers seen in training, personal data, format failures, few training examples, a training run that may
have stopped short of its best, seed spread, truncation, example prices). Pure."""

from __future__ import annotations

from typing import Mapping, Sequence


def caveats(*, ev, s, cost_cfg, names: Sequence[str], score: Mapping[str, float], choice: str, tuned: Sequence[str],
            eligible: Sequence[str], power: Mapping, forgetting: Mapping | None,
            failures: Mapping[str, Mapping]) -> list[str]:
    primary = ev.primary
    out = []
    if power["detectable_difference"] > s.margin:
        out.append(f"Held-out set too small to separate close arms: with n={power['n']} only differences of "
                   f"about {power['detectable_difference']:.3f} or more are detected ({int(s.power * 100)}% power, "
                   f"alpha {s.alpha:g}); the margin you care about is {s.margin:g}. Add held-out examples before "
                   f"trusting a close call.")
    if len(eligible) > 1 and len({a in tuned for a in eligible}) > 1:
        out.append(f"Within the margin: {', '.join(eligible)} are shown no worse than the best by more than "
                   f"{s.margin:g}; the choice among them is made on cost.")
    for arm, f in failures.items():
        if f.get("broken"):
            out.append(f"Broken arm: {arm} failed on {f['rate']:.1%} of its held-out examples "
                       f"({f['kind'].replace('_', ' ')}; limit decision.max_failure_rate={s.max_failure_rate:g}); "
                       f"it is reported but cannot be chosen.")
    for arm, f in ((forgetting or {}).get("arms") or {}).items():
        if f["change"] < -s.forgetting_drop or f["ci"][1] < 0:
            out.append(f"Forgetting: {arm} scores {f['accuracy']:.3f} on the control set "
                       f"({forgetting['control_set']}, n={forgetting['n']}) against the base model's "
                       f"{forgetting['base_accuracy']:.3f} (change {f['change']:+.3f}, CI "
                       f"[{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}]).")
    checks = ev.data_checks or {}
    for split, found in (checks.get("overlap") or {}).items():
        if split != "train":  # a query close to a knowledge passage is what retrieval is for, not a leak
            continue
        exact, near = len(found.get("exact", [])), len(found.get("near", []))
        if exact or near:
            out.append(f"Leakage: {exact} held-out input(s) identical and {near} nearly identical (cosine ≥ "
                       f"{checks.get('near_threshold')}) to {split} examples; scores on them may be inflated.")
    seen = checks.get("answers_in_train") or {}
    if seen.get("n"):
        out.append(f"Answers seen in training: {seen['n']} of {seen['of']} held-out reference answers "
                   f"({seen['n'] / seen['of']:.0%}) are also training answers. A fine-tuned arm can reproduce them "
                   f"from memory, so on them the held-out set tests recall of trained answers; scores may not carry "
                   f"to questions whose answers no arm was trained on.")
    pii = checks.get("pii") or {}
    if pii.get("examples"):
        out.append(f"Data governance: {len(pii['examples'])} training example(s) contain personal data "
                   f"patterns ({', '.join(f'{k} {v}' for k, v in pii['counts'].items() if v)}); review them "
                   f"before they go into a fine-tune (ids in the report).")
    for arm in dict.fromkeys([choice, *tuned]):
        m = ev.arms[arm].metrics
        if m.get("invalid_rate"):
            out.append(f"Format failures: {arm} gave no valid label on {m['invalid_rate']:.1%} of examples.")
        if "valid_json_rate" in m and m["valid_json_rate"] < 1:
            out.append(f"Format failures: {arm} produced invalid JSON on {1 - m['valid_json_rate']:.1%} of examples.")
    out.extend(_training_caveats({arm: ev.arms[arm].training for arm in tuned}))
    for arm in tuned:
        training = ev.arms[arm].training
        seen = training.train_examples if training else None
        if seen is not None and seen < s.few_train_examples:
            out.append(f"Few training examples: {arm} trained on {seen} (< {s.few_train_examples}); its score "
                       f"may move a lot with more or different data.")
        spread = (ev.arms[arm].metrics_seed_std or {}).get(primary)
        if spread and arm != choice and abs(score[arm] - score[choice]) < 2 * spread:
            out.append(f"Seed spread: {arm} varies by ±{spread:.3f} between training seeds, as much as its "
                       f"difference from {choice}.")
    truncated = [a for a in names if ev.arms[a].usage and ev.arms[a].usage.truncated]
    if truncated:
        out.append(f"Prompts cut to fit the context in: {', '.join(truncated)} (counted in usage.json).")
    if cost_cfg.example:
        out.append("Prices are the shipped examples (conf/cost/example.yaml): set your own before quoting a cost.")
    return list(dict.fromkeys(out))


def _training_caveats(trainings: Mapping) -> list[str]:
    """Fine-tuned arms that may not be at their strongest, read from the recorded epochs (so older runs get it too):
    best at the last epoch without a plateau (undertrained), or best at the first of several (perhaps before it).
    One caveat per kind, naming every arm it concerns."""
    short, past = [], []
    for arm, t in trainings.items():
        if not t or not t.best_epoch or not t.epochs_run or t.epochs_run < 2:
            continue
        what = "dev metric" if any(r.get("dev_metric") is not None for r in t.history or []) else "dev loss"
        if t.best_epoch == t.epochs_run and t.stop_reason != "plateau":
            short.append(f"{arm}'s {what} was still improving at its last epoch ({t.epochs_run}, stopped: "
                         f"{t.stop_reason})")
        elif t.best_epoch == 1:
            past.append(f"{arm}'s {what} was best after the first of {t.epochs_run} epochs")
    out = []
    if short:
        out.append(f"Possibly undertrained: {'; '.join(short)}; more epochs may raise {'its score' if len(short) == 1 else 'their scores'}.")
    if past:
        out.append(f"Possibly past its best: {'; '.join(past)}, and worse after it, so the best point may lie "
                   f"within that epoch; a lower learning_rate may train a better adapter, and the verdict may "
                   f"understate fine-tuning.")
    return out
