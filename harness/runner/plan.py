"""Config → a validated `Plan`: the task, each arm built from its Hydra `_target_` with its model and the result of
its one `check()`, the arms' fingerprints, the judge's model, and the cost and decision settings, all validated
once, before any work is done or anything is written. Knows the Strategy protocol, never a concrete strategy."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from rich.markup import escape

from harness import kinds, rundata
from harness.decision import cost
from harness.decision import decide
from harness.report import display
from harness.errors import ConfigError, HarnessError
from harness.records import replicate_name
from harness.results import read_json
from harness.strategy import Strategy, arm_model, missing_members
from harness.task import Task, load_task


def positive_or_none(value: Any, field: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be a positive whole number or null, got {value!r}", field=field)
    return value


def resolve_task_dir(cfg: DictConfig) -> Path:
    if cfg.get("task_dir"):
        path = Path(str(cfg.task_dir)).expanduser()
        if not path.is_dir():
            raise ConfigError(f"task directory not found: {path}", field="task_dir")
        return path
    root = Path(str(cfg.tasks_root)).expanduser()
    path = root / str(cfg.task)
    if not (path / "task.yaml").is_file():
        known = sorted(p.name for p in root.iterdir() if (p / "task.yaml").is_file()) if root.is_dir() else []
        raise ConfigError(f"unknown task {cfg.task!r} (available in {root}: {', '.join(known) or 'none'})",
                          field="task")
    return path


def load_configured_task(cfg: DictConfig) -> Task:
    limit = cfg.get("limit") or {}
    return load_task(resolve_task_dir(cfg),
                     limit_train=positive_or_none(limit.get("train"), "limit.train"),
                     limit_heldout=positive_or_none(limit.get("heldout"), "limit.heldout"),
                     limit_per_class=positive_or_none(limit.get("per_class"), "limit.per_class"),
                     sample=str(limit.get("sample", "first")), sample_seed=int(cfg.get("seed", 0)),
                     allow_overlap=cfg.get("allow_overlap"),
                     max_input_chars=positive_or_none(limit.get("input_chars"), "limit.input_chars"))


def instantiate_node(node: DictConfig, what: str, **kwargs):
    """Build a config node's `_target_`; a failure is one ConfigError line naming `what`."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, HarnessError):
            raise cause from None
        reason = f"{type(cause).__name__}: {cause}" if cause else str(e).splitlines()[0]
        raise ConfigError(f"cannot build {what}: {reason}") from None


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else node


class Models:
    """The run's models, each loaded once: LMs by config (arms on the same model config share one) and the
    packaged embedder (embedding_cosine and the near-duplicate check)."""

    def __init__(self, cache_dir: Path, embedder: DictConfig | None):
        self.cache_dir, self._embedder = cache_dir, embedder
        self._lms: dict[str, Any] = {}
        self._encode: Callable | None = None

    def lm(self, node: DictConfig, arm: str | None):
        key = fingerprint(OmegaConf.to_container(node, resolve=True))
        if key not in self._lms:
            what = "the model" if arm is None else f"the model of arm {arm!r}"
            display.status(f"loading {what}: {node.get('name_or_path') or node.get('model') or node.get('_target_')}")
            try:
                self._lms[key] = instantiate_node(node, what, cache_dir=str(self.cache_dir), status=display.status)
            except HarnessError as e:
                if arm is None:
                    raise
                where = f"strategies.{arm}.{e.field}" if e.field else f"strategies.{arm}.model"
                raise ConfigError(f"arm {arm!r}: {e.reason}", field=where) from None
        return self._lms[key]

    def encoder(self) -> Callable:
        """texts → normalised vectors, from `checks.retriever`, loaded on first use."""
        if self._encode is None:
            self._encode = instantiate_node(self._embedder, "the embedder").encode
        return self._encode


@dataclass
class ArmPlan:
    """One arm as it will run: its built strategy, its LM, what its `check()` resolved, and its fingerprint."""

    name: str
    strategy: Strategy
    lm: Any                     # harness.lm.LM (the run's, or the arm's own `model:`); None for an LLM-free run
    target: str
    key: str                    # fingerprint of settings, model, data and seed: resume only onto the same
    checked: dict               # strategy.check()'s result, handed back to prepare (PrepareContext.checked)

    @property
    def model(self) -> dict:
        return arm_model(self.strategy, self.lm)


