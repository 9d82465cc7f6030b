"""`kalibr keys`: a created key works against the service once, is stored hashed, and stops working when revoked."""

from __future__ import annotations

import sqlite3
from pathlib import Path as FilePath

from click.testing import CliRunner
from fastapi.testclient import TestClient

from kalibr.cli import cli
from kalibr.service import create_app, hash_api_key
from kalibr.stores import open_store


def _call(store_url: str, key: str, tenant: str) -> int:
    store = open_store(store_url)
    try:
        with TestClient(create_app(store)) as client:
            headers = {"X-API-Key": key, "X-Tenant-ID": tenant}
            return client.get("/api/v1/routing/paths", headers=headers).status_code
    finally:
        store.close()


def test_create_list_use_and_revoke_a_key(tmp_path: FilePath) -> None:
    db = tmp_path / "keys.db"
    url = f"sqlite:///{db}"
    runner = CliRunner()
    created = runner.invoke(cli, ["keys", "create", "--tenant", "acme", "--store", url])
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    assert key.startswith("kal_")
    assert _call(url, key, "acme") == 200

    listed = runner.invoke(cli, ["keys", "list", "--store", url])
    assert listed.exit_code == 0
    assert listed.stdout.split("\t")[:2] == ["acme", hash_api_key(key)[:12]]

    revoked = runner.invoke(cli, ["keys", "revoke", hash_api_key(key)[:12], "--store", url])
    assert revoked.exit_code == 0, revoked.output
    assert _call(url, key, "acme") == 401


def test_bad_tenant_and_unknown_key_are_refused_with_the_reason(tmp_path: FilePath) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    runner = CliRunner()
    bad = runner.invoke(cli, ["keys", "create", "--tenant", "no spaces please", "--store", url])
    assert bad.exit_code != 0
    assert "invalid tenant" in bad.output
    unknown = runner.invoke(cli, ["keys", "revoke", "deadbeef", "--store", url])
    assert unknown.exit_code != 0
    assert "no key match" in unknown.output


def test_keys_are_stored_as_sha256_hashes(tmp_path: FilePath) -> None:
    db = tmp_path / "keys.db"
    created = CliRunner().invoke(cli, ["keys", "create", "--tenant", "globex", "--store", f"sqlite:///{db}"])
    key = created.stdout.strip()
    with sqlite3.connect(db) as connection:
        dump = "\n".join(connection.iterdump())
    assert hash_api_key(key) in dump
    assert key not in dump
