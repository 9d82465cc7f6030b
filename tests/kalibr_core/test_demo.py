"""``kalibr demo``: every sentence it prints is read off its own run, and one seed gives one output."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

import kalibr
from kalibr.cli import cli
from kalibr.stores import open_store

MODELS = ("swift-mini", "nova-medium", "atlas-large")


def _run(*args: str) -> str:
    result = CliRunner().invoke(cli, ["demo", "--pace", "0", *args], env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    return result.output


def _history(db: Path) -> list[tuple[str, bool]]:
    store = open_store(f"sqlite:///{db}")
    try:
        records = store.outcomes("default", "extract_company", datetime(1970, 1, 1, tzinfo=UTC))
    finally:
        store.close()
    return [(str(record.model), record.score == 1.0) for record in records]


def _stats(calls: list[tuple[str, bool]], model: str) -> tuple[str, str]:
    mine = [ok for chosen, ok in calls if chosen == model]
    return f"{len(mine) / len(calls):.0%}", "-" if not mine else f"{sum(mine) / len(mine):.0%}"


def _moved_away_at(history: list[tuple[str, bool]], breaks_at: int) -> int | None:
    for end in range(breaks_at + 19, len(history) + 1):
        if sum(model == "atlas-large" for model, _ in history[end - 20 : end]) < 2:
            return end
    return None


@pytest.mark.parametrize("requests", [200, 600, 1000])
def test_every_sentence_of_the_demo_is_the_runs_own_numbers(tmp_path: Path, requests: int) -> None:
    db = tmp_path / "demo.db"
    output = _run("--requests", str(requests), "--seed", "1", "--db", str(db))
    text = " ".join(output.split())
    history = _history(db)
    assert len(history) == requests
    breaks_at = requests // 2
    assert f"{requests} calls for goal extract_company" in text
    assert f"atlas-large breaks at call {breaks_at}." in text
    before, after = history[: breaks_at - 1], history[breaks_at - 1 :]
    assert f"share, calls 1-{breaks_at - 1}" in text and f"share, calls {breaks_at}-{requests}" in text
    for model in MODELS:
        row = re.search(rf"│ {model}\s+│\s+(\S+) │\s+(\S+) │\s+(\S+) │\s+(\S+) │", output.split("Summary")[1])
        assert row is not None, output
        assert row.groups() == (*_stats(before, model), *_stats(after, model)), model
    overall = sum(ok for _, ok in history) / requests
    assert f"overall success {overall:.0%} over {requests} calls" in text
    leader = max(MODELS, key=lambda model: (sum(m == model for m, _ in before), model))
    assert f"Before the break Kalibr sent {_stats(before, leader)[0]} of calls 1-{breaks_at - 1} to {leader}" in text
    moved = _moved_away_at(history, breaks_at)
    assert moved is not None  # the router does leave the broken model, at every size
    assert (
        f"After atlas-large broke at call {breaks_at}, its share of the last 20 calls fell under 10% at call "
        f"{moved}, {moved - breaks_at + 1} calls after the break." in text
    )
    final = max(MODELS, key=lambda model: (sum(m == model for m, _ in after), model))
    share, success = _stats(after, final)
    assert f"Of calls {breaks_at}-{requests}, {share} went to {final}, which succeeded on {success} of them." in text
    verdict = text.split("Before the break")[1].replace("fell under 10%", "")
    percentages = {int(p) for p in re.findall(r"(\d+)%", verdict)}
    table = {int(p) for p in re.findall(r"(\d+)%", text.split("Before the break")[0])}
    assert percentages <= table  # the verdict quotes no share or rate the table does not show


def test_one_seed_gives_one_output_line_for_line() -> None:
    first, second = _run("--requests", "200", "--seed", "7"), _run("--requests", "200", "--seed", "7")
    assert first.splitlines() == second.splitlines()
    assert _run("--requests", "200", "--seed", "8") != first


def test_after_the_demo_policy_and_insights_agree_with_the_router(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    _run("--requests", "600", "--seed", "0", "--db", str(db))
    router = kalibr.Router("extract_company", list(MODELS), store=f"sqlite:///{db}")
    policy = router.get_policy()
    assert policy.recommended_model == "nova-medium", policy.reasoning
    assert "'atlas-large' dropped from" in policy.reasoning
    (goal,) = router.get_insights()["goals"]
    drifts = [s for s in goal["actionable_signals"] if s["type"] == "drift_detected"]
    by_id = {row["path_id"]: row for row in goal["paths"]}
    assert [by_id[s["data"]["path_id"]]["model"] for s in drifts] == ["atlas-large"]
    assert drifts[0]["data"]["direction"] == "down" and drifts[0]["severity"] == "high"
    nova = next(row["path_id"] for row in goal["paths"] if row["model"] == "nova-medium")
    advice = ("path_underperforming", "cost_inefficiency")
    against = [s for s in goal["actionable_signals"] if s["type"] in advice and s["data"]["path_id"] == nova]
    assert against == [], against
    assert goal["recommendation"]["model"] == "nova-medium"
    atlas = next(row for row in goal["paths"] if row["model"] == "atlas-large")
    assert atlas["status"] in ("degraded", "failing") and atlas["current_success_rate"] < 0.5


def test_the_chart_windows_cover_the_run_and_none_mixes_calls_from_both_sides_of_the_break() -> None:
    from kalibr.cli.demo import windows

    spans = windows([("swift-mini", True)] * 95, 48)
    assert spans[0][0] == 1 and spans[-1][1] == 95
    assert all(later[0] == earlier[1] + 1 for earlier, later in itertools.pairwise(spans))
    assert not [(first, last) for first, last in spans if first < 48 <= last]
    assert (48, 67) in spans and all(last - first < 20 for first, last in spans)


def test_the_demo_saves_its_chart(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "demo.png"
    output = _run("--requests", "60", "--plot", str(target))
    assert f"chart saved to {target}" in " ".join(output.split())
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