@dataclass
class Plan:
    """A run as it will be done: what the recipe, each arm and the checks read instead of the raw config."""

    cfg: DictConfig
    run_dir: Path
    seed: int
    chunk: int                  # predictions written every `write_every` examples
    task: Task
    names: list[str]            # the configured arms, in order
    models: Models
    lm: Any                     # the run's model; None when every arm is LLM-free and no judge is on
    cost: cost.CostConfig
    decision: decide.Settings
    arms: dict[str, ArmPlan] = field(default_factory=dict)
    replicates: dict[str, dict[str, int]] = field(default_factory=dict)  # arm → {replicate name: seed}
    judge_lm: Any = None
    model_source: str = "config"  # or "task.yaml": the recipe named the run's model (`model_from_task`)

    @property
    def model(self) -> dict:
        if self.lm is None:
            return {"backend": "no LLM", "name_or_path": "none (no arm uses an LLM)"}
        return self.lm.describe()


def _seed(cfg: DictConfig) -> int:
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"must be a whole number, got {seed!r}", field="seed")
    return seed


def build_plan(cfg: DictConfig, run_dir: Path) -> Plan:
    """Everything validated, every arm built, checked and fingerprinted, and its model loaded or reached; nothing
    is written."""
    seed = _seed(cfg)
    chunk = positive_or_none(cfg.get("write_every", 16), "write_every") or 16
    task = load_configured_task(cfg)
    names = list(cfg.strategies or {})
    if not names:
        raise ConfigError("no strategies selected (e.g. strategies=[zero_shot,prompt_only])", field="strategies")
    costs = cost.load_cost_config(_plain(cfg.get("cost")))  # refused before any work, naming the field
    decision = rundata.settings(_plain(cfg.get("decision")), seed)
    display.status(f"task {escape(task.name)}: {task.type}, train {len(task.train)}, "
                   f"held-out {len(task.heldout)}")
    models = Models(Path(str(cfg.cache_dir)).expanduser(), (cfg.get("checks") or {}).get("retriever"))
    model_node, source = run_model(cfg, task)
    lm = models.lm(model_node, None) if uses_run_model(cfg, names) else None  # LLM-free arms only: not loaded
    plan = Plan(cfg=cfg, run_dir=Path(run_dir), seed=seed, chunk=chunk, task=task, names=names, models=models,
                lm=lm, cost=costs, decision=decision, model_source=source)
    for arm_name, base, node, extra, model_node in expand(cfg, names):
        plan.arms[arm_name] = _arm(plan, arm_name, node, extra, model_node)
        if extra:
            plan.replicates.setdefault(base, {})[arm_name] = extra["seed"]
    plan.judge_lm = judge_model(cfg, task, lm, models)
    return plan


def run_model(cfg: DictConfig, task: Task) -> tuple[DictConfig, str]:
    """The run's model config and where it came from: the recipe's `model:` (task.yaml) over the configured model
    when `model_from_task` is true, or auto (the default) and the command line names no model; else the config's."""
    wanted = cfg.get("model_from_task", "auto")
    if wanted not in ("auto", True, False):
        raise ConfigError(f"must be auto, true or false, got {wanted!r}", field="model_from_task")
    if not task.model or wanted is False or (wanted == "auto" and model_on_command_line()):
        return cfg.model, "config"
    display.status(f"model {escape(str(task.model['name_or_path']))}: named by task.yaml of {escape(task.name)} "
                   f"(model.name_or_path=… or model_from_task=false runs another)")
    with open_dict(cfg.model):  # the recipe may set keys the configured model leaves out (e.g. revision)
        return OmegaConf.merge(cfg.model, dict(task.model)), "task.yaml"


