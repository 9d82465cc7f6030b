"""The dashboard and ``get_insights`` say the same about a goal: its status, success rate and trend come from one
definition, over a store filled by routing to the sandbox through a break."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path as FilePath

import httpx

from kalibr import Router
from kalibr.dashboard import create_dashboard, token_for_tenant
from kalibr.sandbox import builtin_scenario, serve
from kalibr.sandbox.tasks import TaskGenerator
from kalibr.service._server import serve_in_thread
from kalibr.stores.sqlite import SQLiteStore

GOAL = "extract_company"
TOKEN = "local-dashboard-token"


def shown(html: str, selector: str) -> str:
    """The text of the element with this ``data-field`` or ``id``, tags stripped."""
    found = re.search(rf'(?:data-field|id)="{selector}"[^>]*>(.*?)</(?:td|b|span)>', html, re.S)
    assert found is not None, selector
    return re.sub(r"<[^>]+>", "", found.group(1)).strip()


def trend_text(trend: dict[str, object]) -> str:
    change = trend["change"]
    return str(trend["direction"]) + ("" if change is None else f" ({float(change) * 100:+.1f} pts)")  # type: ignore[arg-type]


def test_the_goal_pages_and_get_insights_agree_after_a_break(tmp_path: FilePath) -> None:
    store = SQLiteStore(tmp_path / "kalibr.db")
    scenario = builtin_scenario("demo")  # atlas-large breaks from the goal's 300th request on
    with serve(scenario, seed=0) as sandbox:
        paths = [{"model": name, "base_url": sandbox.openai_base_url, "api_key": "sandbox"} for name in scenario.models]
        tasks = TaskGenerator("extraction", seed=0)
        task = tasks.next()
        router = Router(GOAL, paths, success_when=lambda text: task.check(text), store=store)
        for _ in range(400):
            router.completion(task.messages)
            task = tasks.next()
        router.intelligence.flush()
    insights = router.get_insights(window_hours=24)["goals"][0]
    records = store.outcomes("default", GOAL, datetime(1970, 1, 1, tzinfo=UTC))
    app = create_dashboard(store, tenant_for_key=token_for_tenant(TOKEN, "default"))
    with serve_in_thread(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": TOKEN}) as client:
        goals = client.get("/?window=24h").text
        goal = client.get(f"/goals/{GOAL}?window=24h").text
    exact = sum(r.score for r in records) / len(records)
    assert insights["status"] != "insufficient_data"
    assert insights["sample_count"] == len(records)
    assert abs(insights["success_rate"] - exact) < 1e-4
    row = goals[goals.index(f'data-goal="{GOAL}"') :]
    assert shown(row, "status") == insights["status"].replace("_", " ")
    assert shown(row, "success") == f"{exact * 100:.1f}%"
    assert shown(row, "trend") == trend_text(insights["trend"])
    assert shown(goal, "goal-status") == insights["status"].replace("_", " ")
    assert shown(goal, "goal-success") == f"{exact * 100:.1f}%"
    assert shown(goal, "goal-trend") == trend_text(insights["trend"]).replace("(", "").replace(")", "")
    for signal in insights["actionable_signals"]:
        if signal["type"] != "goal_healthy":
            assert signal["message"] in goal.replace("&#39;", "'")
    recommended = router.get_policy(window_hours=24).recommended_model
    assert recommended is not None and f"<b>{recommended}</b>" in goal
    store.close()
