"""A memory store whose outcome writes can be made to fail or wait, for tests of what happens around a commit."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kalibr import Decision, Outcome
from kalibr.policies.base import ArmState
from kalibr.stores import MemoryStore


class HookedStore(MemoryStore):
    """A memory store that calls ``before_write()`` before applying each batch of outcomes: to fail or hold it."""

    def __init__(self, before_write: Callable[[], None]) -> None:
        super().__init__()
        self.before_write = before_write

    def apply_outcomes(
        self,
        tenant: str,
        items: Sequence[tuple[Outcome, Callable[[ArmState], ArmState]]],
        decisions: Sequence[Decision] = (),
    ) -> list[bool]:
        self.before_write()
        return super().apply_outcomes(tenant, items, decisions)