def model_on_command_line() -> bool:
    """Whether this Hydra run's command line sets the run's model (`model=…`, `model.…=…`; not a judge's
    `+model@judge.model=…`). Outside Hydra (the Python API) nothing was typed: False."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not HydraConfig.initialized():
        return False
    overrides = OverridesParser.create().parse_overrides(list(HydraConfig.get().overrides.task))
    return any((o.key_or_group == "model" and not o.package) or o.key_or_group.startswith("model.")
               for o in overrides)


def _arm(plan: Plan, name: str, node: DictConfig, extra: dict, model_node: DictConfig | None) -> ArmPlan:
    """One arm built from its `_target_`, checked once against the task and its model, and fingerprinted; refused
    when the results folder holds another configuration of it."""
    task = plan.task
    arm_lm = plan.lm if model_node is None else plan.models.lm(model_node, name)
    strategy = instantiate_node(node, f"strategy {name!r}", name=name, **extra)
    missing = missing_members(strategy)
    if missing:
        raise ConfigError(f"{node['_target_']} lacks {', '.join(missing)} of the Strategy protocol (subclass "
                          f"harness.strategy.Strategy for the defaults)", field=f"strategies.{name}")
    checked = strategy.check(task, arm_lm) or {}
    ends = [task.answer_settings()] if task.answer_settings() else []  # how answers end (stop, sentences)
    key = fingerprint(strategy.describe(), arm_model(strategy, arm_lm), dict(task.data_hashes), len(task.train),
                      plan.seed, *ends, *([{"input_chars": task.max_input_chars}] if task.cut_inputs else []))
    prepare_path = plan.run_dir / name / "prepare.json"
    if prepare_path.exists() and read_json(prepare_path).get("fingerprint") != key:
        raise ConfigError(f"{prepare_path.parent} holds results of a different configuration of {name!r}; use a "
                          f"new results_dir (or delete that folder) to rerun it", field="results_dir")
    return ArmPlan(name=name, strategy=strategy, lm=arm_lm, target=node["_target_"], key=key, checked=checked)


def judge_model(cfg: DictConfig, task: Task, lm: Any, models: Models) -> Any:
    """The LLM judge's model when `judge.enabled` (the run's model unless `+model@judge.model=…`), checked before
    any work; None when the judge is off."""
    settings = cfg.get("judge") or {}
    if not settings.get("enabled"):
        return None
    if "judge_pass" not in kinds.of(task).metrics or not task.judge:  # the judge marks judge_pass
        raise ConfigError(f"the LLM judge needs a generation task with `judge: {{rubric: …}}` in task.yaml "
                          f"({task.name} is {task.type}{'' if task.judge else ', without a judge rubric'})",
                          field="judge.enabled")
    node = settings.get("model")
    judge_lm = lm if node is None else models.lm(node, "judge")
    if "generate" not in judge_lm.capabilities:
        raise ConfigError(f"the judge's {judge_lm.describe().get('backend')} backend cannot generate",
                          field="judge.model")
    return judge_lm


def uses_run_model(cfg: DictConfig, names: list[str]) -> bool:
    """False only when every arm's class says `uses_llm = False` (the embedding classifier) and no LLM judge is
    on: such a run never loads the LLM."""
    if (cfg.get("judge") or {}).get("enabled"):
        return True
    for _, _, node, _, _ in expand(cfg, names):
        try:
            if get_class(node["_target_"]).uses_llm:
                return True
        except Exception:  # an unknown target, or one outside the protocol: the plan names it
            return True
    return False


def expand(cfg: DictConfig, names: list[str]):
    """(arm name, configured name, config, extra kwargs, model config or None) per arm. An arm with `seeds: [..]`
    becomes one replicate per seed (named by records.replicate_name); an arm with a `model:` node
    (`+model@strategies.NAME.model=OPTION`) runs on that model instead of the run's."""
    for name in names:
        node = cfg.strategies[name]
        seeds = node.get("seeds")
        model = node.get("model")
        plain = OmegaConf.create({k: v for k, v in node.items() if k not in ("seeds", "model")})  # runner keys
        if not seeds:
            yield name, name, plain, {}, model
            continue
        for s in seeds:
            if isinstance(s, bool) or not isinstance(s, int):
                raise ConfigError(f"must be a list of whole numbers, got {s!r}", field=f"strategies.{name}.seeds")
            yield replicate_name(name, int(s)), name, plain, {"seed": int(s)}, model
