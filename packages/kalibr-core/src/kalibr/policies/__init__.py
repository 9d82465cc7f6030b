"""Routing policies: pure functions of arm state and a random generator. No I/O, no clock."""

from kalibr.policies.base import ArmState, Choice, Policy, PolicyConfig
from kalibr.policies.drift import DropDetector
from kalibr.policies.priors import priors_from_model_totals
from kalibr.policies.thompson import ThompsonPolicy

__all__ = [
    "ArmState",
    "Choice",
    "DropDetector",
    "Policy",
    "PolicyConfig",
    "ThompsonPolicy",
    "default_policy",
    "priors_from_model_totals",
]


def default_policy() -> Policy:
    """The policy the engine uses unless told otherwise: Thompson sampling with change detection."""
    return ThompsonPolicy()
