"""Sweep one task through the configured strategies, scoring each on the same held-out set; resumable.

Knows the Strategy protocol, not the concrete strategies: each is instantiated from its Hydra `_target_`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from rich.markup import escape

from harness import cost, datachecks, display, forgetting, judge, provenance, report, rundata, scoring, tracking
from harness.errors import ConfigError, HarnessError
from harness.records import ArmResult, Comparison, Training, Usage, replicate_mean, replicate_name
from harness.results import PredictionLog, read_json, write_json
from harness.strategy import PrepareContext
from harness.task import Task, load_task

CODE_DIR = Path(__file__).resolve().parent.parent.parent


def _positive_or_none(value: Any, field: str) -> int | None:
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
                     limit_train=_positive_or_none(limit.get("train"), "limit.train"),
                     limit_heldout=_positive_or_none(limit.get("heldout"), "limit.heldout"),
                     limit_per_class=_positive_or_none(limit.get("per_class"), "limit.per_class"),
                     sample=str(limit.get("sample", "first")), sample_seed=int(cfg.get("seed", 0)),
                     allow_overlap=cfg.get("allow_overlap"),
                     max_input_chars=_positive_or_none(limit.get("input_chars"), "limit.input_chars"))


# The results folder cannot be written (disk full, read-only): the run stops with one line instead of failing
# arm after arm; what is on disk is kept and a rerun resumes.
UNWRITABLE = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}


def redact_record(record: dict) -> dict:
    """A prediction record with personal data in its prompt replaced (datachecks.redact): the prompt as sent,
    minus emails, phone numbers, card numbers, IBANs and sort codes of the demonstrations and the input."""
    prompt, n = datachecks.redact(record.get("prompt") or "")
    return {**record, "prompt": prompt, "prompt_redacted": n} if n else record


def _instantiate(node: DictConfig, what: str, **kwargs):
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


def embedding_cosines(encode, outputs: list[str], references: list[Any]) -> list[float]:
    """Cosine similarity of each output to its reference(s) (the best one), with normalised embeddings."""
    refs = [[r] if isinstance(r, str) else list(r) for r in references]
    flat = [r for rs in refs for r in rs]
    out_vecs, ref_vecs = encode([o or " " for o in outputs]), encode(flat)
    values, at = [], 0
    for i, rs in enumerate(refs):
        values.append(max(float(out_vecs[i] @ ref_vecs[at + j]) for j in range(len(rs))))
        at += len(rs)
    return values


def score_strategy(task: Task, records: dict[str, dict], encode=None, extra: dict | None = None) -> dict:
    """Score an arm's recorded outputs; `encode` (texts → normalised vectors) computes embedding_cosine; `extra`
    adds per-example values measured elsewhere ({"judge_pass": {id: 0/1}})."""
    examples = [ex for ex in task.heldout if ex.id in records]
    result = scoring.score_examples(task, examples, [records[ex.id]["output"] for ex in examples])
    per_example = {ex.id: s for ex, s in zip(examples, result["per_example"])}
    added = False  # per-example values joined here; the metrics are then re-aggregated once
    if "embedding_cosine" in task.metrics and encode is not None and examples:
        for ex, value in zip(examples, embedding_cosines(encode, [records[ex.id]["output"] for ex in examples],
                                                         [ex.target for ex in examples])):
            per_example[ex.id]["embedding_cosine"] = value
        added = True
    if extra and examples:
        for key, values in extra.items():
            for ex in examples:
                per_example[ex.id][key] = values[ex.id]
        added = True
    gold = [(ex, records[ex.id].get("retrieved")) for ex in examples if ex.meta.get("doc_ids")]
    if gold and len(gold) == len(examples) and all(hits and all("doc_id" in h for h in hits) for _, hits in gold):
        depth = min(len(hits) for _, hits in gold)  # recall@k only where k passages were retrieved
        ks = tuple(k for k in (1, 3, 5, 10) if k <= depth)
        for (ex, _), found in zip(gold, scoring.retrieval_per_example(
                [list(ex.meta["doc_ids"]) for ex, _ in gold], [[h["doc_id"] for h in hits] for _, hits in gold], ks)):
            per_example[ex.id].update(found)
        added = True
    metrics = (scoring.aggregate(task.type, list(per_example.values()), task.labels) if added
               else dict(result["metrics"]))
    return {"primary_metric": task.metric, "n": len(examples), "metrics": metrics,
            "details": result["details"], "per_example": per_example}


def _arm_model(strategy, lm) -> dict:
    """The model an arm's results name: its own `arm_model` when it uses no LLM, else its LM's description."""
    return getattr(strategy, "arm_model", None) or lm.describe()


class Runner:
    def __init__(self, cfg: DictConfig, run_dir: Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.cache_dir = Path(str(cfg.cache_dir)).expanduser()
        self.chunk = _positive_or_none(cfg.get("write_every", 16), "write_every") or 16
        self._models: dict[str, Any] = {}

    def run(self) -> dict:
        cfg = self.cfg
        seed = cfg.seed
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"must be a whole number, got {seed!r}", field="seed")
        task = load_configured_task(cfg)
        names = list(cfg.strategies or {})
        if not names:
            raise ConfigError("no strategies selected (e.g. strategies=[zero_shot,prompt_only])", field="strategies")
        cost.load_cost_config(cfg.get("cost"))  # refused before any work, naming the field
        rundata.settings(cfg.get("decision"), seed)
        display.status(f"task {escape(task.name)}: {task.type}, train {len(task.train)}, held-out {len(task.heldout)}")
        lm = self._model(cfg.model, None) if self._uses_run_model(names) else None  # LLM-free arms only: not loaded
        model = lm.describe() if lm is not None else {"backend": "no LLM", "name_or_path": "none (no arm uses an LLM)"}
        # Preflight: every arm is built, its model loaded or reached, and checked against what its backend can do
        # and what the results folder already holds, before any work is done or anything is written.
        arms: dict[str, tuple] = {}
        replicated: dict[str, dict[str, int]] = {}  # arm → {replicate name: seed}
        for arm_name, base, node, extra, model_node in self._expand(names):
            arm_lm = lm if model_node is None else self._model(model_node, arm_name)
            strategy = _instantiate(node, f"strategy {arm_name!r}", name=arm_name, **extra)
            if hasattr(strategy, "check"):
                strategy.check(task, arm_lm)
            ends = [task.answer_settings()] if task.answer_settings() else []  # how answers end (stop, sentences)
            key = fingerprint(strategy.describe(), _arm_model(strategy, arm_lm), dict(task.data_hashes),
                              len(task.train), seed, *ends,
                              *([{"input_chars": task.max_input_chars}] if task.cut_inputs else []))
            prepare_path = self.run_dir / arm_name / "prepare.json"
            if prepare_path.exists() and read_json(prepare_path).get("fingerprint") != key:
                raise ConfigError(f"{prepare_path.parent} holds results of a different configuration of "
                                  f"{arm_name!r}; use a new results_dir (or delete that folder) to rerun it",
                                  field="results_dir")
            arms[arm_name] = (strategy, key, node["_target_"], arm_lm)
            if extra:
                replicated.setdefault(base, {})[arm_name] = extra["seed"]
        self.judge_lm = self._judge_model(task, lm)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json(self.run_dir / "run.json", {
            **provenance.collect(CODE_DIR), "task": task.name, "task_dir": str(task.directory.resolve()),
            "data_hashes": dict(task.data_hashes), "seed": seed, "strategies": names,
            "limits": self._limits(task), "model": model,
            "inputs_cut": {"limit_chars": task.max_input_chars, "ids": list(task.cut_inputs)},
            "ids_in_train_and_heldout": list(task.shared_ids),
            "config": OmegaConf.to_container(cfg, resolve=True)})
        if task.cut_inputs:
            display.status(f"[yellow]warning:[/yellow] {len(task.cut_inputs)} input(s) longer than "
                           f"{task.max_input_chars:,} characters (limit.input_chars) were cut in the middle; ids in "
                           f"run.json")
        if task.shared_ids:
            display.status(f"[yellow]warning:[/yellow] {len(task.shared_ids)} id(s) appear in both train and held-out "
                           f"(first: {escape(repr(task.shared_ids[0]))}), usually a data bug; ids in run.json")
        if task.overlap:
            display.status(f"[yellow]warning:[/yellow] {len(task.overlap)} held-out inputs also appear in train "
                           f"(allowed by allow_overlap)")
        self._data_checks(task)
        judged = self._judge_agreement(task)
        results: dict[str, ArmResult] = {}
        with display.progress() as bars:
            for name, (strategy, key, target, arm_lm) in arms.items():
                try:
                    results[name] = self._run_strategy(name, strategy, key, target, task, arm_lm, seed, bars)
                except Exception as e:  # a failing arm is recorded; the other arms still run
                    if isinstance(e, OSError) and e.errno in UNWRITABLE:
                        raise
                    user_error = isinstance(e, HarnessError)
                    message = str(e) if user_error else f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                    write_json(self.run_dir / name / "error.json",  # a full disk here stops the run: one line
                               {"error": message, "traceback": None if user_error else traceback.format_exc()})
                    display.error(f"strategy {name} failed: {message}")
                    results[name] = ArmResult(name=name, error=message)
        for name, members in replicated.items():
            for member, member_seed in members.items():
                results[member] = results[member].replicate(name, member_seed)
            results[name] = replicate_mean(name, [results[m] for m in members])
        try:  # a failing check is reported; the arms' results still make the comparison
            self._forgetting(task, lm, {name: arm[0] for name, arm in arms.items() if name in results
                                        and not results[name].failed and arm[3] is lm})
        except Exception as e:
            display.error(f"forgetting check failed: {type(e).__name__}: {e}")
        comparison = Comparison(task=task.name, task_type=task.type, primary_metric=task.metric,
                                heldout_n=len(task.heldout), run_dir=str(self.run_dir), model=model,
                                labels=list(task.labels), fields=list(task.fields), judge=judged or None,
                                arms=results).to_json()
        write_json(self.run_dir / "comparison.json", comparison)
        try:  # what was measured is on disk already; the decision and report are re-made from it
            comparison = rundata.decide_run(self.run_dir)
            report.write_reports(self.run_dir)
        except HarnessError as e:
            display.error(f"decision not made: {e}")
        tracking.track(cfg, self.run_dir)  # optional (tracking=mlflow); a failure is one warning
        return comparison

    def _limits(self, task: Task) -> dict:
        """Split sizes as run (and limit.per_class when set: a learning curve's x-axis in examples per class)."""
        per = (self.cfg.get("limit") or {}).get("per_class")
        return {"train": len(task.train), "heldout": len(task.heldout), **({"per_class": int(per)} if per else {})}

    def _model(self, node: DictConfig, arm: str | None):
        """The LM of a model config (one per distinct config: arms on the same model share it)."""
        key = fingerprint(OmegaConf.to_container(node, resolve=True))
        if key not in self._models:
            what = "the model" if arm is None else f"the model of arm {arm!r}"
            display.status(f"loading {what}: {node.get('name_or_path') or node.get('model') or node.get('_target_')}")
            try:
                self._models[key] = _instantiate(node, what, cache_dir=str(self.cache_dir), status=display.status)
            except HarnessError as e:
                if arm is None:
                    raise
                field = f"strategies.{arm}.{e.field}" if e.field else f"strategies.{arm}.model"
                raise ConfigError(f"arm {arm!r}: {e.reason}", field=field) from None
        return self._models[key]

    def _encoder(self):
        """The packaged embedder (checks.retriever), loaded once: embedding_cosine and the near-duplicate check."""
        if getattr(self, "_encode", None) is None:
            checks = self.cfg.get("checks") or {}
            self._encode = _instantiate(checks.retriever, "the embedder").encode
        return self._encode

    def _judge_model(self, task: Task, lm):
        """The LLM judge's model when `judge.enabled` (the run's model unless `+model@judge.model=…`), checked
        before any work."""
        settings = self.cfg.get("judge") or {}
        if not settings.get("enabled"):
            return None
        if task.type != "generation" or not task.judge:
            raise ConfigError(f"the LLM judge needs a generation task with `judge: {{rubric: …}}` in task.yaml "
                              f"({task.name} is {task.type}{'' if task.judge else ', without a judge rubric'})",
                              field="judge.enabled")
        node = settings.get("model")
        judge_lm = lm if node is None else self._model(node, "judge")
        if "generate" not in judge_lm.capabilities:
            raise ConfigError(f"the judge's {judge_lm.describe().get('backend')} backend cannot generate",
                              field="judge.model")
        return judge_lm

    def _judge_agreement(self, task: Task) -> dict | None:
        """The judge on the task's hand-marked outputs, once per judge model and rubric (judge.json)."""
        if self.judge_lm is None:
            return None
        max_new = int((self.cfg.get("judge") or {}).get("max_new_tokens", 4))
        display.status(f"LLM judge: agreement with {len(task.judge['marked'])} hand-marked outputs")
        result = judge.agreement_file(self.judge_lm, task, self.run_dir / "judge.json", max_new)
        agree = result["agreement"]
        if agree.get("n"):
            kappa = "undefined" if agree["cohen_kappa"] is None else f"{agree['cohen_kappa']:.2f}"
            display.status(f"LLM judge agrees with the hand marks on {agree['agreement']:.0%} of {agree['n']} "
                           f"(Cohen's kappa {kappa})")
        return result

    def _judge_outputs(self, name: str, task: Task, records: dict[str, dict]) -> dict | None:
        """judge_pass per held-out output of one arm (<arm>/judge.json, resumable); a failing judge is reported
        and the arm keeps its other metrics."""
        if self.judge_lm is None:
            return None
        key = read_json(self.run_dir / "judge.json")["key"]
        max_new = int((self.cfg.get("judge") or {}).get("max_new_tokens", 4))
        try:
            return {"judge_pass": judge.judge_file(self.judge_lm, task, records, self.run_dir / name / "judge.json",
                                                   key, self.chunk, max_new)}
        except Exception as e:
            display.error(f"LLM judge failed on {name}: {type(e).__name__}: {e}")
            return None

    def _data_checks(self, task: Task) -> dict:
        """Overlap, label balance and personal data, before any training (data_checks.json)."""
        path = self.run_dir / "data_checks.json"
        checks = self.cfg.get("checks") or {}
        key = fingerprint(dict(task.data_hashes), OmegaConf.to_container(checks, resolve=True),
                          {k: p.pattern for k, p in datachecks.PII_PATTERNS.items()}, datachecks.DETECTOR)
        if path.exists() and read_json(path).get("key") == key:
            return read_json(path)
        encode = None
        if checks.get("near_duplicates", True):
            encode = self._encoder()
        display.status("data checks: overlap with train/knowledge, label balance, personal data")
        result = {"key": key, "data_hashes": dict(task.data_hashes),
                  **datachecks.run_checks(task, encode, float(checks.get("near_threshold", 0.95)))}
        write_json(path, result)
        for split, found in result["overlap"].items():
            if found["exact"] or found["near"]:
                display.status(f"[yellow]warning:[/yellow] {len(found['exact'])} held-out input(s) identical and "
                               f"{len(found['near'])} nearly identical to {split} examples")
        if result["pii"]["examples"]:
            display.status(f"[yellow]warning:[/yellow] {len(result['pii']['examples'])} training example(s) contain "
                           f"personal-data patterns ({result['pii']['counts']}); ids in data_checks.json")
        return result

    def _forgetting(self, task: Task, base, strategies: dict) -> None:
        """Base model vs each fine-tuned model (`strategy.tuned_lm`) on the control set (control.json)."""
        tuned = {name: s.tuned_lm for name, s in strategies.items() if getattr(s, "tuned_lm", None) is not None}
        settings = self.cfg.get("forgetting") or {}
        control = forgetting.load_control(task, str(settings.get("control", "auto")),
                                          _positive_or_none(settings.get("limit"), "forgetting.limit"))
        if not tuned or control is None:
            return
        path = self.run_dir / "control.json"
        done = read_json(path) if path.exists() else {}
        if done.get("ids") != list(control.ids) or done.get("method") != control.method:
            done = {"name": control.name, "method": control.method, "ids": list(control.ids), "arms": {}}
        todo = [name for name in tuned if name not in done["arms"]]
        if not todo:
            return
        display.status(f"forgetting check: base and {len(todo)} fine-tuned model(s) on the {control.name} "
                       f"({len(control.ids)} items)")
        if "base" not in done:
            done["base"] = control.score(base)
        for name in todo:
            done["arms"][name] = control.score(tuned[name])
            write_json(path, done)

    def _uses_run_model(self, names: list[str]) -> bool:
        """False only when every arm's class says `uses_llm = False` (the embedding classifier) and no LLM judge
        is on: such a run never loads the LLM."""
        if (self.cfg.get("judge") or {}).get("enabled"):
            return True
        for _, _, node, _, _ in self._expand(names):
            try:
                if getattr(get_class(node["_target_"]), "uses_llm", True):
                    return True
            except Exception:  # an unknown target: the preflight names it
                return True
        return False

    def _expand(self, names: list[str]):
        """(arm name, configured name, config, extra kwargs, model config or None) per arm. An arm with
        `seeds: [..]` becomes one replicate per seed (named by records.replicate_name); an arm with a `model:` node
        (`+model@strategies.NAME.model=OPTION`) runs on that model instead of the run's."""
        for name in names:
            node = self.cfg.strategies[name]
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

    def _run_strategy(self, name: str, strategy, key: str, target: str, task: Task, lm, seed: int, bars) -> ArmResult:
        folder = self.run_dir / name
        model = _arm_model(strategy, lm)
        prepare_path = folder / "prepare.json"
        ctx = PrepareContext(task=task, lm=lm, workdir=folder, cache_dir=self.cache_dir, seed=seed,
                             progress=bars)
        start = time.perf_counter()
        report = strategy.prepare(ctx)
        prepare_s = time.perf_counter() - start
        write_json(prepare_path, {"strategy": name, "target": target,
                                  "settings": strategy.describe(), "model": model, "fingerprint": key,
                                  "prepare_s": prepare_s, "report": report,
                                  **({"answer_stops": task.answer_settings()} if task.answer_settings() else {})})
        log = PredictionLog(folder / "predictions.jsonl")
        counters = dict(getattr(lm, "counters", {}))
        todo = [ex for ex in task.heldout if ex.id not in log.done()]
        advance = bars(f"{name}: predict", len(task.heldout))
        advance(len(task.heldout) - len(todo))
        for s in range(0, len(todo), self.chunk):
            batch = todo[s:s + self.chunk]
            predictions = strategy.predict(batch)
            if [p.id for p in predictions] != [ex.id for ex in batch]:
                raise RuntimeError(f"strategy {name} returned predictions out of order or incomplete")
            log.append(redact_record(p.to_json()) for p in predictions)
            advance(len(batch))
        records = [log.records[ex.id] for ex in task.heldout]
        metrics = score_strategy(task, log.records, self._encoder() if "embedding_cosine" in task.metrics else None,
                                 self._judge_outputs(name, task, log.records))
        usage = Usage.of_predictions(records)
        if counters:  # requests, retries, cache hits and failures of this arm's backend during this run
            usage = replace(usage, backend={k: v - counters.get(k, 0) for k, v in lm.counters.items()})
        write_json(folder / "metrics.json", metrics)
        write_json(folder / "usage.json", usage.to_json())
        if usage.failed:
            display.status(f"[yellow]warning:[/yellow] {name}: {usage.failed} request(s) failed (malformed or "
                           f"empty answers, prompts over the server's context); scored as wrong, listed in "
                           f"predictions.jsonl")
        if usage.truncated:
            display.status(f"[yellow]warning:[/yellow] {name}: {usage.truncated} prompt(s) were longer than the "
                           f"model's context and were cut in the middle (counted in usage.json)")
        training = report.get("training")
        if training:  # the measured cost of training, also when this run reused the cached adapter
            training = {**{k: training.get(k) for k in ("wall_s", "tokens_seen", "tokens_per_s", "peak_memory_mb",
                                                         "peak_memory_kind", "device", "autocast",
                                                         "trainable_parameters", "train_examples",
                                                         "dev_examples", "best_epoch", "epochs_run", "stop_reason",
                                                         "optimizer_steps", "method", "history")},
                        "cached": report.get("cached", False)}
        return ArmResult.measured(name, summary=report.get("summary", ""), metrics=metrics["metrics"], n=metrics["n"],
                                  prepare_s=prepare_s, training=Training.from_json(training), usage=usage,
                                  model=model)
