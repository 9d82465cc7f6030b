"""An outage as an operator lives it, end to end, in real processes (used by a test, and by the benchmark at size).

Several apps on one host, each with its own API key and tenant but the host's one default spool, decide and report
through a fault-injecting proxy in front of ``kalibr serve``. A third of the way in the service is killed; the apps
keep going (fallbacks, spooled outcomes); then it restarts on a fresh store (only the keys restored). The proxy
meanwhile refuses some batches as a whole (413, 422, 404), fails some (503), and refuses for good (422) any request
holding one of a few "poison" outcomes. Afterwards every outcome must be in exactly one store, under its own
tenant, counted once, or dead-lettered in its app's spool with the service's reason.

Usage::

    result = run_outage_replay(tmp_dir, apps=3, outcomes=1000)
    assert result.lost == result.doubled == result.crossed == 0
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path as FilePath

from kalibr._domain import Path

GOAL = "triage_ticket"
MODELS = ("gpt-4o-mini", "claude-haiku-4-5")
SINCE_EPOCH = "2000-01-01T00:00:00+00:00"


def is_poison(trace_id: str) -> bool:
    """About 1 outcome in 85: the proxy refuses any request holding one, for good."""
    return int(trace_id[-2:], 16) < 3


@dataclass(frozen=True)
class ReplayResult:
    reported: int
    delivered: int
    dead_lettered: int
    lost: int
    doubled: int
    """Counted more than once in one store: as rows (under two tenants), as a row and a dead letter, or by the arms
    (an outcome learned from twice)."""
    crossed: int
    resent_across_restart: int
    """In the store the service lost and in the fresh one: a batch the old store committed while the service was
    killed before it answered, resent (delivery is at least once). Counted apart: the old store is gone."""
    dead_without_reason: int
    injected: dict[int, int]
    seconds_to_drain: float


_BATCH_FAULTS = (413, 422, 404, 503)


class _Faults:
    """Which requests the proxy answers itself; seeded, thread-safe."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._batches = 0

    def __call__(self, path: str, body: bytes) -> int | None:
        if not path.startswith("/api/v1/intelligence/report-outcome"):
            return None
        payload = json.loads(body or b"{}")
        traces = [item["trace_id"] for item in payload.get("outcomes", [payload])]
        if any(is_poison(trace) for trace in traces):
            return 422
        with self._lock:
            draw = self._random.random()
            batches, self._batches = self._batches, self._batches + path.endswith("/report-outcomes")
        if path.endswith("/report-outcomes"):
            if batches < len(_BATCH_FAULTS):  # each fault at least once, however few batches the timing makes
                return _BATCH_FAULTS[batches]
            return next(
                (status for status, upto in ((413, 0.1), (422, 0.2), (404, 0.3), (503, 0.4)) if draw < upto), None
            )
        return 503 if draw < 0.05 else None


