"""The official `kalibr` SDK (PyPI 1.14.4), unmodified, in its own virtual environment, against `kalibr serve`.

Its Router decides through the service, completes on the sandbox (OPENAI_BASE_URL), reports, updates an outcome
and reads policy and insights. The venv is built once with uv and cached under pytest's cache folder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Any

import pytest

from kalibr.sandbox import SandboxServer
from kalibr.service import hash_api_key, new_api_key
from kalibr.service._server import ServiceProcess
from kalibr.stores.sqlite import SQLiteStore

pytestmark = pytest.mark.slow

SDK_REQUIREMENTS = ("kalibr==1.14.4", "openai")
GOAL = "sdk_compat"
TENANT = "sdk-team"

SDK_SCRIPT = """
import json, logging
logging.disable(logging.WARNING)
import kalibr.intelligence as ki
from kalibr import Router

router = Router(goal=GOAL, paths=["sandbox-mini", "sandbox-base"])
completions = []
for _ in range(6):
    ki._decide_cache.clear()  # else the SDK serves decide from its own 30-second cache
    response = router.completion(messages=[{"role": "user", "content": "What is 6 * 7?"}])
    decision = router._last_decision or {}
    completions.append({
        "trace_id": router._last_trace_id,
        "model": router._last_model_id,
        "fallback": bool(decision.get("fallback")),
        "content": response.choices[0].message.content,
    })
manual = router.start_trace(model_id="sandbox-base")  # a trace id the service never issued
router.report(success=False, reason="wrong total", failure_category="validation_failed", trace_id=manual.id)
update = ki.update_outcome(trace_id=completions[0]["trace_id"], goal=GOAL, success=False,
                           failure_category="user_unsatisfied")
policy = ki.get_policy(goal=GOAL)
insights = ki.get_insights(goal=GOAL)
print(json.dumps({"completions": completions, "manual": manual.id, "update": update,
                  "policy": policy, "insights": insights}))
"""


def _sdk_python(cache_dir: FilePath) -> FilePath:
    """The cached venv's python with the official SDK installed; skips if the package index is unreachable."""
    venv = cache_dir / "venv"
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import kalibr.intelligence, openai"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH: it builds the official SDK's virtual environment")
    subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, str(venv)], check=True)
    install = subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(python), *SDK_REQUIREMENTS],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if install.returncode != 0:
        pytest.skip(
            f"could not install {' '.join(SDK_REQUIREMENTS)} (package index unreachable?): {install.stderr[-500:]}"
        )
    return python


def _sdk_environment(home: FilePath, service_url: str, api_key: str, sandbox: SandboxServer) -> dict[str, str]:
    dead = "http://127.0.0.1:9"  # the SDK's telemetry endpoints: nothing must leave this machine
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "KALIBR_AUTO_INSTRUMENT": "false",
        "KALIBR_TRACE_ENABLED": "false",
        "KALIBR_COLLECTOR_URL": dead,
        "KALIBR_BACKEND_URL": dead,
        "KALIBR_API_KEY": api_key,
        "KALIBR_TENANT_ID": TENANT,
        "KALIBR_INTELLIGENCE_URL": service_url,
        "OPENAI_BASE_URL": sandbox.openai_base_url,
        "OPENAI_API_KEY": "sandbox",
        "OTEL_SDK_DISABLED": "true",
    }


def test_official_sdk_runs_unmodified_against_kalibr_serve(
    request: pytest.FixtureRequest, tmp_path: FilePath, sandbox: SandboxServer
) -> None:
    # The SDK's virtual environment is cached across runs in pytest's cache (a temporary folder without one).
    cache = getattr(request.config, "cache", None)
    python = _sdk_python(cache.mkdir("kalibr-sdk-1.14.4") if cache is not None else tmp_path / "kalibr-sdk-1.14.4")
    db = tmp_path / "service.db"
    store = SQLiteStore(str(db))
    api_key = new_api_key()
    store.add_api_key(TENANT, hash_api_key(api_key))
    store.close()
    home = tmp_path / "home"
    home.mkdir()
    script = tmp_path / "sdk_script.py"
    script.write_text(f"GOAL = {GOAL!r}\n{SDK_SCRIPT}")

    with ServiceProcess(["--store", f"sqlite:///{db}"], log_path=str(tmp_path / "serve.log")) as service:
        run = subprocess.run(
            [str(python), str(script)],
            capture_output=True,
            text=True,
            timeout=300,
            env=_sdk_environment(home, service.url, api_key, sandbox),
            cwd=tmp_path,
        )
    assert run.returncode == 0, f"the SDK script failed:\n{run.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])

    completions = result["completions"]
    assert [c["fallback"] for c in completions] == [False] * 6  # every decision came from the service
    assert {c["model"] for c in completions} <= {"sandbox-mini", "sandbox-base"}
    assert all(c["content"] == "42" for c in completions)
    assert result["update"]["status"] == "updated"
    assert set(result["update"]["fields_updated"]) >= {"success", "failure_category"}
    assert result["policy"]["goal"] == GOAL
    assert result["policy"]["outcome_sample_count"] == 7
    assert result["insights"]["tenant_id"] == TENANT
    assert [g["goal"] for g in result["insights"]["goals"]] == [GOAL]

    store = SQLiteStore(str(db))
    try:
        outcomes = {o.trace_id: o for o in store.outcomes(TENANT, GOAL, datetime(2000, 1, 1, tzinfo=UTC))}
    finally:
        store.close()
    assert set(outcomes) == {c["trace_id"] for c in completions} | {result["manual"]}
    first = outcomes[completions[0]["trace_id"]]
    assert (first.score, first.failure_category) == (0.0, "user_unsatisfied")  # the update applied
    manual = outcomes[result["manual"]]
    assert (manual.model, manual.score, manual.failure_category) == ("sandbox-base", 0.0, "validation_failed")
