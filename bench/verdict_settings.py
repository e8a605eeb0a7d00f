"""The verdict of a finished run re-decided across monthly volumes and error costs, from its JSON only (no model).

Copies RUN_DIR to a temporary folder (the original is never touched), runs `harness report COPY --volume V
[--error-cost E]` for every setting, and prints one markdown row per setting: the choice, status, whether
fine-tuning is justified, the open comparison and the chosen arm's paired one-sided lower bound against the best.
Exits 1 when any setting chose an arm whose lower bound is below −margin (the rule must never do that).

Usage: python bench/verdict_settings.py RUN_DIR [--volumes 1e3 1e5 2e7] [--error-costs 0 0.5] [--margin 0.03]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def redecide(copy: Path, volume: float, error_cost: float, margin: float | None) -> dict:
    cmd = [sys.executable, "-m", "harness.cli", "report", str(copy), "--volume", repr(volume),
           "--error-cost", repr(error_cost)] + (["--margin", repr(margin)] if margin is not None else [])
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit(f"harness report failed ({r.returncode}): {(r.stderr or r.stdout).strip().splitlines()[-1]}")
    return json.loads((copy / "comparison.json").read_text())["decision"]


def row(volume: float, error_cost: float, d: dict) -> tuple[str, bool]:
    v, margin = d["verdict"], d["settings"]["margin"]
    choice, best = v["choice"], d.get("best")
    lower = 0.0 if choice == best else (d.get("against_best") or {}).get(choice, {}).get("lower")
    safe = choice is None or (lower is not None and lower > -margin)
    opened = v.get("open") or {}
    open_text = (f"{opened['arm']} vs {opened['against']} (about {opened['n_needed']:,} examples, "
                 f"{opened['settle_by'].replace('_', '-')})" if opened.get("n_needed") else
                 f"{opened['arm']} vs {opened['against']}" if opened else "–")
    justified = {True: "yes", False: "no", None: "cannot tell"}[v["fine_tuning_justified"]]
    bound = "(best)" if choice == best else f"{lower:+.3f}" if lower is not None else "–"
    return (f"| {volume:,.0f} | {error_cost:g} | {choice} | {v.get('status', 'decided')} | {justified} | "
            f"{open_text} | {bound} |"), safe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--volumes", type=float, nargs="+", default=[1e3, 1e5, 2e7])
    parser.add_argument("--error-costs", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--margin", type=float, help="default: the run's decision.margin (0.03)")
    args = parser.parse_args()
    if not (args.run_dir / "comparison.json").is_file():
        raise SystemExit(f"{args.run_dir}: no comparison.json (is this a finished run?)")
    lines = ["| requests/month | error cost | choice | status | fine-tuning justified | open comparison | "
             "choice − best, one-sided lower bound |", "|---:|---:|---|---|---|---|---:|"]
    unsafe = []
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / args.run_dir.name
        shutil.copytree(args.run_dir, copy)
        for error_cost in args.error_costs:
            for volume in args.volumes:
                d = redecide(copy, volume, error_cost, args.margin)
                line, safe = row(volume, error_cost, d)
                lines.append(line)
                if not safe:
                    unsafe.append(line)
    print("\n".join(lines))
    if unsafe:
        print(f"\nchose an arm whose lower bound against the best is below −margin in {len(unsafe)} setting(s)")
        return 1
    print("\nat no setting does the choice's paired lower bound against the best fall below −margin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
