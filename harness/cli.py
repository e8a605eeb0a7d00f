"""The `harness` command: the only @hydra.main entry point."""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from harness import display
from harness.errors import HarnessError

ROOT = Path(__file__).resolve().parent.parent


def _task_label(task: str, task_dir: str | None = None) -> str:
    return Path(str(task_dir)).name if task_dir else str(task)


@hydra.main(config_path=str(ROOT / "conf"), config_name="config", version_base="1.3")
def run(cfg: DictConfig) -> None:
    from harness.runner import Runner  # after Hydra has parsed the command line: `--help` stays fast

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        comparison = Runner(cfg, run_dir).run()
    except HarnessError as e:
        display.error(str(e))
        sys.exit(2)
    display.console.print(display.comparison_table(comparison))
    display.console.print(f"results: {run_dir}")
    if any("error" in r for r in comparison["strategies"].values()):
        sys.exit(1)


def main() -> None:
    OmegaConf.register_new_resolver("task_label", _task_label, replace=True)
    OmegaConf.register_new_resolver("harness_root", lambda: str(ROOT), replace=True)
    run()


if __name__ == "__main__":
    main()
