"""``open_store``: which store a URL names, the default file, plugin schemes and the errors."""

from __future__ import annotations

import builtins
import sys
from pathlib import Path as FilePath
from typing import Any

import pytest

from kalibr._exceptions import MissingExtraError, UserError
from kalibr.hookspecs import hookimpl
from kalibr.plugins import pm
from kalibr.stores import MemoryStore, Store, open_store
from kalibr.stores.sqlite import SQLiteStore


@pytest.mark.parametrize("url", ["memory:", "memory://", "MEMORY:"])
def test_memory_urls(url: str) -> None:
    assert isinstance(open_store(url), MemoryStore)


@pytest.mark.parametrize("form", ["sqlite://{}", "sqlite:{}", "{}"])
def test_sqlite_urls_and_plain_paths_open_that_file(tmp_path: FilePath, form: str) -> None:
    location = tmp_path / "kalibr.db"
    store = open_store(form.format(location))
    assert isinstance(store, SQLiteStore)
    assert store.location == str(location)
    store.close()
    assert location.exists()


def test_default_is_the_file_kalibr_db_names(tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KALIBR_DB", str(tmp_path / "from-env.db"))
    store = open_store()
    assert isinstance(store, SQLiteStore)
    assert store.location == str(tmp_path / "from-env.db")
    store.close()


def test_default_without_env_is_in_the_user_data_folder(tmp_path: FilePath, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KALIBR_DB", raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path))
    store = open_store()
    assert isinstance(store, SQLiteStore)
    assert FilePath(store.location).name == "kalibr.db"
    assert FilePath(store.location).parent.name == "kalibr"
    assert FilePath(store.location).is_relative_to(tmp_path)
    store.close()


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(UserError, match=r"unknown store scheme 'redis'.*memory.*postgresql.*sqlite"):
        open_store("redis://localhost:6379/0")


@pytest.mark.parametrize("url", ["", "   ", "memory:extra"])
def test_malformed_urls_are_user_errors(url: str) -> None:
    with pytest.raises(UserError):
        open_store(url)


def test_a_plugin_can_add_a_scheme() -> None:
    class CustomStores:
        @hookimpl
        def kalibr_register_stores(self, register: Any) -> None:
            register("custom", lambda url: MemoryStore())

    pm.register(CustomStores(), name="test-custom-stores")
    try:
        assert isinstance(open_store("custom://anything"), MemoryStore)
    finally:
        pm.unregister(name="test-custom-stores")


def test_postgres_without_psycopg_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_psycopg(name: str, *args: Any, **kwargs: Any) -> Any:
        if name == "psycopg" or name.startswith(("psycopg.", "psycopg_pool")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "kalibr.stores.postgres", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_psycopg)
    with pytest.raises(MissingExtraError, match=r"kalibr-core\[postgres\]"):
        open_store("postgresql://postgres@127.0.0.1:5432/test")


def test_every_store_satisfies_the_protocol(tmp_path: FilePath) -> None:
    store = open_store(str(tmp_path / "kalibr.db"))
    assert isinstance(store, Store)
    assert isinstance(MemoryStore(), Store)
    store.close()
