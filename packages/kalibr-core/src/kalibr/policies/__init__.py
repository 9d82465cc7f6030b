"""Routing policies: pure functions of arm state and a random generator. No I/O, no clock."""

from kalibr.policies.base import ArmState, Choice, Policy, PolicyConfig

__all__ = ["ArmState", "Choice", "Policy", "PolicyConfig"]
