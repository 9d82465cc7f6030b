"""The dashboard in a real headless Chromium (Debian's, driven by Playwright), against a store filled by agents
routing through `kalibr serve` to the sandbox: two tenants, each with its own API key.

Without a `chromium` on PATH these tests skip locally; CI sets KALIBR_REQUIRE_BROWSER=1, so there they fail instead.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path as FilePath
from typing import Any

import pytest

from kalibr import Router
from kalibr.intelligence.remote import RemoteIntelligence
from kalibr.sandbox import builtin_scenario, serve
from kalibr.sandbox.tasks import TaskGenerator
from kalibr.service import create_app, hash_api_key, new_api_key
from kalibr.service._server import serve_in_thread
from kalibr.stores.base import OutcomeRecord
from kalibr.stores.sqlite import SQLiteStore

playwright_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium")
if CHROMIUM is None:
    if os.environ.get("KALIBR_REQUIRE_BROWSER"):
        raise RuntimeError("KALIBR_REQUIRE_BROWSER is set but there is no chromium: apt-get install -y chromium")
    pytest.skip(
        "the dashboard's browser tests need Debian's chromium: apt-get install -y chromium", allow_module_level=True
    )

pytestmark = pytest.mark.slow

GOAL = "extract_company"
OTHER_GOAL = "globex_private_goal"
SECRET = "Quokka-91d2-never-stored"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class Deployment:
    """A service over one SQLite store, the sandbox, and one agent per tenant."""

    url: str
    store: SQLiteStore
    keys: dict[str, str]
    agents: dict[str, tuple[Router, RemoteIntelligence]]
    tasks: TaskGenerator
    answers: list[str] = field(default_factory=list)

    @property
    def dashboard(self) -> str:
        return self.url + "/dashboard"

    def route(self, tenant: str, calls: int) -> None:
        """``calls`` completions for the tenant's goal, judged by the sandbox task's own check; failures are
        reported with a category, as an agent's validator would."""
        router, remote = self.agents[tenant]
        for _ in range(calls):
            task = self.tasks.next()
            completion = router.completion([{"role": "system", "content": f"Note {SECRET}"}, *task.messages])
            self.answers.append(completion.text)
            if not task.check(completion.text):
                router.report(success=False, failure_category="hallucination_detected", trace_id=completion.trace_id)
        remote.flush()

    def outcomes(self, tenant: str = "acme", goal: str = GOAL) -> list[OutcomeRecord]:
        return self.store.outcomes(tenant, goal, EPOCH)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    folder = tmp_path_factory.mktemp("dashboard")
    store = SQLiteStore(folder / "kalibr.db")
    keys = {tenant: new_api_key() for tenant in ("acme", "globex")}
    for tenant, key in keys.items():
        store.add_api_key(tenant, hash_api_key(key))
    with (
        pytest.MonkeyPatch.context() as env,
        serve(builtin_scenario("demo"), seed=0) as sandbox,
        serve_in_thread(create_app(store, refresh_interval=0.05)) as url,
    ):
        env.setenv("KALIBR_INTELLIGENCE_TIMEOUT", "5")  # a loaded CI machine must not turn decides into fallbacks
        paths: list[dict[str, Any]] = [
            {"model": name, "base_url": sandbox.openai_base_url, "price": spec.price.model_dump()}
            for name, spec in builtin_scenario("demo").models.items()
        ]
        agents = {}
        for tenant, goal in (("acme", GOAL), ("globex", OTHER_GOAL)):
            remote = RemoteIntelligence(url, api_key=keys[tenant], spool=folder / f"spool-{tenant}.db")
            agents[tenant] = (Router(goal, paths, success_when=lambda text: bool(text), intelligence=remote), remote)
        deployment = Deployment(url, store, keys, agents, TaskGenerator(kind="extraction", seed=0))
        deployment.route("acme", 360)  # the sandbox's atlas-large breaks at its 300th request
        deployment.route("globex", 30)
        yield deployment
        for _, remote in agents.values():
            remote.close()
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    yield context.new_page()
    context.close()


