"""Prompt-aware routing: a goal's prompts grouped into clusters that each route like a goal of their own.

A goal that mixes tasks (maths, code and trivia under one ``answer_question``) has a best path per kind of
prompt, not one. ``PromptClusters`` keeps, for one goal, centroids of prompt feature vectors (online k-means:
a new centroid is seeded by a prompt, each later prompt joins the nearest and moves it) and, per cluster, an
``ArmState`` per path that the default policy chooses over and updates exactly as it does a goal's: the
sample floor, probes, change detection, costs and ties all work per cluster. A cluster's priors are each
model's record everywhere else (the goal's other clusters and the other goals), as between goals.

Splitting costs exploration, so clusters come with traffic: a goal has one cluster (and routes exactly as
without prompts) until it has seen ``outcomes_per_split`` outcomes per path, and one more cluster per further
``outcomes_per_split`` per path, up to ``max_clusters``. A goal too small to learn per kind of prompt is left
as it was; a large goal that mixes tasks gets as many clusters as its traffic can teach.

State lives in the object (per goal, in memory), not in the store: after a restart a goal routes on its
per-goal record until its clusters have traffic again. Like the rest of a policy it does no locking: the engine
calls it under its own lock.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence

import numpy as np

from kalibr._exceptions import UserError
from kalibr.policies.base import ArmState
from kalibr.policies.priors import priors_from_model_totals

__all__ = ["MAX_CLUSTERS", "OUTCOMES_PER_SPLIT", "PromptClusters"]

MAX_CLUSTERS = 32
OUTCOMES_PER_SPLIT = 50
"""Outcomes per path a goal needs for each cluster beyond its first."""


class PromptClusters:
    """One goal's prompt clusters and each path's state per cluster.

    >>> import numpy as np
    >>> clusters = PromptClusters(outcomes_per_split=1)
    >>> clusters.assign(np.array([1.0, 0.0]), paths=1)
    0
    >>> clusters.count_outcome()
    >>> clusters.assign(np.array([0.0, 1.0]), paths=1), clusters.assign(np.array([0.9, 0.1]), paths=1)
    (1, 0)
    """

    def __init__(self, *, max_clusters: int = MAX_CLUSTERS, outcomes_per_split: int = OUTCOMES_PER_SPLIT) -> None:
        if max_clusters < 1 or outcomes_per_split < 1:
            raise UserError(
                f"max_clusters {max_clusters!r} and outcomes_per_split {outcomes_per_split!r} must be at least 1"
            )
        self.max_clusters, self.outcomes_per_split = max_clusters, outcomes_per_split
        self._centroids: np.ndarray | None = None  # (max_clusters, dims), unit rows; the first ``used`` are set
        self._sizes = np.zeros(max_clusters)
        self._used = 0
        self._outcomes = 0
        self._arms: list[dict[str, ArmState]] = []
        self._priors: dict[
            int, tuple[Mapping[str, tuple[float, float]], list[ArmState], list[tuple[float, float]]]
        ] = {}

    @property
    def clusters(self) -> int:
        return self._used

    def assign(self, features: np.ndarray, *, paths: int) -> int:
        """The cluster of a prompt's feature vector (a new one when the goal's traffic allows another); the
        cluster's centroid moves towards it. ``paths``: how many paths the goal routes over."""
        vector = np.asarray(features, dtype=np.float64).ravel()
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
        allowed = min(self.max_clusters, 1 + self._outcomes // (self.outcomes_per_split * max(paths, 1)))
        similarity = self._centroids[:used] @ unit
        if used < allowed and (used == 0 or float(similarity.max()) < 1.0 - 1e-9):
            self._centroids[used] = unit
            self._sizes[used] = 1.0
            self._used = used + 1
            self._arms.append({})
            return used
        index = int(np.argmax(similarity))
        self._sizes[index] += 1.0
        centroid = self._centroids[index] + (unit - self._centroids[index]) / self._sizes[index]
        self._centroids[index] = centroid / max(math.sqrt(centroid @ centroid), 1e-12)
        return index

    def arms(self, cluster: int, goal_arms: Sequence[ArmState]) -> list[ArmState]:
        """The cluster's state of each of the goal's paths (fresh for a path it has not seen). The first cluster
        starts from the goal's own states, so a goal that never splits routes exactly as without prompts."""
        states = self._arms[cluster]
        if cluster == 0 and not states:
            states.update({arm.path_id: arm for arm in goal_arms})
        # Fresh states are kept, so an unchanged cluster passes the same objects and its priors stay cached.
        return [states.get(arm.path_id) or states.setdefault(arm.path_id, ArmState(arm.path_id, model=arm.model))
                for arm in goal_arms]  # fmt: skip

    def store(self, cluster: int, arm: ArmState) -> None:
        """Keep the cluster's updated state of one path."""
        self._arms[cluster][arm.path_id] = arm

    def count_outcome(self) -> None:
        """One more outcome for the goal: what lets it grow clusters."""
        self._outcomes += 1

    def priors(
        self, cluster: int, arms: Sequence[ArmState], totals: Mapping[str, tuple[float, float]]
    ) -> list[tuple[float, float]]:
        """Beta pseudo-counts for the cluster's ``arms``: each model's record everywhere else. ``totals`` are the
        per-model totals over every goal (``Store.model_totals``); the cluster's own outcomes are taken out, and
        the goal's other clusters' outcomes, which the goal-level totals already hold, stay in. Recomputed only
        when one of the cluster's states or the totals changed (states are immutable: identity is enough)."""
        cached = self._priors.get(cluster)
        if (
            cached is not None
            and cached[0] is totals
            and len(cached[1]) == len(arms)
            and all(map(operator.is_, cached[1], arms))
        ):
            return cached[2]
        priors = priors_from_model_totals(arms, totals)
        self._priors[cluster] = (totals, list(arms), priors)
        return priors
