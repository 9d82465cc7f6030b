"""Warm start: an offline table seeds each goal's paths, lightly, through the store protocol."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from kalibr._domain import Path as RoutePath
from kalibr._exceptions import UserError
from kalibr.cli.warm_start import import_table
from kalibr.stores import DEFAULT_TENANT, open_store
from kalibr.warm_start import aggregate_rows, import_priors

COLUMNS = {"goal_column": "task", "model_column": "llm", "score_column": "correct"}


def rows(*cells: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"task": goal, "llm": model, "correct": score} for goal, model, score in cells]


def offline(goal: str = "summarize") -> list[dict[str, str]]:
    return rows(
        *[(goal, "strong", "1") for _ in range(40)], *[(goal, "weak", "1" if i % 4 == 0 else "0") for i in range(40)]
    )


def test_seeds_weighted_pseudo_counts_per_goal_and_model() -> None:
    store = open_store("memory:")
    sums = aggregate_rows(rows(("g", "a", "1"), ("g", "a", "0.5"), ("g", "b", "0")), **COLUMNS)
    assert sums == {("g", "a"): (2, 1.5), ("g", "b"): (1, 0.0)}
    import_priors(store, sums, weight=0.5)
    a, b = store.load_arms(DEFAULT_TENANT, "g", [RoutePath("a"), RoutePath("b")])
    assert (a.successes, a.failures) == pytest.approx((0.75, 0.25))
    assert (b.successes, b.failures) == pytest.approx((0.0, 0.5))
    assert a.samples == 0  # pseudo-evidence is not live traffic
    assert [record.path.model for record in store.list_paths(DEFAULT_TENANT, "g")] == ["a", "b"]


def test_cap_keeps_live_outcomes_in_charge() -> None:
    store = open_store("memory:")
    sums = aggregate_rows(offline(), **COLUMNS)
    seeded = import_priors(store, sums, weight=1.0, max_pseudo_counts=10.0)
    assert all(arm.successes + arm.failures == pytest.approx(10.0) for arm in seeded)


def test_importing_again_replaces_instead_of_adding() -> None:
    store = open_store("memory:")
    sums = aggregate_rows(offline(), **COLUMNS)
    import_priors(store, sums, weight=0.2)
    store.update_arm(
        DEFAULT_TENANT,
        "summarize",
        RoutePath("strong"),
        lambda arm: arm.__class__(arm.path_id, arm.model, arm.successes + 3.0, arm.failures, 3, 3, extra=arm.extra),
    )
    import_priors(store, sums, weight=0.2)
    (strong,) = store.load_arms(DEFAULT_TENANT, "summarize", [RoutePath("strong")])
    assert strong.successes == pytest.approx(8.0 + 3.0)  # 40 rows * 0.2 once, plus the live outcomes


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ((("g", "a", "yes"),), "row 2: correct 'yes' is not a number"),
        ((("g", "a", "1"), ("g", "a", "2")), "row 3: correct 2.0 is outside"),
        ((("bad goal!", "a", "1"),), "row 2: invalid goal"),
        ((("g", "", "1"),), "row 2: llm is empty"),
    ],
)
def test_bad_rows_are_named(cells: tuple[tuple[str, str, str], ...], message: str) -> None:
    with pytest.raises(UserError, match=message):
        aggregate_rows(rows(*cells), **COLUMNS)


def test_weight_must_be_a_fraction() -> None:
    with pytest.raises(UserError, match="weight"):
        import_priors(open_store("memory:"), {("g", "a"): (1, 1.0)}, weight=2.0)


def test_cli_imports_into_a_sqlite_file(tmp_path: Path) -> None:
    table = tmp_path / "offline.csv"
    table.write_text(
        "task,llm,correct\n" + "".join(f"{g},{m},{s}\n" for g, m, s in (r.values() for r in offline("extract")))
    )
    db = tmp_path / "kalibr.db"
    result = CliRunner().invoke(
        import_table,
        [str(table), "--goal-column", "task", "--model-column", "llm", "--score-column", "correct", "--db", str(db)],
    )
    assert result.exit_code == 0, result.output
    assert "extract" in result.output
    store = open_store(str(db))
    try:
        strong, weak = store.load_arms(DEFAULT_TENANT, "extract", [RoutePath("strong"), RoutePath("weak")])
    finally:
        store.close()
    assert strong.success_rate == pytest.approx(1.0)
    assert weak.success_rate == pytest.approx(0.25)


def test_cli_names_a_missing_column(tmp_path: Path) -> None:
    table = tmp_path / "offline.csv"
    table.write_text("goal,model,score\ng,a,1\n")
    result = CliRunner().invoke(import_table, [str(table), "--score-column", "correct", "--db", "memory:"])
    assert result.exit_code == 2
    assert "no column 'correct'" in result.output
