"""Per-path summaries and the few statistics insights rest on: Wilson intervals, two-proportion tests, scans.

Scores count fractionally (0.85 is 0.85 of a success), so every "success count" here is a float sum of scores.
Everything is pure: a goal's outcome columns (``OutcomeColumns``) in, frozen values out. Sums run in the outcomes'
order, one after the other, as a Python loop would add them, so a figure does not depend on how it was computed.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from kalibr.stores._records import from_micros
from kalibr.stores.base import OutcomeColumns, PathRecord

__all__ = [
    "Changepoint",
    "PathStats",
    "changepoint_at",
    "compare_rates",
    "find_changepoint",
    "normal_cdf",
    "rounded",
    "sequential_sum",
    "summarise_paths",
    "wilson_interval",
]

Z_95 = 1.959964


def normal_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def wilson_interval(successes: float, samples: int, z: float = Z_95) -> tuple[float, float]:
    """The 95% Wilson score interval of a success rate; (0, 1) when there is no sample."""
    if samples <= 0:
        return 0.0, 1.0
    p = min(max(successes / samples, 0.0), 1.0)
    denominator = 1.0 + z * z / samples
    centre = (p + z * z / (2 * samples)) / denominator
    half = z * math.sqrt(p * (1 - p) / samples + z * z / (4 * samples * samples)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True, slots=True)
class RateComparison:
    """How sure we are that rate ``a`` differs from rate ``b``."""

    difference: float
    z: float
    p_value: float
    """Two-sided p-value of the pooled two-proportion z-test."""
    probability_a_better: float
    """P(true rate of a > true rate of b) under Beta(1+s, 1+f) posteriors (normal approximation)."""


def compare_rates(successes_a: float, samples_a: int, successes_b: float, samples_b: int) -> RateComparison:
    """Compare two success rates (each given as a fractional success count over samples)."""
    rate_a, rate_b = successes_a / samples_a, successes_b / samples_b
    pooled = (successes_a + successes_b) / (samples_a + samples_b)
    se = math.sqrt(pooled * (1 - pooled) * (1 / samples_a + 1 / samples_b))
    z = (rate_a - rate_b) / se if se > 0 else 0.0
    p_value = 2 * (1 - normal_cdf(abs(z))) if se > 0 else 1.0
    return RateComparison(
        rate_a - rate_b, z, p_value, _probability_greater(successes_a, samples_a, successes_b, samples_b)
    )


def _probability_greater(successes_a: float, samples_a: int, successes_b: float, samples_b: int) -> float:
    def moments(successes: float, samples: int) -> tuple[float, float]:
        alpha, beta = 1 + successes, 1 + samples - successes
        total = alpha + beta
        return alpha / total, alpha * beta / (total * total * (total + 1))

    mean_a, var_a = moments(successes_a, samples_a)
    mean_b, var_b = moments(successes_b, samples_b)
    return normal_cdf((mean_a - mean_b) / math.sqrt(var_a + var_b))


@dataclass(frozen=True, slots=True)
class Changepoint:
    """The most likely moment a path's success rate changed, and how strong the evidence is."""

    index: int
    """Outcomes before this index form the "before" segment."""
    changed_at: datetime
    before_rate: float
    after_rate: float
    before_samples: int
    after_samples: int
    statistic: float
    """2 x the log-likelihood ratio of "two rates, split here" against "one rate" (about chi-squared, 1 df)."""


def sequential_sum(values: np.ndarray) -> float:
    """The sum added left to right (numpy's ``sum`` adds pairwise, which rounds differently)."""
    return float(np.cumsum(values)[-1]) if len(values) else 0.0


