"""Development tasks. `nox` runs lint, type check, the Python tests and the TypeScript tests; `nox -l` lists every
session."""

from __future__ import annotations

import os

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "typecheck", "tests", "ts"]
nox.options.reuse_venv = "yes"

# The interpreter nox runs under, unless KALIBR_NOX_PYTHON names another (e.g. "3.12").
PYTHON = os.environ.get("KALIBR_NOX_PYTHON") or None


def _sync(session: nox.Session, *groups: str) -> None:
    """Install the locked workspace (every package, every extra) plus dependency groups into the session venv."""
    # DSPy's LiteLLM would otherwise fetch a price list from the internet when it is imported.
    session.env["LITELLM_LOCAL_MODEL_COST_MAP"] = "true"
    args = ["uv", "sync", "--frozen", "--all-packages", "--all-extras", "--inexact"]
    for group in groups:
        args += ["--group", group]
    session.run_install(*args, env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location}, silent=True)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """Ruff lint and format check."""
    _sync(session, "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """Strict mypy over every package's sources."""
    _sync(session, "typing", "test")
    session.run("mypy", "packages")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The whole pytest suite (PostgreSQL tests run when KALIBR_TEST_POSTGRES_URL is set)."""
    _sync(session, "test")
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def ts(session: nox.Session) -> None:
    """The TypeScript client's tests: npm ci, tsc, node --test (end-to-end ones run this venv's `kalibr`)."""
    _sync(session)
    with session.chdir("packages/kalibr-ts"):
        session.run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error", external=True)
        session.run("npm", "run", "--silent", "build", external=True)
        session.run("npm", "test", "--silent", "--", *session.posargs, external=True)


@nox.session(python=PYTHON)
def demo(session: nox.Session) -> None:
    """Run `kalibr demo` on the embedded default store (pass --plot for a PNG)."""
    _sync(session)
    session.run("kalibr", "demo", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Run every benchmark, print the tables and write docs/benchmarks.md."""
    _sync(session, "bench", "test")
    session.run("python", "-m", "benchmarks", *session.posargs)
