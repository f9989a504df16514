"""The Graft BentoML service: one short method per endpoint (decode, call one function, encode)."""

from __future__ import annotations

import bentoml

from service.auth import Caller
from service.endpoint import endpoint
from service.gateway import Gateway
from service.heads import RankedPrediction
from service.logs import configure_logging
from service.registry import HeadInfo, VersionInfo
from service.runtime import Runtime
from service.schemas import (
    BackboneInfo,
    ClassifyRequest,
    ClassifyResponse,
    DeleteRequest,
    DeleteResponse,
    EmbedRequest,
    EmbedResponse,
    HeadRequest,
    HeadsResponse,
    HeadSummary,
    ListHeadsRequest,
    Prediction,
    PredictRequest,
    PredictResponse,
    ScoredLabel,
    TrainRequest,
    TrainResponse,
    VersionSummary,
)
from service.settings import Settings


@bentoml.service(name="Graft", traffic={"timeout": 600})
class Graft:
    """Transfer learning as a service: one frozen backbone, many tenants' heads."""

    def __init__(self) -> None:
        settings = Settings()
        configure_logging(settings)
        self.runtime = Runtime.start(settings)
        self.settings = settings
        self.auth = self.runtime.auth
        self.heads = self.runtime.heads

    def __is_ready__(self) -> bool:
        return True  # __init__ returns only once the backbone is loaded and warmed up

    @bentoml.on_shutdown
    def close(self) -> None:
        self.runtime.close()

    @endpoint("/v1/heads/train", TrainRequest, TrainResponse)
    async def train(self, request: TrainRequest, caller: Caller) -> TrainResponse:
        """Train a head on the frozen backbone's features and register it as a new version."""
        texts = [example.text for example in request.examples]
        labels = [example.label for example in request.examples]
        info = await self.heads.train(caller.tenant, request.head, texts, labels, request.kind)
        return TrainResponse(
            head=info.head,
            version=info.version,
            kind=info.kind,
            labels=info.labels,
            n_examples=info.n_examples,
            train_ms=info.train_ms,
            backbone=self._backbone_info(),
            report=info.report,
        )

    @endpoint("/v1/predict", PredictRequest, PredictResponse)
    async def predict(self, request: PredictRequest, caller: Caller) -> PredictResponse:
        """Label each input with a tenant's head (the newest version unless one is named)."""
        ref, ranked = await self.heads.predict(
            caller.tenant, request.head, request.version, request.inputs, request.top_k
        )
        return PredictResponse(head=ref.head, version=ref.version, predictions=_encode(ranked))

    @endpoint("/v1/classify", ClassifyRequest, ClassifyResponse)
    async def classify(self, request: ClassifyRequest, caller: Caller) -> ClassifyResponse:
        """Train in memory from the examples, label the inputs, store nothing."""
        texts = [example.text for example in request.examples]
        labels = [example.label for example in request.examples]
        fitted, ranked = await self.heads.classify(
            texts, labels, request.inputs, request.kind, request.top_k
        )
        return ClassifyResponse(
            kind=fitted.kind, labels=fitted.classes_, predictions=_encode(ranked)
        )

    @endpoint("/v1/embed", EmbedRequest, EmbedResponse)
    async def embed(self, request: EmbedRequest, caller: Caller) -> EmbedResponse:
        """The backbone's L2-normalised feature vectors."""
        features = await self.heads.embed_inputs(request.inputs)
        return EmbedResponse(backbone=self._backbone_info(), embeddings=features.tolist())

    @endpoint("/v1/heads/list", ListHeadsRequest, HeadsResponse)
    async def list_heads(self, request: ListHeadsRequest, caller: Caller) -> HeadsResponse:
        """The caller's heads with their versions."""
        found = await self.heads.list_heads(caller.tenant)
        return HeadsResponse(heads=[_summary(head) for head in found])

    @endpoint("/v1/heads/get", HeadRequest, HeadSummary)
    async def get_head(self, request: HeadRequest, caller: Caller) -> HeadSummary:
        """One of the caller's heads with its versions, labels and training reports."""
        found = await self.heads.get_head(caller.tenant, request.head)
        return _summary(found)

    @endpoint("/v1/heads/delete", DeleteRequest, DeleteResponse)
    async def delete_head(self, request: DeleteRequest, caller: Caller) -> DeleteResponse:
        """Delete one version, or the whole head when no version is given."""
        deleted = await self.heads.delete(caller.tenant, request.head, request.version)
        return DeleteResponse(head=request.head, deleted_versions=deleted)

    def _backbone_info(self) -> BackboneInfo:
        backbone = self.runtime.backbone
        return BackboneInfo(
            kind=backbone.kind,
            name=backbone.name,
            fingerprint=backbone.fingerprint,
            dim=backbone.dim,
        )


# bentoml.service returns a Service, which its type hints do not tell mypy.
Graft.add_asgi_middleware(Gateway)  # type: ignore[attr-defined]


def _encode(ranked: list[RankedPrediction]) -> list[Prediction]:
    return [
        Prediction(
            label=p.label,
            score=p.score,
            abstained=p.abstained,
            top=[ScoredLabel(label=label, score=score) for label, score in p.top],
        )
        for p in ranked
    ]


def _version_summary(info: VersionInfo) -> VersionSummary:
    return VersionSummary(
        version=info.version,
        kind=info.kind,
        labels=info.labels,
        n_examples=info.n_examples,
        created=info.created_at,
        train_ms=info.train_ms,
        size_bytes=info.size_bytes,
        fingerprint=info.fingerprint,
        aliases=list(info.aliases),
        report=info.report,
    )


def _summary(head: HeadInfo) -> HeadSummary:
    return HeadSummary(
        head=head.name,
        latest_version=head.latest,
        aliases=head.aliases,
        versions=[_version_summary(v) for v in head.versions],
    )