def log_in(page: Any, deployment: Deployment, tenant: str = "acme") -> None:
    page.goto(deployment.dashboard + "/")
    assert page.url.endswith("/dashboard/login")  # no key yet: the login form
    page.fill("input[name=key]", deployment.keys[tenant])
    page.click("button[type=submit]")
    page.wait_for_selector("table#goals")


def percent(value: float) -> str:
    return f"{value * 100:.1f}%"


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(fraction * len(ordered)) - 1]


def test_a_wrong_key_is_refused_and_a_right_one_shows_only_its_tenants_goals(page: Any, deployment: Deployment) -> None:
    page.goto(deployment.dashboard + "/login")
    page.fill("input[name=key]", "kal_not-a-key")
    page.click("button[type=submit]")
    assert "that key is not valid" in page.inner_text("[role=alert]")

    log_in(page, deployment, "acme")
    goals = page.locator("table#goals tbody tr")
    assert [goals.nth(i).get_attribute("data-goal") for i in range(goals.count())] == [GOAL]
    row = page.locator(f"tr[data-goal='{GOAL}']")
    outcomes = deployment.outcomes()
    assert row.locator("[data-field=outcomes]").inner_text() == str(len(outcomes))
    assert row.locator("[data-field=success]").inner_text() == percent(sum(o.score for o in outcomes) / len(outcomes))
    assert OTHER_GOAL not in page.content()


def test_the_goal_page_shows_what_the_store_holds_per_path(page: Any, deployment: Deployment) -> None:
    log_in(page, deployment)
    page.click(f"a:text-is('{GOAL}')")
    page.wait_for_selector("#charts[data-drawn='3']")  # both charts drawn, one line per path
    assert page.locator("#share-chart canvas").count() == 1
    outcomes = deployment.outcomes()
    assert page.inner_text("#goal-outcomes") == str(len(outcomes))
    for record in deployment.store.list_paths("acme", GOAL):
        mine = [o for o in outcomes if o.path_id == record.path.path_id]
        row = page.locator(f"#paths tr[data-path-id='{record.path.path_id}']")
        assert row.locator("[data-field=samples]").inner_text() == str(len(mine))
        assert row.locator("[data-field=traffic]").inner_text() == percent(len(mine) / len(outcomes))
        if mine:
            shown = row.locator("[data-field=success]").inner_text()
            assert shown.startswith(percent(sum(o.score for o in mine) / len(mine)))
            latencies = [o.latency_ms for o in mine if o.latency_ms is not None]
            for field, fraction in (("p50", 0.5), ("p95", 0.95)):  # from latency bins a tenth of a decade wide
                shown_ms = float(row.locator(f"[data-field={field}]").inner_text().removesuffix(" ms"))
                exact = nearest_rank(latencies, fraction)
                assert abs(shown_ms - exact) <= 0.05 * exact + 0.5, (field, shown_ms, exact)
    # The drift the sandbox injected is visible: atlas-large was put on probation and the router moved on.
    atlas = next(r for r in deployment.store.list_paths("acme", GOAL) if r.path.model == "atlas-large")
    assert "drift" in page.locator(f"#paths tr[data-path-id='{atlas.path.path_id}'] [data-field=state]").inner_text()
    assert "atlas-large" not in page.inner_text("#recommendation b")
    marks = page.request.get(f"{deployment.dashboard}/goals/{GOAL}/series.json").json()["marks"]
    assert [m["label"] for m in marks if m["kind"] == "drift_detected"] == ["drift detected atlas-large"]
    failures = sum(1 for o in outcomes if o.failure_category == "hallucination_detected")
    assert failures > 0
    first = page.locator("#failures tbody tr").first.locator("td")
    assert [first.nth(0).inner_text(), first.nth(1).inner_text()] == ["hallucination_detected", str(failures)]


