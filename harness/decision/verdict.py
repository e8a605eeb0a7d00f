"""The verdict in words: choice, status (decided / undecided), whether fine-tuning is justified (true, false, or
null when this run cannot tell), a plain summary that leads with an open comparison, reasons and caveats.
Pure: it only formats what harness.decision.decide and harness.decision.choice computed."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from harness.decision.caveats import caveats


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


RELATION = {"better": "significantly better than", "worse": "significantly worse than",
            "equivalent": "equivalent within ±{m:g} to", "non_inferior": "no worse by more than {m:g} than",
            "not_separable": "neither shown worse than nor within {m:g} of"}


def relation_text(relation: str, margin: float) -> str:
    return RELATION[relation].format(m=margin)


def write_verdict(*, ev, s, cost_cfg, names, score, ci, tests, priced, best, eligible, choice, tuned, best_plain,
                  breakeven, power, forgetting, reference, relations, still_open, failures, selectable,
                  odds) -> dict[str, Any]:
    primary, cur, volume = ev.primary, cost_cfg.currency, cost_cfg.volume_per_month
    conf = f"{(1 - s.alpha) * 100:g}%"

    def show(arm: str) -> str:
        low, high = ci[arm][primary]["ci"]
        return f"{arm} {score[arm]:.3f} [{low:.3f}, {high:.3f}]"

    def monthly(arm: str) -> str:
        return money(priced[arm]["monthly_total"], cur) + "/month"

    def versus(arm: str, flip: bool = False) -> str:
        """The paired difference `arm − best`; flipped (`best − arm`) where the sentence names the best first."""
        r, sign = relations[arm], -1 if flip else 1
        low, high = sorted((sign * r["lower"], sign * r["upper"]))
        # The bounds are per comparison; significance is Holm-corrected over every pair. When the bounds leave out 0
        # but the corrected test does not, say so rather than let "not shown worse" read against them.
        uncorrected = (f" (uncorrected; not significant after Holm's correction over the {len(tests)} paired tests)"
                       if r["relation"] == "not_separable" and (r["lower"] > 0 or r["upper"] < 0) else "")
        return (f"difference {sign * r['difference']:+.3f}, one-sided {conf} bounds [{low:+.3f}, {high:+.3f}]"
                f"{uncorrected}, Holm {_p(r['p_holm'])}")

    selectable_tuned = [a for a in selectable if ev.arms[a].fine_tuned]
    comparable = bool(selectable_tuned) and best_plain is not None
    if still_open:
        kinds = {ev.arms[a].fine_tuned for a in [choice, *still_open]}
        justified = (choice in tuned) if comparable and len(kinds) == 1 else None
    else:
        justified = (choice in tuned) if comparable else None
    why = ("the best on " + primary if choice == best else
           f"no worse than {best} by more than {s.margin:g} (lower bound {relations[choice]['lower']:+.3f}) and "
           f"cheaper in total")
    parts = [_open_sentence(still_open[0], relations, best, show, monthly, s, conf, power["n"])] if still_open else []
    if not comparable:
        plain_broken = [a for a in names if a not in tuned and failures[a].get("broken")]
        parts.append(_cannot_tell(tuned, selectable_tuned, selectable, choice, plain_broken))
        parts.append(f"Choose {choice} at {monthly(choice)}: {why}." if not still_open else
                     f"Until it is settled, choose {choice} at {monthly(choice)}: {why}.")
    elif still_open:
        parts.append(f"Until it is settled, choose {choice} at {monthly(choice)}: {why}.")
        parts.append("Whether fine-tuning is justified stays open." if justified is None else
                     "Either way, fine-tuning is " + ("justified." if justified else "not justified."))
    else:
        parts.append(_decided(choice, best, best_plain, selectable_tuned, relations, breakeven, show, monthly,
                              versus, primary, _volume(volume), s.margin))
    parts += _closing(names=names, failures=failures, score=score, choice=choice, s=s, cost_cfg=cost_cfg)
    reasons = _reasons(primary=primary, cur=cur, volume=volume, s=s, names=names, best=best, eligible=eligible,
                       choice=choice, relations=relations, failures=failures, priced=priced, odds=odds,
                       breakeven=breakeven, reference=reference, show=show, monthly=monthly, versus=versus,
                       n=power['n'])
    notes = caveats(ev=ev, s=s, cost_cfg=cost_cfg, names=names, score=score, choice=choice, tuned=tuned,
                    eligible=eligible, power=power, forgetting=forgetting, failures=failures)
    opened = ({"arm": still_open[0], "against": best, **{k: relations[still_open[0]][k] for k in
               ("difference", "lower", "upper", "n_needed", "settle_by")}} if still_open else None)
    return {"choice": choice, "fine_tuning_justified": justified, "status": "undecided" if still_open else "decided",
            "n_needed": opened["n_needed"] if opened else None, "open": opened, "summary": " ".join(parts),
            "reasons": reasons, "caveats": notes}


def _closing(*, names, failures, score, choice, s, cost_cfg) -> list[str]:
    """The summary's last sentences: arms that scored as well as the choice but are broken, and what the monthly
    totals count besides serving."""
    parts, cur = [], cost_cfg.currency
    for arm in names:
        if failures[arm].get("broken") and score[arm] >= score[choice]:
            parts.append(f"{arm} scored {score[arm]:.3f} but failed on {failures[arm]['rate']:.1%} of its held-out "
                         f"examples (more than {s.max_failure_rate:.0%}), so it cannot be chosen.")
    if cost_cfg.prices_errors:
        parts.append(f"Monthly totals count wrong answers at {money(cost_cfg.error_cost, cur)} each"
                     + (f" and {money(cost_cfg.review_cost, cur)} per output failing a rule" if cost_cfg.review_cost
                        else "") + ".")
    return parts


def _reasons(*, primary, cur, volume, s, names, best, eligible, choice, relations, failures, priced, odds, breakeven,
             reference, show, monthly, versus, n) -> list[str]:
    reasons = [f"Best on {primary}: {show(best)} ({int(s.confidence * 100)}% bootstrap interval, n={n})."]
    for arm in names:
        if arm == best:
            continue
        r = relations[arm]
        extra = (f" About {r['n_needed']:,} held-out examples would settle it ({r['settle_by'].replace('_', '-')})."
                 if r["n_needed"] else "")
        broken = (f" Cannot be chosen: it failed on {failures[arm]['rate']:.1%} of its examples."
                  if failures[arm].get("broken") else "")
        reasons.append(f"{show(arm)}: {relation_text(r['relation'], s.margin)} {best} ({versus(arm)}).{extra}{broken}")
    reasons.append(f"Qualify (the best, or no worse than it by more than the margin {s.margin:g}): "
                   f"{', '.join(eligible)}; cheapest in total at {_volume(volume)} requests/month: {choice} at "
                   f"{monthly(choice)} ({money(priced[choice]['per_1k_requests'], cur)} per 1k requests served).")
    if odds:
        p = ", ".join(f"{a} {v:.0%}" for a, v in odds["p_cheapest"].items())
        reasons.append(f"With wrong answers priced, the chance of each arm being cheapest in total over the paired "
                       f"resamples: {p}; expected regret of choosing {choice}: "
                       f"{money(odds['expected_regret'], cur)}/month.")
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
    return reasons


def _open_sentence(arm, relations, best, show, monthly, s, conf, n) -> str:
    r = relations[arm]
    head = (f"Undecided: the held-out set cannot tell whether {show(arm)}, at {monthly(arm)}, is within {s.margin:g} "
            f"of the best arm, {show(best)} at {monthly(best)} (difference {r['difference']:+.3f}, one-sided {conf} "
            f"lower bound {r['lower']:+.3f}).")
    if r["settle_by"] == "non_inferiority":
        return head + (f" About {r['n_needed']:,} held-out examples (now {n}) would settle it at the observed "
                       f"difference.")
    if r["settle_by"] == "superiority":
        return head + (f" It cannot be settled as non-inferior: the observed difference is beyond the margin; about "
                       f"{r['n_needed']:,} held-out examples (now {n}) would show {best} better.")
    return head + " It cannot be settled: the observed difference is beyond the margin."


def _cannot_tell(tuned, selectable_tuned, selectable, choice, plain_broken) -> str:
    if not tuned:
        return "No fine-tuned arm ran, so this run cannot say whether fine-tuning pays."
    if not selectable_tuned:
        return "Every fine-tuned arm is broken, so this run cannot say whether fine-tuning pays."
    if plain_broken:
        return (f"Every arm without fine-tuning is broken ({', '.join(plain_broken)}: too many failed or invalid "
                f"outputs), so this run cannot tell whether fine-tuning is justified; fix their output format (constrained: "
                f"true gives a generating arm a grammar it cannot leave) or raise decision.max_failure_rate if such "
                f"failures are acceptable.")
    if len(selectable) == 1:
        return (f"This run measured one arm that can be chosen ({choice}) and nothing without fine-tuning to compare "
                f"it with, so it cannot tell whether fine-tuning is justified.")
    return ("Every arm that can be chosen is fine-tuned: with no arm without fine-tuning to compare with, this run "
            "cannot tell whether fine-tuning is justified.")


def _decided(choice, best, best_plain, selectable_tuned, relations, breakeven, show, monthly, versus, primary, at,
             margin) -> str:
    if choice in selectable_tuned:
        if choice == best:
            r = relations[best_plain]
            if r["relation"] == "worse":
                return (f"Fine-tuning is justified: {show(choice)} is significantly better on {primary} than the best "
                        f"arm without fine-tuning, {show(best_plain)} ({versus(best_plain, flip=True)}), at {monthly(choice)} "
                        f"against {monthly(best_plain)} at {at} requests/month.")
            return (f"Fine-tuning is justified at {at} requests/month: {show(choice)} is the best on {primary}; "
                    f"{best_plain} is {relation_text(r['relation'], margin)} it but costs more ({monthly(best_plain)} "
                    f"against {monthly(choice)}).")
        rel = relation_text(relations[choice]["relation"], margin)
        return (f"Fine-tuning is justified on cost: {show(choice)} is {rel} "
                f"the best arm, {show(best)} ({versus(choice)}), and at {at} requests/month it costs "
                f"{monthly(choice)} against {monthly(best)}.")
    top = best if best in selectable_tuned else max(selectable_tuned, key=lambda a: relations[a]["difference"])
    be = breakeven.get(top, {})
    later = (f" Fine-tuning would pay back above {_volume(be['requests_per_month'])} requests/month if it stays as "
             f"accurate." if be.get("requests_per_month") else "")
    if top == best:
        return (f"Fine-tuning is not justified at {at} requests/month: {show(choice)} is "
                f"{relation_text(relations[choice]['relation'], margin)} the best arm, the fine-tuned {show(best)} "
                f"({versus(choice)}), and costs less ({monthly(choice)} against {monthly(best)}).{later}")
    r = relations[top]
    if r["relation"] == "worse":
        return (f"Fine-tuning is not justified: the best fine-tuned arm, {show(top)}, is significantly worse on "
                f"{primary} than {show(best)} ({versus(top)}); choose {choice} at {monthly(choice)}.")
    return (f"Fine-tuning is not justified at {at} requests/month: the fine-tuned {show(top)} is "
            f"{relation_text(r['relation'], margin)} {best} ({versus(top)}) but costs {monthly(top)} against "
            f"{monthly(choice)} for {choice}.{later}")

def model_label(model: dict | None) -> str:
    """`backend: model` as the tables show an arm's model."""
    if not model:
        return "–"
    name = str(model.get("name_or_path", "?")).replace("packaged:", "")
    return f"{model.get('backend', '?')}: {name}" + (" +adapter" if model.get("adapter") else "")


def headline(verdict: Mapping | None) -> dict[str, str]:
    """The report's verdict headline: a css class (yes / no / open / none) and the words, undecided first. Reads
    verdicts written before `status` existed as decided."""
    if not verdict:
        return {"css": "none", "text": "No decision recorded"}
    if verdict.get("choice") is None:
        return {"css": "no", "text": "No arm can be chosen"}
    yes = verdict.get("fine_tuning_justified")
    tuning = ("fine-tuning justified" if yes else "fine-tuning not justified" if yes is False else
              "this run cannot tell whether fine-tuning is justified")
    if verdict.get("status") == "undecided":
        return {"css": "open", "text": "Undecided" + (f" ({tuning} either way)" if yes is not None else
                                                      ": whether fine-tuning is justified stays open")}
    return {"css": "yes" if yes else "no" if yes is False else "open", "text": tuning[0].upper() + tuning[1:]}
