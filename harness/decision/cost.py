"""Cost model: measured usage (throughput, tokens, training time) × the prices in conf/cost/*.yaml → $ per 1k
requests, one-off and recurring costs, monthly totals and the break-even volume of fine-tuning. Pure.

Wrong answers cost money too: `error_cost` per wrong example on the primary metric (per unit of 1 − metric for
metrics that are not 0/1) and `review_cost` per output failing any of the task's rules are priced per request from
the arm's measured scores and counted in the monthly total.

Self-hosted serving is priced as hourly price × measured time per request (the run's batched throughput on the
machine that produced it). A fine-tuned arm also pays its measured training time (one-off, and again at every
retraining), labelling of its training examples, and a monthly upkeep (versioning, evaluation, data governance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from harness.errors import ConfigError
from harness.records import ArmResult


@dataclass(frozen=True)
class CostConfig:
    currency: str
    volume_per_month: float
    horizon_months: float
    price_per_hour: float
    train_price_per_hour: float
    hardware: str
    retrain_every_months: float | None
    upkeep_per_month: float
    labelling_cost_per_example: float
    reference_api: Mapping[str, Any] | None
    example: bool
    api_prices: Mapping[str, Mapping[str, float]] | None = None  # served model name → per-1M-token prices
    error_cost: float = 0.0    # per wrong example (per unit of 1 − primary metric) per request
    review_cost: float = 0.0   # per output failing any of the task's rules (1 − rules_pass) per request

    @property
    def prices_errors(self) -> bool:
        return self.error_cost > 0 or self.review_cost > 0


def _number(raw: Mapping, key: str, field: str, *, positive: bool = False, optional: bool = False) -> float | None:
    value = raw.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (positive and value == 0):
        kind = "a positive number" if positive else "a number ≥ 0"
        raise ConfigError(f"must be {kind}, got {value!r}", field=field)
    return float(value)


def load_cost_config(raw: Mapping | None) -> CostConfig:
    """Validate the `cost` config node; errors name the field (cost.self_hosted.price_per_hour, …)."""
    if not raw:
        raise ConfigError("no cost model configured (cost=example, or a file in conf/cost/)", field="cost")
    hosted, ft = raw.get("self_hosted") or {}, raw.get("fine_tuning") or {}
    price = _number(hosted, "price_per_hour", "cost.self_hosted.price_per_hour")
    train_price = _number(hosted, "train_price_per_hour", "cost.self_hosted.train_price_per_hour", optional=True)
    api = raw.get("reference_api")
    if api:
        for key in ("input_per_1m", "output_per_1m"):
            _number(api, key, f"cost.reference_api.{key}")
        if not api.get("prompts_of"):
            raise ConfigError("must name the arm whose prompts the reference model is priced on",
                              field="cost.reference_api.prompts_of")
    retrain = _number(ft, "retrain_every_months", "cost.fine_tuning.retrain_every_months", optional=True)
    api_prices = raw.get("api_prices") or {}
    if not isinstance(api_prices, Mapping):
        raise ConfigError("must map served model names to {input_per_1m, output_per_1m}", field="cost.api_prices")
    for model, prices in api_prices.items():
        if not isinstance(prices, Mapping):
            raise ConfigError("must be {input_per_1m: …, output_per_1m: …}", field=f"cost.api_prices.{model}")
        for key in ("input_per_1m", "output_per_1m"):
            _number(prices, key, f"cost.api_prices.{model}.{key}")
    return CostConfig(currency=str(raw.get("currency", "USD")),
                      volume_per_month=_number(raw, "volume_per_month", "cost.volume_per_month"),
                      horizon_months=_number(raw, "horizon_months", "cost.horizon_months", positive=True),
                      price_per_hour=price, train_price_per_hour=price if train_price is None else train_price,
                      hardware=str(hosted.get("hardware", "")),
                      retrain_every_months=retrain or None,
                      upkeep_per_month=_number(ft, "upkeep_per_month", "cost.fine_tuning.upkeep_per_month") or 0.0,
                      labelling_cost_per_example=_number(ft, "labelling_cost_per_example",
                                                         "cost.fine_tuning.labelling_cost_per_example") or 0.0,
                      reference_api=dict(api) if api else None, example=bool(raw.get("example", False)),
                      error_cost=_number(raw, "error_cost", "cost.error_cost", optional=True) or 0.0,
                      review_cost=_number(raw, "review_cost", "cost.review_cost", optional=True) or 0.0,
                      api_prices={str(k): {p: float(v[p]) for p in ("input_per_1m", "output_per_1m")}
                                  for k, v in api_prices.items()})


def token_price(arm: ArmResult | Mapping, cfg: CostConfig) -> Mapping[str, float] | None:
    """Per-token prices of an arm served by an API (its model named in cost.api_prices), else None."""
    arm = ArmResult.of(arm)
    if not arm.served_by_api or not cfg.api_prices:
        return None
    return cfg.api_prices.get(str((arm.model or {}).get("name_or_path")))


def error_per_1k(metrics: Mapping[str, float], primary: str | None, cfg: CostConfig) -> float:
    """Expected cost of wrong answers per 1k requests: error_cost × (1 − primary metric) + review_cost × (1 −
    rules_pass), from the arm's measured scores (or from one bootstrap resample of them)."""
    cost = 0.0
    if cfg.error_cost and primary and metrics.get(primary) is not None:
        cost += cfg.error_cost * (1 - metrics[primary])
    if cfg.review_cost and metrics.get("rules_pass") is not None:
        cost += cfg.review_cost * (1 - metrics["rules_pass"])
    return 1000 * cost


