"""In-process HTTP: the real BentoML app (lifespan, gateway, backbone) behind a TestClient."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from starlette.testclient import TestClient

from service.tables import metadata


@contextlib.contextmanager
def graft_client(home: Path, **settings: str) -> Iterator[TestClient]:
    """A TestClient over a fresh Graft app; ``settings`` are GRAFT_* variables, lower-cased."""
    from service.settings import Settings

    with pytest.MonkeyPatch.context() as env:
        for name in Settings.model_fields:  # exactly these settings, whatever is open around us
            env.delenv(f"GRAFT_{name.upper()}", raising=False)
        env.setenv("GRAFT_HOME", str(home))
        for name, value in settings.items():
            env.setenv(f"GRAFT_{name.upper()}", value)
        from service.app import Graft

        _forget_bentoml_http_metrics()  # another app may still be open (module fixtures)
        try:
            with TestClient(Graft.to_asgi(), raise_server_exceptions=False) as client:
                yield client
        finally:
            _forget_bentoml_http_metrics()


def _forget_bentoml_http_metrics() -> None:
    """BentoML registers its HTTP metrics in the process-wide registry once per app (a real
    server has one app per process); a test that starts another app must drop the old ones."""
    from prometheus_client import REGISTRY

    for collector in list(REGISTRY._collector_to_names):
        if any(name.startswith("bentoml_") for name in REGISTRY._collector_to_names[collector]):
            REGISTRY.unregister(collector)


def registry_snapshot(home: Path) -> dict[str, list[Any]]:
    """Every row of every registry table, to prove that a failed request changed nothing."""
    engine = create_engine(f"sqlite:///{home / 'graft.db'}")
    try:
        with engine.connect() as conn:
            return {
                table.name: sorted(map(repr, conn.execute(select(table)).all()))
                for table in metadata.sorted_tables
            }
    finally:
        engine.dispose()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("graft-home")


@pytest.fixture(scope="module")
def client(home: Path) -> Iterator[TestClient]:
    with graft_client(
        home, max_inputs="16", max_text_chars="2000", max_body_bytes="200000"
    ) as client:
        yield client


@pytest.fixture(scope="session")
def jobs_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """One app for test_jobs.py and test_cli.py (one backbone load for both), with limits low
    enough for the job tests to reach and request bodies in its access log.

    It lives for the whole session, so its settings are in the environment only while it starts
    (they are read once, then): servers and tests that run later must not inherit them."""
    from service.app import Graft
    from service.settings import Settings

    settings = {"max_examples": "1000", "max_queued_jobs": "2", "log_payloads": "true"}
    app = contextlib.ExitStack()
    with pytest.MonkeyPatch.context() as env:
        for name in Settings.model_fields:
            env.delenv(f"GRAFT_{name.upper()}", raising=False)
        env.setenv("GRAFT_HOME", str(tmp_path_factory.mktemp("graft-jobs")))
        for name, value in settings.items():
            env.setenv(f"GRAFT_{name.upper()}", value)
        _forget_bentoml_http_metrics()
        client = app.enter_context(TestClient(Graft.to_asgi(), raise_server_exceptions=False))
    with app:
        yield client
    _forget_bentoml_http_metrics()
