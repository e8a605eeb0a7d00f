"""The `harness` command: the only @hydra.main entry point. The subcommands that read results folders back
(report, compare, curve, sweep, record) are in harness.cli_commands."""

from __future__ import annotations

import errno
import shutil
import sys
import tempfile
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from harness import runlock
from harness.cli_commands import SUBCOMMANDS, broken
from harness.errors import ConfigError, HarnessError
from harness.report import display
from harness.results import write_json

ROOT = Path(__file__).resolve().parent.parent


def _task_label(task: str, task_dir: str | None = None) -> str:
    return Path(str(task_dir)).name if task_dir else str(task)


def _register_resolvers() -> None:
    OmegaConf.register_new_resolver("task_label", _task_label, replace=True)
    OmegaConf.register_new_resolver("harness_root", lambda: str(ROOT), replace=True)


# At import, not in main(): the workers of the joblib and submitit launchers import this module to unpickle `run`
# and resolve the job's results folder before calling it.
_register_resolvers()
# conf/hydra/launcher/joblib.yaml and submitit_local.yaml deliberately carry the plugins' own names, so Hydra
# validates them against the plugins' schemas (and warns that it does); that check is what we want.
warnings.filterwarnings("ignore", message=r"\s*'hydra/launcher/\w+' is validated against ConfigStore schema")


class JobFailed(Exception):
    """A cell of a multirun failed: raised (not sys.exit) so that the launcher runs the other cells."""


def _multirun() -> bool:
    return HydraConfig.get().mode == RunMode.MULTIRUN


@hydra.main(config_path=str(ROOT / "conf"), config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> None:
    from harness import sweep
    from harness.runner import Runner  # after Hydra has parsed the command line: `--help` stays fast

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    multirun = _multirun()
    if multirun and sweep.finished_cell(run_dir, OmegaConf.to_container(cfg, resolve=True)):
        display.status(f"{run_dir}: finished with this configuration; skipped (delete the folder to redo it)")
        return
    if multirun:
        (run_dir / sweep.JOB_ERROR).unlink(missing_ok=True)
    try:
        with runlock.hold(run_dir):
            comparison = Runner(cfg, run_dir).run()
    except HarnessError as e:
        display.error(str(e))
        if multirun:  # listed by `harness sweep` as a failed cell
            write_json(run_dir / sweep.JOB_ERROR, {"error": str(e)})
            raise JobFailed(str(e)) from None
        if not isinstance(e, runlock.FolderBusy):  # the holder's folder is not this run's to clean up
            _remove_if_unused(run_dir)
        sys.exit(2)
    except OSError as e:
        display.error(os_error_line(e))
        sys.exit(1 if e.errno in NO_SPACE else 2)
    from harness.records import Comparison

    comparison = Comparison.from_json(comparison)
    display.console.print(display.comparison_table(comparison))
    panel = display.verdict_panel(comparison)
    if panel:
        display.console.print(panel)
    report = run_dir / "report.html"
    display.console.print(f"results: {run_dir}" + (f"\nreport:  {report}" if report.exists() else ""))
    if broken(comparison) or any(r.failed for r in comparison.arms.values()):
        if multirun:
            raise JobFailed(f"{run_dir}: an arm failed or the run is broken (see error.json / the verdict)")
        sys.exit(1)


NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)  # disk full, quota, file size limit: exit 1, not bad input


def os_error_line(e: OSError) -> str:
    """One line for a file-system failure (disk full, read-only or missing folder) during a run or a report."""
    where = f"{e.filename}: " if e.filename else ""
    if e.errno in NO_SPACE:
        return f"{where}disk full ({e.strerror}); what was written before is kept, and a rerun resumes"
    return f"{where}{e.strerror or e}"


def _remove_if_unused(run_dir: Path) -> None:
    """A refused run leaves no folder behind: Hydra made run_dir (and its .hydra) before the checks ran."""
    try:
        if run_dir.is_dir() and {p.name for p in run_dir.iterdir()} <= {".hydra", runlock.LOCK, runlock.OWNER}:
            shutil.rmtree(run_dir)
    except OSError:
        pass


def _override_values(override) -> list:
    """The value(s) an override sets, for a sweep each choice."""
    if override.is_sweep_override():
        return list(override.sweep_iterator())
    return [override.value()]


def check_overrides(args: list[str]) -> None:
    """Refuse, before Hydra makes any folder, a task name that is a path, an unknown task or strategy, and a
    results_dir that cannot be written: one line each (ConfigError) instead of Hydra's text or a traceback."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if "=" in a and not a.startswith("-")])
    except Exception:  # malformed overrides: Hydra says what is wrong with them
        return
    given = {o.key_or_group: o for o in overrides if not o.is_delete()}
    for o in overrides:
        if o.key_or_group == "strategies" and not o.is_delete():
            known = sorted(p.stem for p in (ROOT / "conf" / "strategies").glob("*.yaml"))
            for value in _override_values(o):
                for name in value if isinstance(value, list) else [value]:
                    if str(name) not in known:
                        raise ConfigError(f"unknown strategy {str(name)!r} (available: {', '.join(known)})",
                                          field="strategies")
    if "task" in given:
        roots = given.get("tasks_root")
        root = Path(str(roots.value())).expanduser() if roots and isinstance(roots.value(), str) else ROOT / "tasks"
        for name in map(str, _override_values(given["task"])):
            if not name.strip() or name in (".", "..") or any(c in name for c in "/\\") or "${" in name:
                raise ConfigError(f"must be the name of a folder in {root}, got {name!r} (a task elsewhere: "
                                  f"task_dir=PATH)", field="task")
            if "task_dir" not in given and "${" not in str(root) and not (root / name / "task.yaml").is_file():
                known = sorted(p.name for p in root.iterdir() if (p / "task.yaml").is_file()) if root.is_dir() else []
                raise ConfigError(f"unknown task {name!r} (available in {root}: {', '.join(known) or 'none'})",
                                  field="task")
    results = given.get("results_dir")
    _check_writable(str(results.value()) if results and isinstance(results.value(), str) else "results/")
    if results and isinstance(results.value(), str) and "${" not in results.value():
        runlock.check_free(Path(results.value()).expanduser())  # a busy folder: refused before Hydra writes there


def _check_writable(results_dir: str) -> None:
    """The fixed part of results_dir (before any ${...}) must be a folder, or be creatable, and writable."""
    fixed = Path(results_dir.split("${")[0] or ".").expanduser()
    probe = fixed
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{probe} is a file, not a folder", field="results_dir")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ConfigError(f"cannot write in {probe} ({e.strerror or e})", field="results_dir") from None


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in SUBCOMMANDS:  # Hydra overrides are key=value, never a bare word
        try:
            sys.exit(SUBCOMMANDS[sys.argv[1]](sys.argv[2:]))
        except HarnessError as e:
            display.error(str(e))
            sys.exit(2)
        except OSError as e:
            display.error(os_error_line(e))
            sys.exit(1 if e.errno in NO_SPACE else 2)
    try:
        check_overrides(sys.argv[1:])
    except HarnessError as e:
        display.error(str(e))
        sys.exit(2)
    run()


if __name__ == "__main__":  # `python -m harness.cli`: run the importable module's main, as the `harness` script
    # does, so that launcher workers unpickle `harness.cli.run` by reference (and import this module) rather than
    # a copy of __main__'s function
    from harness.cli import main as _main

    _main()
