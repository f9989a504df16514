"""Settings: read from GRAFT_* variables once, frozen, and documented in the README."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings, settings_table
from tests.readme import settings_block


def test_readme_documents_every_setting_with_its_default():
    assert settings_block() == settings_table()


def test_defaults_are_the_embedded_setup(monkeypatch):
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"GRAFT_{name.upper()}", raising=False)
    settings = Settings()
    assert settings.home == Path("var")
    assert settings.registry_url == f"sqlite:///{Path('var').resolve() / 'graft.db'}"
    assert settings.backbone_name == "all-MiniLM-L6-v2"
    assert settings.auth == "off"


def test_environment_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("GRAFT_HOME", str(tmp_path))
    monkeypatch.setenv("GRAFT_DATABASE_URL", "postgresql+psycopg://db/graft")
    monkeypatch.setenv("GRAFT_BACKBONE_KIND", "image")
    monkeypatch.setenv("GRAFT_WORKERS", "4")
    monkeypatch.setenv("GRAFT_MAX_INPUTS", "7")
    settings = Settings()
    assert settings.registry_url == "postgresql+psycopg://db/graft"
    assert settings.backbone_name == "efficientnet-lite0"
    assert settings.max_inputs == 7


def test_threads_follow_workers(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    monkeypatch.setenv("GRAFT_WORKERS", "4")
    assert Settings().threads_per_worker == 2
    monkeypatch.setenv("GRAFT_TORCH_THREADS", "3")
    assert Settings().threads_per_worker == 3


def test_settings_are_frozen():
    settings = Settings()
    with pytest.raises(ValidationError):
        settings.max_inputs = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUTH", "maybe"),
        ("MAX_INPUTS", "0"),
        ("WORKERS", "none"),
        ("BACKBONE_DTYPE", "int4"),
        ("JOB_HEARTBEAT_SECONDS", "0"),
        ("MAX_QUEUED_JOBS", "0"),
        ("LOG_PAYLOADS", "maybe"),
    ],
)
def test_invalid_values_fail_at_start_up(monkeypatch, name, value):
    monkeypatch.setenv(f"GRAFT_{name}", value)
    with pytest.raises(ValidationError):
        Settings()


def test_metrics_tenants_are_a_short_comma_separated_list(monkeypatch):
    monkeypatch.setenv("GRAFT_METRICS_TENANTS", " acme, globex ,")
    assert Settings().metrics_tenants == ("acme", "globex")
    monkeypatch.delenv("GRAFT_METRICS_TENANTS")
    assert Settings().metrics_tenants == ()
    for refused in ("acme,two words", ",".join(f"t{i}" for i in range(101))):
        monkeypatch.setenv("GRAFT_METRICS_TENANTS", refused)
        with pytest.raises(ValidationError):
            Settings()
