"""Prompt-aware routing: a goal's prompts grouped into clusters whose evidence is pooled with the goal's.

A goal that mixes tasks (maths, code and trivia under one ``answer_question``) has a best path per kind of
prompt, not one. ``PromptClusters`` keeps, for one goal, centroids of prompt feature vectors (online k-means:
the first ``max_clusters`` distinct prompts seed them, each later prompt joins the nearest and moves it) and,
per cluster and path, the successes and failures of the outcomes of that cluster's prompts.

The policy never routes on a cluster's outcomes alone: that would pay a goal's cold start again in every
cluster. It chooses over a *view* of each path: the cluster's own evidence plus the goal's evidence from its
other clusters, down-weighted to at most ``pooling`` pseudo-outcomes (``n * pooling / (n + pooling)`` for
``n`` outcomes elsewhere). The view reaches the policy as priors: the goal's states, with the part of their
evidence from elsewhere that is not pooled taken off their Beta pseudo-counts. ``pooling`` is estimated from
the outcomes (empirical Bayes): how far, beyond chance, each path's success rate differs between clusters (a
heterogeneity test, then the moment estimate of a Beta-binomial's concentration). A goal whose prompts say
nothing about its outcomes shows no such spread, pools everything, and routes exactly as without prompts; a
goal that mixes tasks pools less, and each cluster soon follows its own best path. (The spread is measured on
raw rates: under bandit feedback a cluster's outcomes mostly come from the path it favours, so its difficulty
and its ranking of the paths cannot be told apart; a spread in difficulty alone costs some exploration, not a
wrong choice.)

Within a cluster, prompts still differ, and k-means does not know which differences matter. So the view of
each path is corrected per prompt by a regression that learns that from the outcomes: per path, ridge
regression of (outcome - the view's mean) on a reduced feature vector (``regression_vector``). The view's
mean moves by the prediction, and its pseudo-outcomes shrink to ``1 / (1 / n + z' A^-1 z)`` (the prediction's
uncertainty added to the view's), so a prompt unlike those seen is judged on the cluster's view alone. The
ridge penalty shrinks the correction to nothing until outcomes support it; while pooling is full (no signal)
the correction is off too, and the goal routes exactly as without prompts.

Everything else stays per goal, as without prompts: the sample floor, probes, staleness and change detection
read the goal's states, which the policy still gets, so clusters add no exploration of their own. When the
goal's change detector restarts a path, its evidence in every cluster is set aside with it (and given back if
the probes restore the goal's record): a path that breaks is left in every cluster at once.

State lives in the object (per goal, in memory), not in the store: after a restart a goal routes on its
per-goal record until its clusters have evidence again. Like the rest of a policy it does no I/O and no
locking: the engine calls it under its own lock.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kalibr._exceptions import UserError
from kalibr.policies.base import ArmState
from kalibr.policies.drift import RESETS, RESTORES

__all__ = ["MAX_CLUSTERS", "PromptClusters", "PromptHandle", "regression_vector"]

MAX_CLUSTERS = 16
"""Clusters per goal. Enough for the tasks one goal plausibly mixes; pooling makes a spare cluster cheap."""
_REESTIMATE_EVERY = 16
"""Outcomes between estimates of ``pooling`` (a sum over clusters and paths: cheap, but not per outcome)."""
_NOISE_SIGMAS = 3.0
"""Heterogeneity must exceed chance by this many standard deviations of the statistic to count as signal."""
_MIN_POOLING = 1.0
"""However different the clusters, the goal's record elsewhere counts as at least one outcome in each."""
_RATE_BOUND = 0.02
"""Expected rates are kept inside [bound, 1 - bound], where a Pearson term's variance stays finite."""
RIDGE = 32.0
"""Ridge penalty of the per-prompt correction, in outcomes of a unit-length vector (measured on the merged
replay tables: 8 to 64 do alike, 4 overfits)."""
_PREFIX = 64
"""Leading values of a longer feature vector the regression reads (a Matryoshka prefix of the embedding)."""
_TAIL = 12
"""Trailing values it reads as well (the lexical counts of ``auto_featurizer``)."""
_MEAN_BOUND = 0.01


