"""Two `kalibr serve` replicas on one PostgreSQL: an outcome reported to one changes decisions on the other
within a second. Needs KALIBR_TEST_POSTGRES_URL (CI points it at the machine's server)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path as FilePath

import httpx
import pytest

from kalibr.service import hash_api_key, new_api_key
from kalibr.service._server import ServiceProcess

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

GOAL = "route_claim"
GOOD, BAD = "model-good", "model-bad"


def test_outcomes_reported_to_one_replica_steer_the_other_within_a_second(
    postgres_url: str, tmp_path: FilePath
) -> None:
    from kalibr.stores.postgres import PostgresStore

    tenant = f"replicas_{uuid.uuid4().hex[:12]}"  # a fresh tenant: nothing else in the database is visible
    key = new_api_key()
    store = PostgresStore(postgres_url)
    store.add_api_key(tenant, hash_api_key(key))
    store.close()
    headers = {"X-API-Key": key, "X-Tenant-ID": tenant}
    args = ["--store", postgres_url, "--refresh-interval", "0.2"]
    with (
        ServiceProcess(args, log_path=str(tmp_path / "a.log")) as replica_a,
        ServiceProcess(args, log_path=str(tmp_path / "b.log")) as replica_b,
        httpx.Client(headers=headers, timeout=10) as client,
    ):
        for model in (GOOD, BAD):
            client.post(f"{replica_a.url}/api/v1/routing/paths", json={"goal": GOAL, "model_id": model})
        config = {"goal": GOAL, "exploration_rate": 0.0, "min_samples_before_exploit": 5}
        client.post(f"{replica_a.url}/api/v1/routing/config", json=config).raise_for_status()

        def decide_on_b() -> dict[str, object]:
            response = client.post(f"{replica_b.url}/api/v1/routing/decide", json={"goal": GOAL})
            response.raise_for_status()
            return dict(response.json())

        before = [decide_on_b() for _ in range(5)]  # B has loaded (and cached) the empty arms
        assert all(d["sample_count"] == 0 for d in before)

        for _ in range(30):
            for model, success in ((GOOD, True), (BAD, False)):
                outcome = {"trace_id": uuid.uuid4().hex, "goal": GOAL, "success": success, "model_id": model}
                client.post(f"{replica_a.url}/api/v1/intelligence/report-outcome", json=outcome).raise_for_status()
        reported_at = time.monotonic()

        while True:
            decision = decide_on_b()
            if decision["model_id"] == GOOD and decision["sample_count"] == 30:
                break
            # 25 refresh intervals: a deadline for "never", not a timing measurement
            assert time.monotonic() - reported_at < 5.0, f"replica B never saw the outcomes: {decision}"

        assert {str(decide_on_b()["model_id"]) for _ in range(20)} == {GOOD}
