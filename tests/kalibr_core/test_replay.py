"""The replay evaluator on small synthetic tables: loading, bad input, figures, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from kalibr._exceptions import UserError
from kalibr.cli.replay import replay as replay_command
from kalibr.replay import ReplayOptions, load_table, replay, to_json, to_markdown

FIELDS = ["query_id", "goal", "model", "score", "cost_usd"]


def write_table(path: Path, rates: dict[str, dict[str, float]], queries: int = 80, seed: int = 0) -> Path:
    """A table where model m answers goal g correctly with probability rates[g][m]; cost grows with the rate."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for goal, by_model in rates.items():
            for q in range(queries):
                for model, rate in by_model.items():
                    writer.writerow([f"{goal}-{q}", goal, model, float(rng.random() < rate), f"{rate / 100:.4f}"])
    return path


RATES = {"easy": {"strong": 0.9, "weak": 0.3, "mid": 0.6}, "hard": {"strong": 0.6, "weak": 0.1, "mid": 0.3}}


@pytest.fixture
def table_path(tmp_path: Path) -> Path:
    return write_table(tmp_path / "outcomes.csv", RATES)


def test_load_table_builds_one_matrix_per_goal(table_path: Path) -> None:
    table = load_table(table_path)
    assert [goal.goal for goal in table.goals] == ["easy", "hard"]
    assert table.goals[0].scores.shape == (80, 3)
    assert table.cost_source == "cost_usd"
    assert table.query_count == 160
    assert max(float(goal.costs.max()) for goal in table.goals) == pytest.approx(1.0)


def test_default_policy_beats_the_simple_baselines_and_recovers(table_path: Path) -> None:
    options = ReplayOptions(
        seeds=2, degrade=True, contenders=("kalibr", "first-path", "uniform", "thompson"), processes=2
    )
    result = replay(load_table(table_path), options, table_name="synthetic")
    share = {name: float(np.mean(score.share)) for name, score in result.scores.items()}
    assert share["kalibr"] > share["uniform"] + 0.1
    assert share["kalibr"] > share["first-path"]
    assert share["uniform"] < 0.9
    kalibr, plain = result.scores["kalibr"], result.scores["thompson"]
    assert len(kalibr.ttr) == 4  # two goals, two seeds
    assert (kalibr.ttr_quantile(50) or 0) < (plain.ttr_quantile(50) or 0)


def test_seeds_reproduce(table_path: Path) -> None:
    options = ReplayOptions(seeds=1, contenders=("kalibr",), processes=1)
    first = replay(load_table(table_path), options).scores["kalibr"].share
    second = replay(load_table(table_path), options).scores["kalibr"].share
    assert first == second


def test_cost_sweep_trades_quality_for_cost(table_path: Path) -> None:
    options = ReplayOptions(
        seeds=1,
        cost_aware=True,
        contenders=("kalibr",),
        cost_weights=(0.0, 2.0),
        tolerances=(),
        budget_shares=(),
        processes=1,
    )
    result = replay(load_table(table_path), options)
    free, costly = result.cost_curve
    assert costly.cost < free.cost
    assert result.strongest == "strong"
    assert "strongest model" in to_markdown(result, command="test") or costly.quality < 95


def test_json_and_markdown_name_every_policy(table_path: Path) -> None:
    options = ReplayOptions(seeds=1, contenders=("kalibr", "ucb1", "epsilon-greedy"), processes=1)
    result = replay(load_table(table_path), options, table_name="synthetic")
    payload = to_json(result)
    assert set(payload["policies"]) == {"kalibr", "ucb1", "epsilon-greedy"}
    markdown = to_markdown(result, command="kalibr replay synthetic.csv")
    assert "| ucb1 |" in markdown
    assert "kalibr replay synthetic.csv" in markdown


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["q1", "g", "a"]], "no column 'score'"),
        ([["q1", "g", "a", "1.5", ""], ["q1", "g", "b", "1", ""]], "row 2: score"),
        ([["q1", "g", "a", "1", ""], ["q1", "g", "b", "oops", ""]], "row 3: score 'oops' is not a number"),
        ([["q1", "g", "a", "1", "cheap"], ["q1", "g", "b", "1", ""]], "row 2: cost_usd 'cheap'"),
        ([["q1", "g", "a", "1", ""], ["q2", "g", "a", "0", ""]], "goal 'g' has only one model"),
        ([["q1", "g", "a", "1", ""], ["q1", "g", "b", "0", ""], ["q2", "g", "a", "0", ""]], "query 'q2'"),
    ],
)
def test_malformed_tables_are_refused_with_the_row_or_column(
    tmp_path: Path, rows: list[list[str]], message: str
) -> None:
    path = tmp_path / "bad.csv"
    header = FIELDS[: len(rows[0])]
    with path.open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        load_table(path)


def test_cli_prints_a_table_and_json(table_path: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    plot = tmp_path / "replay.png"
    args = [str(table_path), "--seeds", "1", "--degrade", "--processes", "1", "--plot", str(plot)]
    result = runner.invoke(replay_command, args)
    assert result.exit_code == 0, result.output
    assert "kalibr" in result.output
    assert "TTR" in result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    as_json = runner.invoke(replay_command, [str(table_path), "--seeds", "1", "--json", "--processes", "1"])
    assert as_json.exit_code == 0, as_json.output
    assert "thompson" in json.loads(as_json.stdout)["policies"]


def test_cli_reports_a_malformed_table(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("query_id,goal,model\nq1,g,a\n")
    result = CliRunner().invoke(replay_command, [str(path)])
    assert result.exit_code == 2
    assert "no column 'score'" in result.output