def regression_vector(features: np.ndarray) -> np.ndarray:
    """What the per-prompt correction regresses on: a vector of at most ``_PREFIX + _TAIL`` values as it is;
    a longer one (``auto_featurizer``'s embedding then lexical counts) as its first ``_PREFIX`` values scaled
    to unit length and its last ``_TAIL``. Small enough that the correction costs microseconds per path."""
    vector = np.asarray(features, dtype=np.float64).ravel()
    if vector.size <= _PREFIX + _TAIL:
        return vector
    prefix = vector[:_PREFIX]
    norm = math.sqrt(prefix @ prefix)
    return np.concatenate((prefix / norm if norm > 0.0 else prefix, vector[-_TAIL:]))


@dataclass(slots=True)
class PromptHandle:
    """One prompt's place in its goal's clusters, from ``assign`` until its outcome is learned: its cluster,
    its regression vector, and the view's mean of each path when the policy chose (what the outcome corrects);
    while pooling is full, the goal's arms and priors instead, whose mean of the one path that gets an outcome is
    worked out then (``goal_mean``), off the decide's path."""

    cluster: int
    vector: np.ndarray
    means: dict[str, float] = field(default_factory=dict)
    goal_view: tuple[Sequence[ArmState], Sequence[tuple[float, float]] | None] | None = None

    def mean_of(self, path_id: str) -> float | None:
        """The view's mean of ``path_id`` when the policy chose, None when it had none."""
        mean = self.means.get(path_id)
        if mean is None and self.goal_view is not None:
            return goal_mean(path_id, *self.goal_view)
        return mean


def goal_mean(
    path_id: str, goal_arms: Sequence[ArmState], goal_priors: Sequence[tuple[float, float]] | None
) -> float | None:
    """A path's posterior mean among the goal's arms (evidence plus prior), None without evidence or prior."""
    for index, arm in enumerate(goal_arms):
        if arm.path_id == path_id:
            prior = goal_priors[index] if goal_priors is not None else (1.0, 1.0)
            alpha, count = prior[0] + arm.successes, prior[0] + prior[1] + arm.successes + arm.failures
            return alpha / count if count > 0.0 else None
    return None


@dataclass(slots=True)
class _ClusterView:
    """A cluster's view of the goal's paths for given goal states and priors, kept until an outcome: its priors
    before any per-prompt correction, each path's mean, and per fitted path (its index among the goal's paths, its
    row, the view's mean and pseudo-outcomes, the goal's evidence) what the correction works from."""

    goal_arms: Sequence[ArmState]
    goal_priors: Sequence[tuple[float, float]] | None
    priors: list[tuple[float, float]] = field(default_factory=list)
    means: dict[str, float] = field(default_factory=dict)
    corrected: list[tuple[int, int, float, float, float, float]] = field(default_factory=list)