def test_decisions_filter_by_path_and_link_to_one_trace(page: Any, deployment: Deployment) -> None:
    log_in(page, deployment)
    page.goto(deployment.dashboard + "/decisions")
    nova = next(r for r in deployment.store.list_paths("acme", GOAL) if r.path.model == "nova-medium")
    page.select_option("select[name=goal]", GOAL)
    page.click("button:text-is('Filter')")
    page.select_option("select[name=path_id]", nova.path.path_id)
    page.click("button:text-is('Filter')")
    rows = page.locator("#decisions tbody tr")
    assert rows.count() > 0
    assert {rows.nth(i).locator("td").nth(2).inner_text() for i in range(rows.count())} == {"nova-medium"}
    trace_id = rows.first.get_attribute("data-trace-id")
    rows.first.locator("a").click()
    page.wait_for_selector("dl.trace")
    assert trace_id in page.inner_text("h1")
    stored = next(o for o in deployment.outcomes() if o.trace_id == trace_id)
    assert f"score {stored.score:.2f}" in page.inner_text("dl.trace")


def test_disabling_a_path_stops_its_traffic_and_is_logged(page: Any, deployment: Deployment) -> None:
    log_in(page, deployment)
    page.goto(f"{deployment.dashboard}/goals/{GOAL}")
    nova = next(r for r in deployment.store.list_paths("acme", GOAL) if r.path.model == "nova-medium")
    row = page.locator(f"#paths tr[data-path-id='{nova.path.path_id}']")
    with page.expect_navigation():  # the action answers HX-Refresh: the page reloads with the new state
        row.locator("button.toggle").click()
    assert "disabled" in page.locator(f"#paths tr[data-path-id='{nova.path.path_id}'] [data-field=state]").inner_text()
    assert [
        r.path.model for r in deployment.store.list_paths("acme", GOAL, include_disabled=True) if not r.enabled
    ] == ["nova-medium"]
    assert "path disabled nova-medium" in page.inner_text("#events")
    # Path ids are hashes of the model, so globex has one with the same id: it stays enabled.
    assert all(r.enabled for r in deployment.store.list_paths("globex", OTHER_GOAL, include_disabled=True))

    before = {o.trace_id for o in deployment.outcomes()}
    deployment.route("acme", 20)
    routed = [o for o in deployment.outcomes() if o.trace_id not in before]
    assert len(routed) == 20 and "nova-medium" not in {o.model for o in routed}

    with page.expect_navigation():
        page.locator(f"#paths tr[data-path-id='{nova.path.path_id}'] button.toggle").click()
    assert all(r.enabled for r in deployment.store.list_paths("acme", GOAL, include_disabled=True))
    assert "path enabled nova-medium" in page.inner_text("#events")


def test_setting_the_exploration_config(page: Any, deployment: Deployment) -> None:
    log_in(page, deployment)
    page.goto(f"{deployment.dashboard}/goals/{GOAL}")
    page.fill("input[name=exploration_rate]", "0.05")
    page.fill("input[name=min_samples_before_exploit]", "12")
    with page.expect_navigation():
        page.click("button:text-is('Save config')")
    config = deployment.store.get_config("acme", GOAL)
    assert (config.exploration_rate, config.min_samples_before_exploit) == (0.05, 12)
    assert "exploration_rate 0.1 → 0.05" in page.inner_text("#events")
    marks = page.request.get(f"{deployment.dashboard}/goals/{GOAL}/series.json").json()["marks"]
    assert "config_changed" in [m["kind"] for m in marks]
    assert page.input_value("input[name=exploration_rate]") == "0.05"
    assert deployment.store.get_config("globex", OTHER_GOAL).exploration_rate == 0.1


def test_one_tenants_key_can_neither_see_nor_change_another_tenants_goal(page: Any, deployment: Deployment) -> None:
    log_in(page, deployment, "acme")
    response = page.goto(f"{deployment.dashboard}/goals/{OTHER_GOAL}")
    assert response.status == 404 and OTHER_GOAL not in [a.inner_text() for a in page.locator("a").all()]
    other_path = deployment.store.list_paths("globex", OTHER_GOAL)[0].path.path_id
    headers = {"HX-Request": "true"}
    for url, form in (
        (f"{deployment.dashboard}/goals/{OTHER_GOAL}/paths/{other_path}/enabled", {"enabled": "0"}),
        (f"{deployment.dashboard}/goals/{OTHER_GOAL}/config", {"exploration_rate": "1"}),
    ):
        assert page.request.post(url, form=form, headers=headers).status == 404
    assert all(r.enabled for r in deployment.store.list_paths("globex", OTHER_GOAL, include_disabled=True))
    assert deployment.store.events("globex", None, EPOCH) == []
    page.goto(f"{deployment.dashboard}/decisions?goal={OTHER_GOAL}")
    assert page.locator("#decisions tbody tr").count() == 0
    page.goto(f"{deployment.dashboard}/decisions")
    assert OTHER_GOAL not in page.inner_text("#decisions")

    page.context.clear_cookies()
    log_in(page, deployment, "globex")
    assert page.locator("table#goals tbody tr").get_attribute("data-goal") == OTHER_GOAL
    assert page.goto(f"{deployment.dashboard}/goals/{GOAL}").status == 404


