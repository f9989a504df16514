"""The public HTTP contract: pydantic request and response models, with their field rules.

Requests are strict (a number where a string belongs is an error, not a conversion) and refuse
unknown fields, so a typo such as ``"topk"`` is reported instead of silently ignored. Limits
that depend on configuration (inputs per call, characters per text, ...) are checked by
``service.limits`` because a schema cannot know them.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainValidator,
    StringConstraints,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from adapters.scope import OUT_OF_SCOPE

#: Head, alias and tenant names: safe in a path, a log line or a query, never syntax.
NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
#: Aliases start with a letter so that "3" is always a version number, never an alias.
ALIAS_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"

HeadKind = Literal[
    "linear", "prototype", "mlp", "multilabel", "tuned", "hybrid", "matching", "auto"
]


#: Unicode categories that show nothing: format characters (zero-width joiners and spaces,
#: direction marks) and controls. A text of only these and whitespace reaches the backbone as no
#: words at all, and every such text then looks alike to a head.
_INVISIBLE = frozenset({"Cf", "Cc"})


def _usable_text(value: str) -> str:
    if all(c.isspace() or unicodedata.category(c) in _INVISIBLE for c in value):
        raise ValueError("text must not be empty, or only whitespace and invisible characters")
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


# -- inputs: a text or an image -------------------------------------------------------------
# Which of the two a server takes is its backbone's modality (GRAFT_BACKBONE_KIND). The gateway
# validates with the context {"modality": "text" | "image"}, so that an input of the other kind
# is a 400 naming its field; without that context (BentoML's own second pass) both validate.

#: The error type of an input of the wrong modality (the gateway answers it as invalid_input).
MODALITY_MISMATCH = "modality_mismatch"
ImageData = Annotated[
    str,
    StringConstraints(min_length=1),
    Field(
        description="A JPEG, PNG or WebP file, base64-encoded (no 'data:' prefix). Never a URL: "
        "the server fetches nothing."
    ),
]


class ImageInput(Request):
    """An image where a text would be: ``{"image": "<base64>"}``."""

    # Frozen, hence hashable like a text: the duplicate and conflict warnings key on inputs.
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    image: ImageData


def _check_modality(sent: str, info: ValidationInfo) -> None:
    wanted = (info.context or {}).get("modality")
    if wanted is None or wanted == sent:
        return
    takes = 'images ({"image": "<base64>"})' if wanted == "image" else "texts"
    raise PydanticCustomError(
        MODALITY_MISMATCH,
        f"this server's backbone (GRAFT_BACKBONE_KIND={wanted}) takes {takes}, not {sent}s",
    )


def _input_item(value: object, info: ValidationInfo) -> str | ImageInput:
    """One validator for both forms, so that an error names the input, not a union branch."""
    if isinstance(value, str):
        _check_modality("text", info)
        return _usable_text(value)
    if isinstance(value, dict) and "image" not in value:
        # Most often an example's shape ({"text": ...}) sent as an input: say what an input is.
        raise ValueError(
            'an input is a plain text string, or an image as {"image": "<base64>"}, not an '
            f"object with {', '.join(map(repr, sorted(value)[:3])) or 'no fields'}"
        )
    if isinstance(value, dict | ImageInput):
        # Errors inside (a missing or non-string "image") name inputs.N.image.
        image = ImageInput.model_validate(value)
        _check_modality("image", info)
        return image
    raise ValueError('an input is a text, or an image as {"image": "<base64>"}')


InputItem = Annotated[
    str | ImageInput,
    PlainValidator(_input_item),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "examples": ["I still have not received my card"]},
                {
                    "type": "object",
                    "properties": {"image": {"type": "string", "minLength": 1}},
                    "required": ["image"],
                    "additionalProperties": False,
                },
            ],
            "description": 'A text (text backbones) or {"image": "<base64 JPEG, PNG or WebP>"} '
            "(image backbones).",
        }
    ),
]


class Example(Request):
    text: Text | None = Field(None, description="The example's input (text backbones).")
    image: ImageData | None = Field(None, description="The example's input (image backbones).")
    label: Label | None = Field(None, description="The example's label (single-label kinds).")
    labels: list[Label] | None = Field(
        None, description="All the example's labels, possibly none (multilabel heads only)."
    )
    out_of_scope: bool = Field(
        False,
        description="true, in place of a label: an input that belongs to none of the labels, "
        "which the head learns to refuse (single-label kinds).",
    )

    @field_validator("label", "labels", mode="before")
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Absent means "the other one is given"; an explicit null is a mistake worth naming.
        if value is None:
            raise ValueError("must not be null")
        return value

    @model_validator(mode="after")
    def _one_label_field(self) -> Example:
        given = (self.label is not None) + (self.labels is not None) + self.out_of_scope
        if given != 1:
            raise ValueError(
                "an example needs 'label' (or 'labels', multilabel, or \"out_of_scope\": true), "
                "exactly one of them"
            )
        return self

    @property
    def target(self) -> str | tuple[str, ...]:
        if self.out_of_scope:
            return OUT_OF_SCOPE
        return self.label if self.label is not None else tuple(self.labels or ())

    @field_validator("text")
    @classmethod
    def _text_backbone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _check_modality("text", info)
        return value

    @field_validator("image")
    @classmethod
    def _image_backbone(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None:
            _check_modality("image", info)
        return value

    @model_validator(mode="after")
    def _one_input(self) -> Example:
        if (self.text is None) == (self.image is None):
            raise ValueError("an example has a 'text' or an 'image' (base64), not both")
        return self

    @property
    def input(self) -> str | ImageInput:
        """What the backbone embeds: the text, or the image."""
        if self.image is not None:
            return ImageInput(image=self.image)
        assert self.text is not None  # one of the two, by _one_input
        return self.text


Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


def _abstain_option(value: object) -> bool | float | str:
    if value is False or value == "auto":
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        if not (value == value and 0.0 <= value <= 1.0):  # NaN fails the comparison
            raise ValueError("a threshold is a probability from 0 to 1")
        return float(value)
    raise ValueError('abstain is false, a threshold from 0 to 1, or "auto"')


AbstainOption = Annotated[
    bool | float | str,
    PlainValidator(_abstain_option),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean", "enum": [False]},
                {"type": "number", "minimum": 0, "maximum": 1},
                {"type": "string", "enum": ["auto"]},
            ],
            "description": 'false (never), a threshold on the calibrated top probability, or "auto"'
            " (calibrated at training time).",
        }
    ),
]


def _descriptions_are_texts(
    value: dict[str, str] | None, info: ValidationInfo
) -> dict[str, str] | None:
    if value:
        _check_modality("text", info)
    return value or None


LabelDescriptions = Annotated[
    dict[Label, Text] | None,
    AfterValidator(_descriptions_are_texts),
    Field(
        description="A few words on what a label means, for some or all of the labels "
        '(e.g. {"card_arrival": "card arrival"}): each is taught as one more example of its '
        "label that cross-validation never scores. Not for multilabel heads.",
        examples=[{"card_arrival": "card arrival"}],
    ),
]


class TrainRequest(Request):
    head: HeadName
    examples: list[Example] = Field(
        description="At least one, unless base_version is given: a new version may learn from "
        "its base's examples alone (another kind or abstain option, new label descriptions)."
    )
    kind: HeadKind = "linear"
    abstain: AbstainOption = False
    base_version: VersionSelector = Field(
        None,
        description="Add these examples to that version's (a number or an alias) and train "
        "a new version from both, without resending the old ones.",
    )
    label_descriptions: LabelDescriptions = None


class PredictRequest(Request):
    head: HeadName
    inputs: list[InputItem] = Field(min_length=1)
    version: VersionSelector = None
    top_k: TopK = 3
    abstain_threshold: Probability | None = Field(
        None, description="Overrides the head's threshold for this call (0: never abstain)."
    )


class EvaluateRequest(Request):
    head: HeadName
    version: VersionSelector = None
    examples: list[Example] = Field(min_length=1)
    abstain_threshold: Probability | None = None


class ClassifyRequest(Request):
    examples: list[Example] = Field(min_length=1)
    inputs: list[InputItem] = Field(min_length=1)
    kind: HeadKind = "prototype"
    top_k: TopK = 3
    label_descriptions: LabelDescriptions = None


class EmbedRequest(Request):
    inputs: list[InputItem] = Field(min_length=1)


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


def _job_id(value: str) -> str:
    value = value.lower()  # hexadecimal either way; ids are written in lower case
    if not re.fullmatch(r"[0-9a-f]{32}", value):
        raise ValueError(
            "a job id is the 32 hexadecimal characters /v1/jobs/train answered (graft jobs "
            "list shows them)"
        )
    return value


JobId = Annotated[
    str,
    AfterValidator(_job_id),
    Field(
        description="A training job's id, as /v1/jobs/train answered it.",
        json_schema_extra={"pattern": "^[0-9a-fA-F]{32}$"},
    ),
]


class JobRequest(Request):
    job: JobId


JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class JobListRequest(Request):
    head: HeadName | None = Field(None, description="Only this head's jobs.")
    status: JobStatus | None = Field(None, description="Only jobs in this status.")
    limit: int = Field(20, ge=1, le=200, description="At most this many, newest first.")


# -- responses ------------------------------------------------------------------------------


class ScoredLabel(BaseModel):
    label: str
    score: float


class Prediction(BaseModel):
    label: str | None = Field(description="The top label; null when the head abstained.")
    score: float
    abstained: bool = False
    top: list[ScoredLabel]
    labels: list[str] | None = Field(
        None, description="Multilabel heads: every label at or over its threshold."
    )


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


class LabelMetrics(BaseModel):
    precision: float
    recall: float
    f1: float
    support: int


class AbstentionMetrics(BaseModel):
    threshold: float
    abstained: int
    coverage: float = Field(description="Share of examples answered.")
    answered_accuracy: float | None = Field(description="Accuracy on the answered examples.")
    accuracy: float = Field(description="Accuracy counting every abstention as wrong.")
    open_set_accuracy: float = Field(
        description="Accuracy counting a refusal right where the true label is one the head was "
        "never taught, and wrong elsewhere."
    )
    unknown_label_examples: int = Field(
        description="Examples whose label the head was never taught (out of scope)."
    )
    unknown_label_refused: float | None = Field(
        description="Share of those it abstained on: there, the right answer."
    )


class EvaluateResponse(BaseModel):
    head: str
    version: int
    n_examples: int
    accuracy: float = Field(description="Exact-match accuracy (multilabel: every label right).")
    macro_f1: float
    expected_calibration_error: float | None = Field(
        description="Gap between confidence and accuracy over 10 confidence bins."
    )
    per_label: dict[str, LabelMetrics]
    labels: list[str] = Field(description="Rows and columns of the confusion matrix.")
    confusion_matrix: list[list[int]] | None = Field(
        description="Counts: row = true label, column = predicted label (single-label only)."
    )
    abstention: AbstentionMetrics | None
    unknown_labels: list[str] = Field(
        description="True labels the head was never taught: out of scope, or misspelt."
    )


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


class JobProgress(BaseModel):
    phase: str = Field(
        description="queued, embedding, fitting, registering or done (where it stopped, if it "
        "failed or was cancelled)."
    )
    fraction: float = Field(description="How much of the phase is done, 0 to 1 (embedding).")


class JobError(BaseModel):
    code: str = Field(description="An error code of the API, or job_interrupted, or internal.")
    message: str


class JobResponse(BaseModel):
    job: str
    head: str
    kind: str
    status: JobStatus
    progress: JobProgress
    n_examples: int
    created: datetime
    updated: datetime
    finished: datetime | None
    error: JobError | None = Field(description="Why the job failed (failed jobs only).")
    version: int | None = Field(description="The version the job registered (succeeded only).")
    result: TrainResponse | None = Field(
        description="What /v1/heads/train would have answered (succeeded only)."
    )


class JobsResponse(BaseModel):
    jobs: list[JobResponse] = Field(description='Newest first, each without its "result".')
