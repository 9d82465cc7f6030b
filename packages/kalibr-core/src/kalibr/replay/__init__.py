"""Offline evaluation: replay a per-query outcome table under bandit feedback through the real policy.

Usage::

    from kalibr.replay import ReplayOptions, load_table, replay

    result = replay(load_table("outcomes.csv"), ReplayOptions(seeds=10, degrade=True))
    print(to_markdown(result, command="python my_script.py"))

With a prompt table (``load_prompts`` and ``with_features``) the replay adds ``kalibr+prompts``, the default
policy with each query's prompt features visible before it chooses, on the same shuffles and coin flips;
``merge_goals`` replays a table as one goal, as a user who never split goals would run it.

Each seed shuffles the queries; each step the contender picks a path for the query's goal and learns only that
path's outcome (a Bernoulli draw of a fractional score). The default policy runs exactly as the engine runs it:
``choose``/``update`` on ``ArmState`` values, with priors from the per-model totals of the other goals.
"""

from kalibr.replay._report import (
    cost_summary,
    prompt_lift,
    result_rows,
    summary_lines,
    to_json,
    to_markdown,
    write_plot,
)
from kalibr.replay._run import CostPoint, ReplayOptions, ReplayResult, Score, replay
from kalibr.replay._table import (
    GoalTable,
    ReplayTable,
    load_prompts,
    load_table,
    merge_goals,
    table_from_rows,
    with_features,
)

__all__ = [
    "CostPoint",
    "GoalTable",
    "ReplayOptions",
    "ReplayResult",
    "ReplayTable",
    "Score",
    "cost_summary",
    "load_prompts",
    "load_table",
    "merge_goals",
    "prompt_lift",
    "replay",
    "result_rows",
    "summary_lines",
    "table_from_rows",
    "to_json",
    "to_markdown",
    "with_features",
    "write_plot",
]
