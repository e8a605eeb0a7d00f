"""The verdict in words: choice, whether fine-tuning is justified, a plain summary, reasons and caveats.
Pure: it only formats what harness.decide computed."""

from __future__ import annotations

from typing import Any, Mapping, Sequence


def money(value: float | None, currency: str) -> str:
    if value is None:
        return "unknown"
    symbol = {"USD": "$", "EUR": "€", "GBP": "£"}.get(currency)
    text = f"{value:,.2f}" if value >= 0.01 or value == 0 else f"{value:.4f}"
    return f"{symbol}{text}" if symbol else f"{text} {currency}"


def fmt(value: Any, digits: int = 3) -> str:
    """A number for a table cell: floats to `digits` places, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _volume(v: float | None) -> str:
    if v is None:
        return "never"
    return f"{v / 1e6:.1f}M" if v >= 1e6 else f"{v / 1e3:.0f}k" if v >= 1e4 else f"{v:,.0f}"


def _p(p: float) -> str:
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def find_pair(tests: Sequence[Mapping], a: str, b: str) -> Mapping | None:
    """The paired test of arms a and b, in whichever order it was run."""
    for t in tests:
        if {t["a"], t["b"]} == {a, b}:
            return t
    return None


def write_verdict(*, ev, s, cost_cfg, names, score, ci, tests, priced, best, eligible, choice, tuned, best_plain,
                  breakeven, power, forgetting, reference) -> dict[str, Any]:
    primary, cur, volume = ev.primary, cost_cfg.currency, cost_cfg.volume_per_month

    def show(arm: str) -> str:
        low, high = ci[arm][primary]["ci"]
        return f"{arm} {score[arm]:.3f} [{low:.3f}, {high:.3f}]"

    def monthly(arm: str) -> str:
        return money(priced[arm]["monthly_total"], cur) + "/month"

    justified = choice in tuned
    reasons = [f"Best on {primary}: {show(best)} ({int(s.confidence * 100)}% bootstrap interval, n={power['n']})."]
    for arm in names:
        if arm == best:
            continue
        t = find_pair(tests, best, arm)
        status = ("not significantly worse" if not t["significant"] else "significantly worse")
        if t["significant"] and arm in eligible:
            status += f", but within the tolerance {s.tolerance:g}"
        reasons.append(f"{show(arm)}: {status} than {best} (difference {score[best] - score[arm]:+.3f}, "
                       f"{t['test'].replace('_', ' ')}, Holm {_p(t['p_holm'])}).")
    reasons.append(f"Cheapest of the arms that qualify ({', '.join(eligible)}) at {_volume(volume)} requests/month: "
                   f"{choice} at {monthly(choice)} ({money(priced[choice]['per_1k_requests'], cur)} per 1k requests).")
    for arm, be in breakeven.items():
        when = ("at any volume" if be.get("requests_per_month") == 0 else
                f"above {_volume(be['requests_per_month'])} requests/month" if be.get("requests_per_month") else
                "at no volume (it costs at least as much per request)")
        reasons.append(f"{arm} costs {monthly(arm)} including {money(priced[arm]['one_off'], cur)} one-off and "
                       f"{money(priced[arm]['recurring_per_month'], cur)}/month upkeep and retraining; against "
                       f"{be['against']} ({monthly(be['against'])}) it pays back {when}.")
    if reference:
        reasons.append(f"Reference: {reference['name']} on {reference['prompts_of']}'s prompts would cost "
                       f"{money(reference['monthly_total'], cur)}/month ({money(reference['per_1k_requests'], cur)} "
                       f"per 1k requests); its accuracy was not measured in this run.")

    tied_kinds = {a in tuned for a in eligible}
    if not tuned:
        summary = (f"No fine-tuned arm ran, so this run cannot say whether fine-tuning pays. Choose {choice}: "
                   f"the cheapest arm not significantly worse than the best.")
    elif justified:
        t = find_pair(tests, choice, best_plain) if best_plain else None
        if t and t["significant"] and score[choice] > score[best_plain]:
            which = ("the only arm not significantly worse than the best" if eligible == [choice] else
                     "the cheapest arm that qualifies")
            summary = (f"Fine-tuning is justified: {show(choice)} is significantly better on {primary} than the best "
                       f"arm without fine-tuning, {show(best_plain)} (Holm {_p(t['p_holm'])}); it is {which}, at "
                       f"{monthly(choice)} against {monthly(best_plain)} at {_volume(volume)} requests/month.")
        else:
            summary = (f"Fine-tuning is justified on cost, not accuracy: {show(choice)} cannot be separated from "
                       f"{show(best_plain)} on {primary}, and at {_volume(volume)} requests/month it costs "
                       f"{monthly(choice)} against {monthly(best_plain)}." if best_plain else
                       f"Fine-tuning is justified: {show(choice)} is the cheapest arm that qualifies.")
    else:
        top_tuned = max(tuned, key=lambda a: score[a])
        t = find_pair(tests, top_tuned, choice)
        if score[top_tuned] <= score[choice] and t["significant"]:
            summary = (f"Fine-tuning is not justified: {show(choice)} is significantly better on {primary} than "
                       f"the best fine-tuned arm, {show(top_tuned)} (Holm {_p(t['p_holm'])}), and costs "
                       f"{monthly(choice)} against {monthly(top_tuned)}.")
        elif not t["significant"]:
            be = breakeven.get(top_tuned, {})
            later = (f" Fine-tuning would pay back above {_volume(be['requests_per_month'])} requests/month if it "
                     f"stays as accurate." if be.get("requests_per_month") else "")
            summary = (f"Fine-tuning is not justified at {_volume(volume)} requests/month: the held-out set cannot "
                       f"separate {show(top_tuned)} from {show(choice)} (Holm {_p(t['p_holm'])}), and {choice} "
                       f"costs less ({monthly(choice)} against {monthly(top_tuned)}).{later}")
        else:
            summary = (f"Fine-tuning is not justified: {show(top_tuned)} is better than {show(choice)}, but by "
                       f"{score[top_tuned] - score[choice]:.3f}, within your tolerance of {s.tolerance:g}, and it "
                       f"costs {monthly(top_tuned)} against {monthly(choice)}.")

    caveats = []
    if power["detectable_difference"] > s.meaningful_difference:
        caveats.append(f"Held-out set too small to separate close arms: with n={power['n']} only differences of "
                       f"about {power['detectable_difference']:.3f} or more are detected ({int(s.power * 100)}% power, "
                       f"alpha {s.alpha:g}); the smallest difference you care about is {s.meaningful_difference:g}. "
                       f"Add held-out examples before trusting a close call.")
    if len(eligible) > 1 and len(tied_kinds) > 1:
        caveats.append(f"Not separable: {', '.join(eligible)} are statistically tied with the best; the choice "
                       f"among them is made on cost alone.")
    for arm, f in ((forgetting or {}).get("arms") or {}).items():
        if f["change"] < -s.forgetting_drop or f["ci"][1] < 0:
            caveats.append(f"Forgetting: {arm} scores {f['accuracy']:.3f} on the control set "
                           f"({forgetting['control_set']}, n={forgetting['n']}) against the base model's "
                           f"{forgetting['base_accuracy']:.3f} (change {f['change']:+.3f}, CI "
                           f"[{f['ci'][0]:+.3f}, {f['ci'][1]:+.3f}]).")
    checks = ev.data_checks or {}
    for split, found in (checks.get("overlap") or {}).items():
        if split != "train":  # a query close to a knowledge passage is what retrieval is for, not a leak
            continue
        exact, near = len(found.get("exact", [])), len(found.get("near", []))
        if exact or near:
            caveats.append(f"Leakage: {exact} held-out input(s) identical and {near} nearly identical (cosine ≥ "
                           f"{checks.get('near_threshold')}) to {split} examples; scores on them may be inflated.")
    pii = checks.get("pii") or {}
    if pii.get("examples"):
        caveats.append(f"Data governance: {len(pii['examples'])} training example(s) contain personal data "
                       f"patterns ({', '.join(f'{k} {v}' for k, v in pii['counts'].items() if v)}); review them "
                       f"before they go into a fine-tune (ids in the report).")
    for arm in [choice, *tuned]:
        m = ev.arms[arm]["metrics"]
        if m.get("invalid_rate"):
            caveats.append(f"Format failures: {arm} gave no valid label on {m['invalid_rate']:.1%} of examples.")
        if "valid_json_rate" in m and m["valid_json_rate"] < 1:
            caveats.append(f"Format failures: {arm} produced invalid JSON on {1 - m['valid_json_rate']:.1%} of examples.")
    for arm in tuned:
        seen = (ev.arms[arm].get("training") or {}).get("train_examples")
        if seen is not None and seen < s.few_train_examples:
            caveats.append(f"Few training examples: {arm} trained on {seen} (< {s.few_train_examples}); its score "
                           f"may move a lot with more or different data.")
        spread = (ev.arms[arm].get("metrics_seed_std") or {}).get(primary)
        if spread and arm != choice and abs(score[arm] - score[choice]) < 2 * spread:
            caveats.append(f"Seed spread: {arm} varies by ±{spread:.3f} between training seeds, as much as its "
                           f"difference from {choice}.")
    truncated = [a for a in names if ev.arms[a]["usage"].get("truncated")]
    if truncated:
        caveats.append(f"Prompts cut to fit the context in: {', '.join(truncated)} (counted in usage.json).")
    if cost_cfg.example:
        caveats.append("Prices are the shipped examples (conf/cost/example.yaml): set your own before quoting a cost.")
    return {"choice": choice, "fine_tuning_justified": justified, "summary": summary, "reasons": reasons,
            "caveats": list(dict.fromkeys(caveats))}


def model_label(model: dict | None) -> str:
    """`backend: model` as the tables show an arm's model."""
    if not model:
        return "–"
    name = str(model.get("name_or_path", "?")).replace("packaged:", "")
    return f"{model.get('backend', '?')}: {name}" + (" +adapter" if model.get("adapter") else "")