def arm_cost(arm: ArmResult | Mapping, cfg: CostConfig, primary: str | None = None) -> dict:
    """Costs of one arm from its recorded result (usage, training, prepare_s, train_examples), priced by its own
    backend: an arm on an API model listed in `api_prices` pays its measured tokens at those prices; every other
    arm (transformers, llama.cpp, a server you host) pays the hourly price × its measured time per request. With
    `primary`, the expected cost of its wrong answers (`error_per_1k`) and the cost per correct answer too."""
    arm = ArmResult.of(arm)
    usage = arm.usage
    seconds_per_request = 1 / usage.examples_per_s if usage.examples_per_s else None
    prices = token_price(arm, cfg)
    if prices is not None:
        tokens_in, tokens_out = usage.input_tokens.mean or 0.0, usage.output_tokens.mean or 0.0
        per_1k = 1000 * (tokens_in * prices["input_per_1m"] + tokens_out * prices["output_per_1m"]) / 1e6
    else:
        per_1k = None if seconds_per_request is None else cfg.price_per_hour * seconds_per_request * 1000 / 3600
    training, fine_tuned = arm.training, arm.fine_tuned
    train_compute = ((training.wall_s or 0.0) / 3600 * cfg.train_price_per_hour) if fine_tuned and training else 0.0
    setup_compute = ((arm.prepare_s or 0.0) / 3600 * cfg.price_per_hour
                     if not fine_tuned and prices is None else 0.0)
    labelled = training.labelled_examples if fine_tuned and training else 0
    labelling = cfg.labelling_cost_per_example * labelled
    one_off = train_compute + setup_compute + labelling
    recurring = 0.0
    if fine_tuned:
        recurring = cfg.upkeep_per_month + (train_compute / cfg.retrain_every_months if cfg.retrain_every_months else 0.0)
    result = {"fine_tuned": fine_tuned, "pricing": "per_token" if prices is not None else "per_hour",
              "seconds_per_request": seconds_per_request, "per_1k_requests": per_1k,
              "one_off": one_off, "one_off_parts": {"training_compute": train_compute, "setup_compute": setup_compute,
                                                    "labelling": labelling},
              "recurring_per_month": recurring,
              "error_cost_per_1k_requests": error_per_1k(arm.metrics, primary, cfg)}
    result["monthly_total"] = monthly_total(result, cfg.volume_per_month, cfg.horizon_months)
    result["error_cost_per_month"] = cfg.volume_per_month / 1000 * result["error_cost_per_1k_requests"]
    score = arm.metrics.get(primary) if primary else None
    result["cost_per_correct"] = (result["monthly_total"] / (cfg.volume_per_month * score)
                                  if result["monthly_total"] is not None and score and cfg.volume_per_month else None)
    return result


def all_in_per_1k(cost: Mapping) -> float | None:
    """Serving + expected wrong-answer cost per 1k requests (the latter 0 unless error costs are set)."""
    if cost["per_1k_requests"] is None:
        return None
    return cost["per_1k_requests"] + cost.get("error_cost_per_1k_requests", 0.0)


def monthly_total(cost: Mapping, volume: float, horizon_months: float) -> float | None:
    """Serving and expected wrong answers at `volume` requests/month + recurring + the one-off spread over the
    horizon."""
    per_1k = all_in_per_1k(cost)
    if per_1k is None:
        return None
    return volume / 1000 * per_1k + cost["recurring_per_month"] + cost["one_off"] / horizon_months


def break_even(tuned: Mapping, other: Mapping, horizon_months: float) -> dict:
    """Monthly volume above which the fine-tuned arm costs less per month than `other` (its one-off spread over
    the horizon, its recurring costs counted), and the payback time of its one-off cost at that comparison."""
    fixed_tuned = tuned["recurring_per_month"] + tuned["one_off"] / horizon_months
    fixed_other = other["recurring_per_month"] + other["one_off"] / horizon_months
    if tuned["per_1k_requests"] is None or other["per_1k_requests"] is None:
        return {"requests_per_month": None, "reason": "throughput not measured"}
    saving_per_1k = all_in_per_1k(other) - all_in_per_1k(tuned)  # wrong answers counted when error costs are set
    if saving_per_1k <= 0:
        reason = "costs at least as much per request: never pays back"
        if saving_per_1k < 0 and fixed_tuned < fixed_other:
            below = (fixed_other - fixed_tuned) / -saving_per_1k * 1000
            reason += f" (cheaper only below {below:,.0f} requests/month)"
        elif fixed_tuned <= fixed_other:
            return {"requests_per_month": 0.0, "saving_per_1k_requests": 0.0, "reason": "never costs more"}
        return {"requests_per_month": None, "saving_per_1k_requests": saving_per_1k, "reason": reason}
    volume = max(0.0, (fixed_tuned - fixed_other) / saving_per_1k * 1000)
    return {"requests_per_month": volume, "saving_per_1k_requests": saving_per_1k,
            "reason": "cheaper at any volume" if volume == 0 else "pays back above this volume"}

def reference_api_cost(arm: ArmResult | Mapping, cfg: CostConfig) -> dict | None:
    """What the named arm's prompts (its measured mean input/output tokens) would cost on the reference API."""
    api, arm = cfg.reference_api, ArmResult.of(arm)
    if not api or arm.usage is None:
        return None
    tokens_in, tokens_out = arm.usage.input_tokens.mean or 0.0, arm.usage.output_tokens.mean or 0.0
    per_1k = 1000 * (tokens_in * api["input_per_1m"] + tokens_out * api["output_per_1m"]) / 1e6
    cost = {"per_1k_requests": per_1k, "one_off": 0.0, "recurring_per_month": 0.0}
    return {"name": api["name"], "prompts_of": api["prompts_of"], "input_tokens": tokens_in,
            "output_tokens": tokens_out, **cost,
            "monthly_total": monthly_total(cost, cfg.volume_per_month, cfg.horizon_months)}