def find_changepoint(scores: np.ndarray, reported_at: np.ndarray, *, min_segment: int = 4) -> Changepoint | None:
    """Scan every split of one path's (chronological) scores for the largest likelihood-ratio statistic;
    ``reported_at`` holds their times (microseconds).

    The likelihood ratio, unlike a z statistic, stays calibrated when one segment is short, which is the usual
    case: the router stops sending traffic to a path soon after it breaks.
    """
    n = len(scores)
    if n < 2 * min_segment:
        return None
    prefix = _prefix_sums(scores)
    splits = np.arange(min_segment, n - min_segment + 1)
    total = prefix[-1]
    statistics = 2 * (
        _log_likelihoods(prefix[splits], splits)
        + _log_likelihoods(total - prefix[splits], n - splits)
        - _log_likelihood(float(total), n)
    )
    return _changepoint(reported_at, prefix, int(splits[int(np.argmax(statistics))]))


def changepoint_at(scores: np.ndarray, reported_at: np.ndarray, index: int) -> Changepoint:
    """The split of the scores at ``index`` (0 < index < len), as ``find_changepoint`` would report it."""
    return _changepoint(reported_at, _prefix_sums(scores), index)


def _prefix_sums(scores: np.ndarray) -> np.ndarray:
    return np.concatenate(([0.0], np.cumsum(scores)))


def _log_likelihoods(successes: np.ndarray, samples: np.ndarray) -> np.ndarray:
    """``_log_likelihood`` of each (successes, samples) pair at once."""
    rate = successes / samples
    failures = samples - successes
    with np.errstate(divide="ignore", invalid="ignore"):
        hits = np.where(successes > 0, successes * np.log(rate), 0.0)
        misses = np.where(failures > 0, failures * np.log1p(-rate), 0.0)
    return np.asarray(hits + misses)


def _changepoint(reported_at: np.ndarray, prefix: np.ndarray, k: int) -> Changepoint:
    n, total, before_sum = len(reported_at), float(prefix[-1]), float(prefix[k])
    before, after = before_sum / k, (total - before_sum) / (n - k)
    statistic = 2 * (
        _log_likelihood(before_sum, k) + _log_likelihood(total - before_sum, n - k) - _log_likelihood(total, n)
    )
    return Changepoint(k, from_micros(int(reported_at[k])), before, after, k, n - k, statistic)


def _log_likelihood(successes: float, samples: int) -> float:
    """Bernoulli log-likelihood of fractional successes at their own rate."""
    rate = successes / samples
    failures = samples - successes
    result = successes * math.log(rate) if successes > 0 else 0.0
    return result + (failures * math.log(1 - rate) if failures > 0 else 0.0)


@dataclass(frozen=True, slots=True)
class PathStats:
    """One path's results over the window."""

    path_id: str
    model: str
    params: Mapping[str, Any]
    samples: int
    successes: float
    cost_sum: float = 0.0
    cost_count: int = 0
    latency_sum: float = 0.0
    latency_count: int = 0
    p95_latency_ms: float | None = None
    """The nearest-rank 95th percentile of the outcomes' latencies."""
    failures: Mapping[str, int] = field(default_factory=dict)
    registered: bool = False
    enabled: bool = True
    generated: bool = False
    answered: int = 0
    """Outcomes of calls the provider answered (every outcome not reported for a provider failure)."""

    @property
    def success_rate(self) -> float | None:
        return self.successes / self.samples if self.samples else None

    @property
    def never_answered(self) -> bool:
        """Called, and every call failed at the provider."""
        return self.samples > 0 and self.answered == 0

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.successes, self.samples)

    @property
    def mean_cost_usd(self) -> float | None:
        return self.cost_sum / self.cost_count if self.cost_count else None

    @property
    def mean_latency_ms(self) -> float | None:
        return self.latency_sum / self.latency_count if self.latency_count else None

    @property
    def label(self) -> str:
        if not self.params:
            return self.model
        return f"{self.model}[{','.join(f'{k}={v}' for k, v in sorted(self.params.items()))}]"

    def to_dict(self, total_samples: int) -> dict[str, Any]:
        """The wire shape of one row of ``paths`` (documented in ``kalibr.insights``)."""
        low, high = self.interval
        return {
            "path_id": self.path_id,
            "model": self.model,
            "params": dict(self.params),
            "label": self.label,
            "samples": self.samples,
            "traffic_share": rounded(self.samples / total_samples) if total_samples else 0.0,
            "success_rate": rounded(self.success_rate),
            "ci_low": rounded(low) if self.samples else None,
            "ci_high": rounded(high) if self.samples else None,
            "mean_cost_usd": rounded(self.mean_cost_usd, 8),
            "mean_latency_ms": rounded(self.mean_latency_ms, 1),
            "p95_latency_ms": rounded(self.p95_latency_ms, 1),
            "failure_modes": dict(sorted(self.failures.items(), key=lambda item: (-item[1], item[0]))),
            "enabled": self.enabled,
            "generated": self.generated,
        }