class PromptClusters:
    """One goal's prompt clusters, each path's evidence per cluster, and the pooling between clusters.

    >>> import numpy as np
    >>> clusters = PromptClusters(max_clusters=2)
    >>> clusters.assign(np.array([1.0, 0.0])).cluster, clusters.assign(np.array([0.0, 1.0])).cluster
    (0, 1)
    >>> clusters.assign(np.array([0.9, 0.1])).cluster
    0
    """

    def __init__(self, *, max_clusters: int = MAX_CLUSTERS, ridge: float = RIDGE) -> None:
        if max_clusters < 1:
            raise UserError(f"max_clusters {max_clusters!r} must be at least 1")
        if not ridge > 0.0:
            raise UserError(f"ridge {ridge!r} must be > 0")
        self.max_clusters, self.ridge = max_clusters, ridge
        self._centroids: np.ndarray | None = None  # (max_clusters, dims), unit rows; the first ``used`` are set
        self._sizes = np.zeros(max_clusters)
        self._used = 0
        self._rows: dict[str, int] = {}  # path id -> row of the evidence arrays
        self._successes = np.zeros((0, max_clusters))
        self._failures = np.zeros((0, max_clusters))
        self._held: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # a restarted path's evidence, until restored
        self._outcomes = 0
        # Per path row: the ridge regression's inverse Gram matrix, its X'y, its coefficients, whether it has data.
        self._inverse = np.zeros((0, 0, 0))
        self._moments = np.zeros((0, 0))
        self._coefficients = np.zeros((0, 0))
        self._fitted = np.zeros(0, dtype=bool)
        # Per cluster, its view for the goal states last asked about (which it keeps alive, so ``is`` tells them
        # apart); every outcome drops them all. Only the per-prompt correction is left to each decide.
        self._views: dict[int, _ClusterView] = {}
        self.pooling = math.inf
        """Pseudo-outcomes the goal's other clusters count for at most (inf: all of them, no prompt signal)."""

    @property
    def clusters(self) -> int:
        return self._used

    def assign(self, features: np.ndarray) -> PromptHandle:
        """The handle of a prompt's feature vector: its cluster (a new one while fewer than ``max_clusters``
        exist; the cluster's centroid moves towards it) and its regression vector."""
        vector = np.asarray(features, dtype=np.float64).ravel()
        return PromptHandle(self._cluster(vector), regression_vector(vector))

    def _cluster(self, vector: np.ndarray) -> int:
        norm = math.sqrt(vector @ vector)  # what np.linalg.norm computes for a vector, without its overhead
        if not math.isfinite(norm):
            raise UserError("prompt features contain NaN or infinity: the featurizer must return finite numbers")
        unit = vector / norm if norm > 0.0 else vector
        if self._centroids is None:
            self._centroids = np.zeros((self.max_clusters, unit.size))
        elif self._centroids.shape[1] != unit.size:
            raise UserError(
                f"prompt features have {unit.size} values, earlier ones had {self._centroids.shape[1]}: "
                "a featurizer must return vectors of one length"
            )
        used = self._used
        similarity = self._centroids[:used] @ unit
        index = int(similarity.argmax()) if used else 0  # the nearest, the first on a tie
        if used < self.max_clusters and (used == 0 or float(similarity[index]) < 1.0 - 1e-9):
            self._centroids[used] = unit
            self._sizes[used] = 1.0
            self._used = used + 1
            return used
        self._sizes[index] += 1.0
        centroid = self._centroids[index] + (unit - self._centroids[index]) / self._sizes[index]
        self._centroids[index] = centroid / max(math.sqrt(centroid @ centroid), 1e-12)
        return index

    def priors(
        self, prompt: PromptHandle, goal_arms: Sequence[ArmState], goal_priors: Sequence[tuple[float, float]] | None
    ) -> Sequence[tuple[float, float]] | None:
        """Beta pseudo-counts that turn the policy's posterior of each of the goal's states (its evidence plus
        ``goal_priors``, the flat Beta(1, 1) when None) into the prompt's view: its cluster's own evidence plus
        the pooled rest, corrected by the regression. The evidence from other clusters beyond the pooled share is
        taken off the prior, which gives the policy the view without building new states. ``goal_priors``
        themselves while pooling is full.

        The cluster's pooled view is kept for the same ``goal_arms`` and ``goal_priors`` objects until the next
        ``learn``, so a decide computes only its prompt's correction; a caller that updates its list in place does
        so for an outcome, which it then passes to ``learn``."""
        pooling = self.pooling
        if pooling == math.inf:
            prompt.goal_view = (tuple(goal_arms), goal_priors)  # a snapshot: a caller may update its list
            return goal_priors
        view = self._views.get(prompt.cluster)
        if view is None or view.goal_arms is not goal_arms or view.goal_priors is not goal_priors:
            view = self._views[prompt.cluster] = self._view(prompt.cluster, goal_arms, goal_priors)
        prompt.means.update(view.means)
        priors = list(view.priors)
        if not view.corrected:
            return priors
        vector, paths = prompt.vector, len(self._rows)
        corrections = (self._coefficients[:paths] @ vector).tolist()
        dims = vector.size  # one matrix-vector product over every path's inverse (a batched one is slower)
        vector32 = vector.astype(np.float32)
        uncertainties = (self._inverse[:paths].reshape(paths * dims, dims) @ vector32).reshape(paths, dims) @ vector32
        uncertainties = uncertainties.tolist()
        low, high = _MEAN_BOUND, 1.0 - _MEAN_BOUND
        # Conditional expressions, not min/max calls: this loop runs per path on every decide.
        for index, row, mean, count, successes, failures in view.corrected:
            mean += corrections[row]
            mean = low if mean < low else high if mean > high else mean
            count = 1.0 / (1.0 / count + uncertainties[row])
            priors[index] = (mean * count - successes, (1.0 - mean) * count - failures)
        return priors

    def _view(
        self, cluster: int, goal_arms: Sequence[ArmState], goal_priors: Sequence[tuple[float, float]] | None
    ) -> _ClusterView:
        """The part of a prompt's priors that its cluster alone decides: the pooled view of every path, and what the
        per-prompt correction of each fitted path starts from."""
        rows, pooling = self._rows, self.pooling
        own_successes = self._successes[:, cluster].tolist()
        own_failures = self._failures[:, cluster].tolist()
        fitted = self._fitted[: len(rows)].tolist()
        view = _ClusterView(goal_arms, goal_priors)
        for index, arm in enumerate(goal_arms):
            prior = goal_priors[index] if goal_priors is not None else (1.0, 1.0)
            row = rows.get(arm.path_id)
            if row is None:
                view.priors.append(prior)
                continue
            successes, failures = arm.successes, arm.failures
            other_successes = max(successes - own_successes[row], 0.0)
            other_failures = max(failures - own_failures[row], 0.0)
            elsewhere = other_successes + other_failures
            unpooled = elsewhere / (pooling + elsewhere) if elsewhere > 0.0 else 0.0  # the share not pooled
            alpha, beta = prior[0] - unpooled * other_successes, prior[1] - unpooled * other_failures
            view.priors.append((alpha, beta))
            view_alpha = alpha + successes
            count = view_alpha + (beta + failures)
            if count <= 0.0:
                continue
            view.means[arm.path_id] = mean = view_alpha / count
            if fitted[row]:
                view.corrected.append((index, row, mean, count, successes, failures))
        return view

    def learn(self, prompt: PromptHandle, before: ArmState, after: ArmState, score: float) -> None:
        """Fold one outcome of ``prompt`` in: ``before``/``after`` are the goal's state of the path before and
        after the policy's update, so a restart (or restore) by the change detector reaches every cluster (and
        a restart drops the path's regression: it learns afresh)."""
        self._views.clear()
        cluster = prompt.cluster
        row = self._row(after.path_id, prompt.vector.size)
        resets, restores = RESETS, RESTORES
        if after.extra.get(resets, 0.0) > before.extra.get(resets, 0.0):
            # The goal stopped trusting the path's record: so does every cluster (its evidence is held).
            self._held[after.path_id] = (self._successes[row].copy(), self._failures[row].copy())
            self._successes[row] = 0.0
            self._failures[row] = 0.0
            self._fitted[row] = False
        else:
            if after.extra.get(restores, 0.0) > before.extra.get(restores, 0.0):
                held = self._held.pop(after.path_id, None)
                if held is not None:
                    self._successes[row] += held[0]
                    self._failures[row] += held[1]
            self._successes[row, cluster] += score
            self._failures[row, cluster] += 1.0 - score
            mean = prompt.mean_of(after.path_id)
            if mean is None:
                rate = before.success_rate
                mean = rate if rate is not None else 0.5
            self._regress(row, prompt.vector, score - mean)
        self._outcomes += 1
        if self._outcomes % _REESTIMATE_EVERY == 0:
            self.pooling = self._estimate_pooling()

    def _regress(self, row: int, vector: np.ndarray, residual: float) -> None:
        """One observation into the path's ridge regression (Sherman-Morrison update of the inverse)."""
        if not self._fitted[row]:
            self._inverse[row] = np.eye(vector.size) / self.ridge
            self._moments[row] = 0.0
            self._fitted[row] = True
        inverse = self._inverse[row].astype(np.float64)  # float32 at rest: the decide reads half the bytes
        projected = inverse @ vector
        inverse -= np.outer(projected, projected) / (1.0 + projected @ vector)
        self._inverse[row] = inverse
        self._moments[row] += residual * vector
        self._coefficients[row] = inverse @ self._moments[row]

    def _row(self, path_id: str, dims: int) -> int:
        row = self._rows.get(path_id)
        if row is None:
            row = self._rows[path_id] = len(self._rows)
            if row >= len(self._successes) or self._inverse.shape[1] != dims:
                grown = max(4, 2 * len(self._successes)) if row >= len(self._successes) else len(self._successes)
                self._successes = np.resize(self._successes, (grown, self.max_clusters))
                self._failures = np.resize(self._failures, (grown, self.max_clusters))
                self._successes[row:] = 0.0
                self._failures[row:] = 0.0
                self._inverse = _grown(self._inverse, (grown, dims, dims), row, np.float32)
                self._moments = _grown(self._moments, (grown, dims), row)
                self._coefficients = _grown(self._coefficients, (grown, dims), row)
                fitted = np.zeros(grown, dtype=bool)
                fitted[:row] = self._fitted[:row]
                self._fitted = fitted
        return row

    def _estimate_pooling(self) -> float:
        """The Beta-binomial concentration of each path's success rate across clusters, by moments (DerSimonian-
        Laird on the Pearson statistic of the paths' outcomes per cluster); inf while the spread is chance."""
        paths, used = len(self._rows), self._used
        successes, failures = self._successes[:paths, :used], self._failures[:paths, :used]
        counts = successes + failures
        path_counts = counts.sum(axis=1)
        seen = path_counts > 0.0
        successes, counts, path_counts = successes[seen], counts[seen], path_counts[seen]
        cells = counts > 0.0
        freedom = int(cells.sum()) - len(path_counts)
        if freedom <= 0:
            return math.inf
        rates = np.clip((successes.sum(axis=1) + 0.5) / (path_counts + 1.0), _RATE_BOUND, 1.0 - _RATE_BOUND)[:, None]
        expected = counts * rates
        pearson = (successes - expected) ** 2 / np.maximum(expected * (1.0 - rates), 1e-12)
        statistic = float(np.sum(np.where(cells, pearson, 0.0)))
        excess = statistic - freedom - _NOISE_SIGMAS * math.sqrt(2.0 * freedom)
        if excess <= 0.0:
            return math.inf
        spread = float(np.sum(path_counts - (counts**2).sum(axis=1) / path_counts))
        correlation = min(excess / max(spread, 1e-12), 1.0)  # the between-cluster share of an outcome's variance
        return max(1.0 / correlation - 1.0, _MIN_POOLING)


def _grown(
    array: np.ndarray, shape: tuple[int, ...], rows: int, dtype: type[np.floating[Any]] = np.float64
) -> np.ndarray:
    """``array``'s first ``rows`` rows in a zeroed array of ``shape``."""
    grown = np.zeros(shape, dtype=dtype)
    if rows:
        grown[:rows] = array[:rows]
    return grown
