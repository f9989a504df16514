"""The public HTTP contract: pydantic request and response models, with their field rules.

Requests are strict (a number where a string belongs is an error, not a conversion) and refuse
unknown fields, so a typo such as ``"topk"`` is reported instead of silently ignored. Limits
that depend on configuration (inputs per call, characters per text, ...) are checked by
``service.limits`` because a schema cannot know them.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    WithJsonSchema,
)

#: Head, alias and tenant names: safe in a path, a log line or a query, never syntax.
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
#: Aliases start with a letter so that "3" is always a version number, never an alias.
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"

HeadKind = Literal["linear", "prototype"]


def _usable_text(value: str) -> str:
    if not value.strip():
        raise ValueError("text must not be empty or whitespace only")
    return value


HeadName = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN),
    Field(description="Letters, digits, '-', '_', '.'; 1 to 64 characters.", examples=["intents"]),
]
AliasName = Annotated[
    str,
    StringConstraints(pattern=ALIAS_PATTERN),
    Field(description="An alias such as 'production': a letter, then up to 63 of [A-Za-z0-9._-]."),
]
Text = Annotated[
    str, AfterValidator(_usable_text), Field(examples=["I still have not received my card"])
]
Label = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200),
    AfterValidator(_usable_text),
    Field(examples=["card_arrival"]),
]
#: Version numbers fit a 32-bit column; a larger number can only be a mistake.
MAX_VERSION = 2**31 - 1
Version = Annotated[int, Field(ge=1, le=MAX_VERSION, description="A version number, 1 or more.")]


def _version_selector(value: object) -> int | str | None:
    """One validator for the three forms, so an error names the field, not a union branch."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if not 1 <= value <= MAX_VERSION:
            raise ValueError(f"version numbers run from 1 to {MAX_VERSION}")
        return value
    if isinstance(value, str):
        if not _ALIAS.match(value):
            raise ValueError("an alias is a letter followed by up to 63 of [A-Za-z0-9._-]")
        return value
    raise ValueError("version must be a number, an alias or null")


_ALIAS = re.compile(ALIAS_PATTERN)
VersionSelector = Annotated[
    int | str | None,
    PlainValidator(_version_selector),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": MAX_VERSION},
                {"type": "string", "pattern": ALIAS_PATTERN},
                {"type": "null"},
            ],
            "description": "A version number, an alias, or null for the newest version.",
        }
    ),
]
TopK = Annotated[
    int, Field(ge=1, le=1000, description="How many ranked labels each prediction lists.")
]


class Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Example(Request):
    text: Text
    label: Label


class TrainRequest(Request):
    head: HeadName
    examples: list[Example] = Field(min_length=1)
    kind: HeadKind = "linear"


class PredictRequest(Request):
    head: HeadName
    inputs: list[Text] = Field(min_length=1)
    version: VersionSelector = None
    top_k: TopK = 3


class ClassifyRequest(Request):
    examples: list[Example] = Field(min_length=1)
    inputs: list[Text] = Field(min_length=1)
    kind: HeadKind = "prototype"
    top_k: TopK = 3


class EmbedRequest(Request):
    inputs: list[Text] = Field(min_length=1)


class ListHeadsRequest(Request):
    pass


class HeadRequest(Request):
    head: HeadName


class DeleteRequest(Request):
    head: HeadName
    version: Version | None = Field(None, description="One version, or null for the whole head.")


class AliasRequest(Request):
    head: HeadName
    alias: AliasName
    version: Version


class AliasDeleteRequest(Request):
    head: HeadName
    alias: AliasName


TenantName = Annotated[
    str,
    StringConstraints(pattern=NAME_PATTERN),
    Field(description="Letters, digits, '-', '_', '.'; 1 to 64 characters.", examples=["acme"]),
]
KeyPrefix = Annotated[
    str, StringConstraints(pattern=r"^[0-9a-f]{12}$"), Field(description="A key's public prefix.")
]


class KeyCreateRequest(Request):
    tenant: TenantName


class KeyListRequest(Request):
    tenant: TenantName | None = Field(None, description="Only this tenant's keys.")


class KeyRevokeRequest(Request):
    prefix: KeyPrefix


# -- responses ------------------------------------------------------------------------------


class ScoredLabel(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str | None
    score: float
    abstained: bool = False
    top: list[ScoredLabel]


class PredictResponse(BaseModel):
    head: str
    version: int
    predictions: list[Prediction]


class BackboneInfo(BaseModel):
    kind: str
    name: str
    fingerprint: str
    dim: int


class TrainResponse(BaseModel):
    head: str
    version: int
    kind: str
    labels: list[str]
    n_examples: int
    train_ms: float
    backbone: BackboneInfo
    report: dict[str, Any]


class ClassifyResponse(BaseModel):
    kind: str
    labels: list[str]
    predictions: list[Prediction]


class EmbedResponse(BaseModel):
    backbone: BackboneInfo
    embeddings: list[list[float]]


class VersionSummary(BaseModel):
    version: int
    kind: str
    labels: list[str]
    n_examples: int
    created: datetime
    train_ms: float
    size_bytes: int
    fingerprint: str
    aliases: list[str]
    report: dict[str, Any]


class HeadSummary(BaseModel):
    head: str
    latest_version: int
    aliases: dict[str, int]
    versions: list[VersionSummary]


class HeadsResponse(BaseModel):
    heads: list[HeadSummary]


class DeleteResponse(BaseModel):
    head: str
    deleted_versions: list[int]


class CreatedKey(BaseModel):
    tenant: str
    key: str = Field(description="Shown this once; only its hash is stored.")
    prefix: str
    created: datetime


class KeySummary(BaseModel):
    tenant: str
    prefix: str
    created: datetime
    revoked: datetime | None


class KeysResponse(BaseModel):
    keys: list[KeySummary]


class AliasResponse(BaseModel):
    head: str
    alias: str
    version: int | None = Field(description="The version the alias points at now (null: deleted).")
    previous: int | None = Field(description="The version it pointed at before, if any.")