def summarise_paths(
    columns: OutcomeColumns,
    registered: Sequence[PathRecord],
    generated: Iterable[str] = (),
    kept: np.ndarray | None = None,
) -> list[PathStats]:
    """One ``PathStats`` per registered path (even without outcomes) and per path seen in the outcomes (those of
    the ``kept`` mask, when given)."""
    generated_ids = set(generated)
    stats = {item.path.path_id: _empty(item, generated_ids) for item in registered}
    rows = slice(None) if kept is None else kept
    path, score = columns.path[rows], columns.score[rows]
    width = len(columns.path_ids)
    samples = np.bincount(path, minlength=width)
    successes = np.bincount(path, weights=score, minlength=width)
    cost, latency = columns.cost_usd[rows], columns.latency_ms[rows]
    priced, timed = ~np.isnan(cost), ~np.isnan(latency)
    cost_sums = np.bincount(path[priced], weights=cost[priced], minlength=width)
    cost_counts = np.bincount(path[priced], minlength=width)
    latency_sums = np.bincount(path[timed], weights=latency[timed], minlength=width)
    latency_counts = np.bincount(path[timed], minlength=width)
    answered = np.bincount(path[~columns.provider_failed[rows]], minlength=width)
    failures = _failures(columns, path, score, columns.category[rows])
    for code in np.flatnonzero(samples).tolist():
        path_id = columns.path_ids[code]
        base = stats.get(path_id) or PathStats(path_id, columns.models[code] or "?", {}, 0, 0.0)
        stats[path_id] = dataclasses.replace(
            base,
            samples=int(samples[code]),
            successes=float(successes[code]),
            cost_sum=float(cost_sums[code]),
            cost_count=int(cost_counts[code]),
            latency_sum=float(latency_sums[code]),
            latency_count=int(latency_counts[code]),
            p95_latency_ms=_p95(latency[timed & (path == code)]),
            failures=failures.get(code, {}),
            answered=int(answered[code]),
        )
    return sorted(stats.values(), key=lambda item: (-item.samples, item.path_id))


def _failures(
    columns: OutcomeColumns, path: np.ndarray, score: np.ndarray, category: np.ndarray
) -> dict[int, dict[str, int]]:
    """Per path code, the categories of its failed outcomes (score under 0.5; "unknown" when none was given),
    counted in the order they first appear."""
    failed = score < 0.5
    pairs = path[failed] * (len(columns.categories) + 1) + category[failed] + 1
    values, first, counts = np.unique(pairs, return_index=True, return_counts=True)
    found: dict[int, dict[str, int]] = {}
    for position in np.argsort(first, kind="stable").tolist():
        code, category_code = divmod(int(values[position]), len(columns.categories) + 1)
        name = columns.categories[category_code - 1] if category_code else "unknown"
        per_path = found.setdefault(code, {})
        per_path[name] = per_path.get(name, 0) + int(counts[position])
    return found


def _p95(latencies: np.ndarray) -> float | None:
    """Nearest rank: the smallest latency at or above 95% of them."""
    if not len(latencies):
        return None
    ordered = np.sort(latencies)
    return float(ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)])


def _empty(record: PathRecord, generated: set[str]) -> PathStats:
    path = record.path
    return PathStats(
        path.path_id,
        path.model,
        dict(path.params),
        0,
        0.0,
        registered=True,
        enabled=record.enabled,
        generated=path.path_id in generated,
    )


def rounded(value: float | None, digits: int = 4) -> float | None:
    """Round for the wire (JSON readers want 0.9123, not 0.91234567891)."""
    return None if value is None else round(float(value), digits)