def run_outage_replay(work: FilePath, *, apps: int = 3, outcomes: int = 1000, seed: int = 0) -> ReplayResult:
    from tests.fault_proxy import FaultProxy

    from kalibr.service import hash_api_key
    from kalibr.service._server import ServiceProcess
    from kalibr.stores.sqlite import SQLiteStore

    keys = {f"tenant{i}": f"kal_outage_key_{i}_{seed}" for i in range(apps)}
    stores = [work / "before.db", work / "after.db"]
    for db in stores:  # the operator restores the keys on the fresh store, nothing else
        store = SQLiteStore(str(db))
        for tenant, key in keys.items():
            store.add_api_key(tenant, hash_api_key(key))
        store.close()
    spool = work / "spool.db"  # the host's one default spool
    service = ServiceProcess(["--store", f"sqlite:///{stores[0]}"], log_path=str(work / "serve.log"))
    service.start()
    port = service.port
    with FaultProxy(service.url, _Faults(seed)) as proxy:
        clients = [
            subprocess.Popen(
                [sys.executable, __file__, proxy.url, key, str(spool), str(outcomes)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for key in keys.values()
        ]
        _each_says(clients, "third")  # a third reported through a live service
        service.kill()
        _tell(clients, "go")
        _each_says(clients, "reported")  # the rest reported during the outage
        service = ServiceProcess(["--store", f"sqlite:///{stores[1]}"], port=port, log_path=str(work / "serve.log"))
        service.start()
        started = time.monotonic()
        _tell(clients, "deliver")
        answers = [json.loads(_line(client)) for client in clients]
        drained = time.monotonic() - started
        for client in clients:
            client.wait(timeout=60)
            for pipe in (client.stdin, client.stdout):
                if pipe is not None:
                    pipe.close()
    service.kill()
    return _account(keys, answers, stores, proxy.injected, drained)


def _account(
    keys: dict[str, str],
    answers: list[dict[str, object]],
    stores: list[FilePath],
    injected: dict[int, int],
    drained: float,
) -> ReplayResult:
    from datetime import datetime

    from kalibr.stores.sqlite import SQLiteStore

    since = datetime.fromisoformat(SINCE_EPOCH)
    found: dict[str, list[str]] = {}  # trace id -> tenants it was counted for, once per store holding it
    in_both: set[str] = set()
    seen_before: set[str] = set()
    learned_twice = 0  # outcomes a store's arms counted beyond its rows (a resent outcome stepping an arm again)
    for number, db in enumerate(stores):
        store = SQLiteStore(str(db))
        for tenant in keys:
            stored = store.outcomes(tenant, GOAL, since)
            learned = sum(arm.total_samples for arm in store.load_arms(tenant, GOAL, _paths()))
            learned_twice += max(0, learned - len(stored))
            for outcome in stored:
                if number == 0:
                    seen_before.add(outcome.trace_id)
                elif outcome.trace_id in seen_before:
                    in_both.add(outcome.trace_id)
                    continue
                found.setdefault(outcome.trace_id, []).append(tenant)
        store.close()
    reported = lost = doubled = crossed = dead_count = no_reason = 0
    for tenant, answer in zip(keys, answers, strict=True):
        dead = dict(answer["dead"])  # type: ignore[attr-defined]
        dead_count += len(dead)
        no_reason += sum(1 for reason in dead.values() if not reason)
        for trace in answer["reported"]:  # type: ignore[attr-defined]
            reported += 1
            counted = found.get(trace, [])
            if not counted and trace not in dead:
                lost += 1
            doubled += max(0, len(counted) - 1) + (1 if counted and trace in dead else 0)
            crossed += sum(1 for owner in counted if owner != tenant)
    delivered = sum(len(tenants) for tenants in found.values())
    return ReplayResult(
        reported,
        delivered,
        dead_count,
        lost,
        doubled + learned_twice,
        crossed,
        len(in_both),
        no_reason,
        dict(injected),
        drained,
    )


def _paths() -> list[Path]:
    return [Path(MODELS[0]), Path(MODELS[1], params={"temperature": 0.2})]


def _line(client: subprocess.Popen[str]) -> str:
    assert client.stdout is not None
    line = client.stdout.readline()
    if not line:
        raise RuntimeError(f"an app of the outage replay exited early (code {client.wait()})")
    return line.strip()


def _each_says(clients: list[subprocess.Popen[str]], word: str) -> None:
    for client in clients:
        said = _line(client)
        assert said == word, f"expected {word!r}, the app said {said!r}"


def _tell(clients: list[subprocess.Popen[str]], word: str) -> None:
    for client in clients:
        assert client.stdin is not None
        client.stdin.write(word + "\n")
        client.stdin.flush()


def _app(url: str, api_key: str, spool: str, outcomes: int) -> None:
    """One app: decide and report ``outcomes`` times, pausing where the orchestrator kills and restarts the service."""
    from kalibr._domain import Outcome
    from kalibr.intelligence._spool import OutcomeSpool
    from kalibr.intelligence.remote import RemoteIntelligence, Resilience

    remote = RemoteIntelligence(url, api_key=api_key, spool=spool, resilience=Resilience(timeout=1.0, cooldown=0.2))
    paths = _paths()
    reported = []
    for i in range(outcomes):
        if i == outcomes // 3:
            print("third", flush=True)
            sys.stdin.readline()
        decision = remote.decide(GOAL, paths)
        remote.report(Outcome.build(decision, success=i % 3 != 0))
        reported.append(decision.trace_id)
    print("reported", flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + 300
    while remote.pending_outcomes() and time.monotonic() < deadline:
        remote.flush()
        threading.Event().wait(0.05)  # the app's own retry pace (the breaker's cool-down is 0.2 s)
    pending = remote.pending_outcomes()
    remote.close()
    spooled = OutcomeSpool(spool)
    dead = [(letter.trace_id, letter.reason) for letter in spooled.dead_letters(remote.endpoint, limit=outcomes)]
    spooled.close()
    print(json.dumps({"reported": reported, "dead": dead, "pending": pending}), flush=True)


if __name__ == "__main__":
    _app(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