def test_a_cross_site_form_cannot_act_even_with_the_cookie(page: Any, deployment: Deployment) -> None:
    log_in(page, deployment)
    path_id = deployment.store.list_paths("acme", GOAL)[0].path.path_id
    response = page.request.post(f"{deployment.dashboard}/goals/{GOAL}/paths/{path_id}/enabled", form={"enabled": "0"})
    assert response.status == 403 and "HX-Request" in response.text()
    assert all(r.enabled for r in deployment.store.list_paths("acme", GOAL, include_disabled=True))


def test_the_goal_page_updates_while_traffic_flows(page: Any, deployment: Deployment) -> None:
    log_in(page, deployment)
    page.goto(f"{deployment.dashboard}/goals/{GOAL}")
    shown = int(page.inner_text("#goal-outcomes"))
    deployment.route("acme", 15)
    expected = len(deployment.outcomes())
    assert expected == shown + 15
    playwright_api.expect(page.locator("#goal-outcomes")).to_have_text(str(expected), timeout=15_000)


def test_no_prompt_or_completion_text_appears_in_any_page(page: Any, deployment: Deployment) -> None:
    log_in(page, deployment)
    trace_id = deployment.outcomes()[-1].trace_id
    texts = []
    for url in (
        "/",
        f"/goals/{GOAL}",
        f"/goals/{GOAL}/live",
        f"/goals/{GOAL}/series.json",
        "/decisions",
        f"/decisions?goal={GOAL}",
        f"/traces/{trace_id}",
    ):
        response = page.goto(deployment.dashboard + url)
        assert response.status == 200, url
        texts.append(page.content())
    shown = "\n".join(texts)
    assert GOAL in shown and trace_id in shown  # the metadata is there...
    assert SECRET not in shown  # ...the prompt is not...
    answers = {answer.strip() for answer in deployment.answers if len(answer.strip()) >= 8}
    assert answers, "the sandbox answered nothing: this test would prove nothing"
    assert [answer for answer in answers if answer in shown] == []  # ...and neither is any answer


def test_kalibr_dashboard_serves_a_local_store_read_only(page: Any, deployment: Deployment, tmp_path: FilePath) -> None:
    command = [sys.executable, "-m", "kalibr", "dashboard", "--store", deployment.store.location]
    command += ["--tenant", "acme", "--port", "0", "--no-browser", "--read-only"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            link = re.search(r"http://\S+", process.stdout.readline())
            assert link is not None and "127.0.0.1" in link.group(0)
            page.goto(link.group(0))  # the one-time link logs the browser in
            page.wait_for_selector(f"tr[data-goal='{GOAL}']")
            page.goto(link.group(0).split("/login")[0] + f"/goals/{GOAL}")
            assert "read-only" in page.inner_text("header")
            assert page.locator("button.toggle").count() == 0 and page.locator("#config-form").count() == 0
            path_id = deployment.store.list_paths("acme", GOAL)[0].path.path_id
            base = link.group(0).split("/login")[0]
            refused = page.request.post(
                f"{base}/goals/{GOAL}/paths/{path_id}/enabled", form={"enabled": "0"}, headers={"HX-Request": "true"}
            )
            assert refused.status == 403 and "read-only" in refused.text()
            assert all(r.enabled for r in deployment.store.list_paths("acme", GOAL, include_disabled=True))
        finally:
            process.terminate()
            process.wait(timeout=10)
