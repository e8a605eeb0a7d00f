"""Report figures drawn with matplotlib (Agg, no display): each function takes recorded JSON and returns PNG bytes,
or None when the run holds nothing to draw."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from harness.records import Comparison  # noqa: E402

CHOICE, TUNED, PLAIN = "#1b7f3b", "#b35806", "#3b6ea8"


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def pareto(comparison: Comparison | Mapping) -> bytes | None:
    """Monthly cost at the configured volume (log scale; what the verdict compares) against the primary metric with
    its bootstrap interval; the frontier of arms no other arm beats on both is drawn, the chosen arm in green."""
    comparison = Comparison.of(comparison)
    decision = comparison.decision or {}
    primary, ci = comparison.primary_metric, decision.get("intervals") or {}
    priced = (decision.get("costs") or {}).get("arms") or {}
    points = [(arm, priced[arm]["monthly_total"], ci[arm][primary]) for arm in ci
              if priced.get(arm, {}).get("monthly_total")]
    if not points:
        return None
    choice = (decision.get("verdict") or {}).get("choice")
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for arm, x, m in points:
        colour = CHOICE if arm == choice else TUNED if comparison.arms[arm].fine_tuned else PLAIN
        low, high = m["ci"]
        ax.errorbar([x], [m["value"]], yerr=[[m["value"] - low], [high - m["value"]]], fmt="o", color=colour,
                    capsize=4, markersize=8 if arm == choice else 6)
        ax.annotate(arm, (x, m["value"]), textcoords="offset points", xytext=(7, 5), fontsize=9, color=colour)
    frontier = sorted(points, key=lambda p: (p[1], -p[2]["value"]))
    line, top = [], float("-inf")
    for arm, x, m in frontier:
        if m["value"] > top:
            line.append((x, m["value"]))
            top = m["value"]
    ax.step([p[0] for p in line], [p[1] for p in line], where="post", color="#999999", linestyle="--", linewidth=1,
            label="frontier: no cheaper arm scores higher")
    ax.set_xscale("log")
    costs = decision.get("costs") or {}
    ax.set_xlabel(f"monthly cost at {costs.get('volume_per_month', 0):,.0f} requests/month "
                  f"({costs.get('currency', 'USD')}, log scale; serving + upkeep + one-off spread)")
    ax.set_ylabel(f"{primary} (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Accuracy against cost (green: chosen, orange: fine-tuned, blue: not fine-tuned)", fontsize=10)
    return _png(fig)


def confusion(details: Mapping, arm: str) -> bytes | None:
    conf = details.get("confusion")
    if not conf:
        return None
    rows, cols, counts = conf["rows"], conf["columns"], conf["counts"]
    if len(rows) > 30:  # unreadable as a picture; the per-label table carries it
        return None
    fig, ax = plt.subplots(figsize=(0.45 * len(cols) + 2.5, 0.42 * len(rows) + 1.8))
    ax.imshow(counts, cmap="Greens")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    top = max(max(r) for r in counts) or 1
    for i, row in enumerate(counts):
        for j, v in enumerate(row):
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7, color="white" if v > top / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"Confusion matrix: {arm}", fontsize=10)
    return _png(fig)


def per_label(breakdowns: Mapping[str, Mapping[str, float]], what: str) -> bytes | None:
    """Grouped bars: one group per label (F1) or field (exact match), one bar per arm."""
    arms = [a for a, b in breakdowns.items() if b]
    if not arms:
        return None
    keys = list(breakdowns[arms[0]])
    if len(keys) > 30:
        return None
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(keys) * max(1, len(arms) / 2)), 3.8))
    for i, arm in enumerate(arms):
        ax.bar([k + i * width for k in range(len(keys))], [breakdowns[arm].get(key, 0.0) for key in keys], width,
               label=arm)
    ax.set_xticks([k + 0.4 - width / 2 for k in range(len(keys))], keys, rotation=40, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(what)
    ax.legend(fontsize=8, ncol=min(len(arms), 5))
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def training_curves(histories: Mapping[str, Sequence[Mapping]]) -> bytes | None:
    histories = {a: h for a, h in histories.items() if h}
    if not histories:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for arm, history in histories.items():
        epochs = [h["epoch"] for h in history]
        line, = ax.plot(epochs, [h["train_loss"] for h in history], marker="o", label=f"{arm} train")
        if any(h.get("dev_loss") is not None for h in history):
            ax.plot(epochs, [h.get("dev_loss") for h in history], marker="s", linestyle="--",
                    color=line.get_color(), label=f"{arm} dev")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss (target tokens)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("LoRA training: train and dev loss per epoch", fontsize=10)
    return _png(fig)


def learning_curve(curve: Mapping) -> bytes | None:
    """Primary metric against training-set size (log scale) per arm, with its bootstrap interval as a band."""
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    drawn = False
    for arm, by_size in curve["arms"].items():
        pts = [(n, p) for n, p in by_size.items() if p]
        if not pts:
            continue
        xs = [n for n, _ in pts]
        line, = ax.plot(xs, [p["value"] for _, p in pts], marker="o", label=arm,
                        linestyle="-" if pts[0][1]["fine_tuned"] else "--")
        ax.fill_between(xs, [p["ci"][0] for _, p in pts], [p["ci"][1] for _, p in pts], alpha=0.15,
                        color=line.get_color())
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"{curve.get('x_axis', 'training examples')} (log scale)")
    ax.set_ylabel(f"{curve['primary_metric']} (95% CI)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(f"{curve['task']}: learning curve (solid: fine-tuned, dashed: not)", fontsize=10)
    return _png(fig)


def decision_map(comparison: Comparison | Mapping) -> bytes | None:
    """Which arm the rule chooses across monthly volume (log) and the cost of a wrong answer, from the grid the
    decision recorded (`decision_map`); borders between colours are the break-even lines, hatched cells are open
    (undecided) there, the current setting is marked."""
    grid = (Comparison.of(comparison).decision or {}).get("decision_map")
    if not grid or not grid.get("choice"):
        return None
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    arms = list(dict.fromkeys(a for row in grid["choice"] for a in row))
    code = np.array([[arms.index(a) for a in row] for row in grid["choice"]])
    palette = ["#3b6ea8", "#b35806", "#1b7f3b", "#8e44ad", "#7f7f7f", "#c0392b", "#16a085", "#d4ac0d"]
    colours = [palette[i % len(palette)] for i in range(len(arms))]
    volumes, errors = np.asarray(grid["volumes"]), np.asarray(grid["error_costs"])
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    ax.pcolormesh(volumes, errors, code, cmap=ListedColormap(colours), vmin=-0.5, vmax=len(arms) - 0.5,
                  shading="nearest")
    if len(arms) > 1:
        ax.contour(volumes, errors, code, levels=np.arange(len(arms) - 1) + 0.5, colors="white", linewidths=1.2)
    undecided = np.asarray(grid.get("undecided") or np.zeros_like(code), dtype=float)
    if undecided.any():
        ax.contourf(volumes, errors, undecided, levels=[0.5, 1.5], colors="none", hatches=["//"])
    now = grid.get("current") or {}
    ax.plot([now.get("volume", volumes[0])], [now.get("error_cost", 0.0)], marker="*", markersize=16, color="white",
            markeredgecolor="black", linestyle="none")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=max(errors[1], 1e-9) if len(errors) > 1 else 1.0)
    ax.set_xlabel("requests per month (log scale)")
    ax.set_ylabel(f"cost of one wrong answer ({grid.get('currency', 'USD')}, log above 0)")
    handles = [Patch(color=c, label=a) for a, c in zip(arms, colours)]
    if undecided.any():
        handles.append(Patch(facecolor="none", hatch="//", edgecolor="black", label="undecided there"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", framealpha=0.9)
    ax.set_title("Which arm the rule chooses (★ the current setting; borders are break-even lines)", fontsize=10)
    return _png(fig)
