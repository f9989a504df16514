"""Fixtures shared by every depth of the suite: real data, real databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

# No test may reach a model hub: the backbone comes from an installed package.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

FIXTURES = Path(__file__).parent / "fixtures"
POSTGRES_ADMIN_URL = os.environ.get(
    "GRAFT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


@dataclass(frozen=True)
class FeatureSet:
    train_X: np.ndarray
    train_y: list[str]
    train_text: list[str]
    test_X: np.ndarray
    test_y: list[str]
    test_text: list[str]
    fingerprint: str


@pytest.fixture(scope="session")
def features() -> FeatureSet:
    """Real all-MiniLM-L6-v2 features of 8 banking77 intents (see fixtures/make_features.py)."""
    data = np.load(FIXTURES / "banking77_features.npz")
    return FeatureSet(
        train_X=data["train_X"].astype(np.float32),
        train_y=data["train_y"].tolist(),
        train_text=data["train_text"].tolist(),
        test_X=data["test_X"].astype(np.float32),
        test_y=data["test_y"].tolist(),
        test_text=data["test_text"].tolist(),
        fingerprint=str(data["fingerprint"]),
    )


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The admin URL of the PostgreSQL server, or a skip (a failure under CI) if there is none."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    engine = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError as exc:
        message = (
            f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL} ({exc.orig}); start it or "
            "point GRAFT_TEST_POSTGRES_URL at a server to run the PostgreSQL tests"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    finally:
        engine.dispose()
    return POSTGRES_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL server, dropped afterwards."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    name = f"graft_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each registry test runs against a real SQLite file and a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'graft.db'}"
    return str(request.getfixturevalue("postgres_url"))
