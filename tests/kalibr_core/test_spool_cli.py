"""``kalibr spool``: what a host's clients still owe each service, what it refused, and retrying or dropping it."""

from __future__ import annotations

from pathlib import Path as FilePath

from click.testing import CliRunner

from kalibr._domain import Decision, Outcome, Path
from kalibr.cli import cli
from kalibr.intelligence.remote import RemoteIntelligence, Resilience

GOAL = "summarize"


def _offline_client_with_a_refused_outcome(spool: FilePath) -> RemoteIntelligence:
    remote = RemoteIntelligence("http://127.0.0.1:9", api_key="kal_k", spool=spool, resilience=Resilience(cooldown=60))
    decision = remote.decide(GOAL, [Path("gpt-4o-mini")])  # port 9 refuses: a fallback
    remote.report(Outcome.build(decision, success=True))
    too_long = Decision(trace_id="ab" * 16, goal=GOAL, path=Path("m" * 300), exploration=False, reason="", confidence=0)
    remote.record_forced(too_long)
    remote.report(Outcome.build(too_long, success=False))
    assert (remote.pending_outcomes(), remote.dead_outcomes()) == (1, 1)
    remote.close()
    return remote


def test_spool_lists_retries_and_drops(tmp_path: FilePath) -> None:
    spool = tmp_path / "spool.db"
    remote = _offline_client_with_a_refused_outcome(spool)
    runner = CliRunner()

    listed = runner.invoke(cli, ["spool", "--spool", str(spool), "--dead"])
    assert listed.exit_code == 0, listed.output
    assert f"{remote.endpoint}  pending 1  dead 1" in listed.output
    assert "ab" * 16 in listed.output
    assert "HTTP 422" in listed.output and "model_id" in listed.output
    assert "kal_k" not in listed.output  # a fingerprint, never the key

    retried = runner.invoke(cli, ["spool", "retry", "--spool", str(spool), "--service", "http://127.0.0.1:9"])
    assert retried.exit_code == 0, retried.output
    assert "1 dead-lettered outcomes queued again" in retried.output
    assert "pending 2  dead 0" in runner.invoke(cli, ["spool", "--spool", str(spool)]).output

    dropped = runner.invoke(cli, ["spool", "drop", "--spool", str(spool), "--pending", "--yes"])
    assert dropped.exit_code == 0, dropped.output
    assert "2 outcomes deleted" in dropped.output
    assert "empty" in runner.invoke(cli, ["spool", "--spool", str(spool)]).output


def test_spool_names_a_missing_file_and_an_unknown_service(tmp_path: FilePath) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["spool", "--spool", str(tmp_path / "nope.db")])
    assert missing.exit_code != 0
    assert "no spool at" in missing.output
    spool = tmp_path / "spool.db"
    _offline_client_with_a_refused_outcome(spool)
    unknown = runner.invoke(cli, ["spool", "--spool", str(spool), "--service", "http://elsewhere:1"])
    assert unknown.exit_code != 0
    assert "holds nothing for 'http://elsewhere:1'" in unknown.output
