"""The Graft BentoML service: one short method per endpoint (decode, call one function, encode)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from functools import partial

import anyio
import bentoml

from adapters.scope import labels_of
from service import bentoml_metrics
from service.auth import Caller, KeyInfo
from service.endpoint import endpoint
from service.gateway import Gateway
from service.heads import RankedPrediction, counted_as_training
from service.jobs import JobInfo
from service.logs import configure_logging
from service.metrics import forget_dead_workers, registry_exposition
from service.progress import TrainingProgress
from service.registry import HeadInfo, VersionInfo
from service.runtime import Runtime
from service.schemas import (
    AliasDeleteRequest,
    AliasRequest,
    AliasResponse,
    BackboneInfo,
    ClassifyRequest,
    ClassifyResponse,
    CreatedKey,
    DeleteRequest,
    DeleteResponse,
    EmbedRequest,
    EmbedResponse,
    EvaluateRequest,
    EvaluateResponse,
    HeadRequest,
    HeadsResponse,
    HeadSummary,
    JobError,
    JobListRequest,
    JobProgress,
    JobRequest,
    JobResponse,
    JobsResponse,
    KeyCreateRequest,
    KeyListRequest,
    KeyRevokeRequest,
    KeysResponse,
    KeySummary,
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

log = logging.getLogger("graft")


# BentoML's own access log is off: the gateway writes one structured line per request instead.
@bentoml.service(name="Graft", traffic={"timeout": 600}, logging={"access": {"enabled": False}})
class Graft:
    """Transfer learning as a service: one frozen backbone, many tenants' heads."""

    def __init__(self) -> None:
        settings = Settings()
        configure_logging(settings)
        forget_dead_workers()  # the worker this one replaces, if it was killed
        self.runtime = Runtime.start(settings)
        self.settings = settings
        self.auth = self.runtime.auth
        self.heads = self.runtime.heads

    def __is_ready__(self) -> bool:
        return True  # __init__ returns only once the backbone is loaded and warmed up

    @bentoml.on_shutdown
    def close(self) -> None:
        self.runtime.close()

    def __metrics__(self, exposition: str) -> str:
        """BentoML's /metrics hook: add the gauges that are facts of the shared registry."""
        try:
            counted = registry_exposition(
                self.runtime.registry.count_heads(), self.runtime.jobs.store.active_counts()
            )
        except Exception:  # the database is away: still serve every process metric
            log.exception("could not count heads and jobs for /metrics")
            return exposition
        return exposition + counted

    @endpoint("/v1/heads/train", TrainRequest, TrainResponse)
    async def train(self, request: TrainRequest, caller: Caller) -> TrainResponse:
        """Train a head on the frozen backbone's features and register it as a new version."""
        return await self._train(request, caller)

    async def _train(
        self, request: TrainRequest, caller: Caller, progress: TrainingProgress | None = None
    ) -> TrainResponse:
        """The one training path, of /v1/heads/train and of training jobs alike."""
        texts = [example.input for example in request.examples]
        labels = [example.target for example in request.examples]
        info = await self.heads.train(
            caller.tenant,
            request.head,
            texts,
            labels,
            request.kind,
            progress,
            abstain=request.abstain,
            base_version=request.base_version,
            descriptions=request.label_descriptions,
        )
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
            caller.tenant,
            request.head,
            request.version,
            request.inputs,
            request.top_k,
            request.abstain_threshold,
        )
        return PredictResponse(head=ref.head, version=ref.version, predictions=_encode(ranked))

    @endpoint("/v1/heads/evaluate", EvaluateRequest, EvaluateResponse)
    async def evaluate(self, request: EvaluateRequest, caller: Caller) -> EvaluateResponse:
        """Accuracy, macro-F1, per-label metrics, confusion matrix and calibration of a version
        on labelled examples; stores nothing."""
        ref, found = await self.heads.evaluate(
            caller.tenant,
            request.head,
            request.version,
            [example.input for example in request.examples],
            [example.target for example in request.examples],
            request.abstain_threshold,
        )
        return EvaluateResponse(head=ref.head, version=ref.version, **asdict(found))

    @endpoint("/v1/classify", ClassifyRequest, ClassifyResponse)
    async def classify(self, request: ClassifyRequest, caller: Caller) -> ClassifyResponse:
        """Train in memory from the examples, label the inputs, store nothing."""
        texts = [example.input for example in request.examples]
        labels = [example.target for example in request.examples]
        fitted, ranked = await self.heads.classify(
            texts, labels, request.inputs, request.kind, request.top_k, request.label_descriptions
        )
        return ClassifyResponse(
            kind=fitted.kind, labels=labels_of(fitted.classes_), predictions=_encode(ranked)
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

    @endpoint("/v1/aliases/set", AliasRequest, AliasResponse)
    async def set_alias(self, request: AliasRequest, caller: Caller) -> AliasResponse:
        """Point an alias (production, canary, ...) at a version; moving it is atomic."""
        previous = await self.heads.set_alias(
            caller.tenant, request.head, request.alias, request.version
        )
        return AliasResponse(
            head=request.head, alias=request.alias, version=request.version, previous=previous
        )

    @endpoint("/v1/aliases/delete", AliasDeleteRequest, AliasResponse)
    async def delete_alias(self, request: AliasDeleteRequest, caller: Caller) -> AliasResponse:
        """Remove an alias; the version it pointed at stays."""
        previous = await self.heads.delete_alias(caller.tenant, request.head, request.alias)
        return AliasResponse(
            head=request.head, alias=request.alias, version=None, previous=previous
        )

    @endpoint("/v1/jobs/train", TrainRequest, JobResponse)
    async def start_training_job(self, request: TrainRequest, caller: Caller) -> JobResponse:
        """Queue a training job (same body as /v1/heads/train) and answer its id at once."""
        texts = [example.input for example in request.examples]
        labels = [example.target for example in request.examples]
        with counted_as_training(request.kind):
            await self.heads.check_training(
                texts,
                labels,
                request.kind,
                request.abstain,
                with_base=request.base_version is not None,
                descriptions=request.label_descriptions,
            )

        async def run(progress: TrainingProgress) -> TrainResponse:
            return await self._train(request, caller, progress)

        summary = {"kind": request.kind, "n_examples": len(texts)}
        jobs = self.runtime.jobs
        job = await jobs.submit(caller.tenant, request.head, request.kind, summary, run)
        return _job_response(job)

    @endpoint("/v1/jobs/get", JobRequest, JobResponse)
    async def get_job(self, request: JobRequest, caller: Caller) -> JobResponse:
        """A training job's status, progress, and on success the version it registered."""
        store = self.runtime.jobs.store
        job = await anyio.to_thread.run_sync(store.get, caller.tenant, request.job)
        return _job_response(job)

    @endpoint("/v1/jobs/list", JobListRequest, JobsResponse)
    async def list_jobs(self, request: JobListRequest, caller: Caller) -> JobsResponse:
        """The tenant's training jobs, newest first (finished ones until they are pruned)."""
        found = await anyio.to_thread.run_sync(
            partial(
                self.runtime.jobs.store.list,
                caller.tenant,
                head=request.head,
                status=request.status,
                limit=request.limit,
            )
        )
        # Without each result (a version's whole report): /v1/jobs/get has it.
        return JobsResponse(jobs=[_job_response(job, with_result=False) for job in found])

    @endpoint("/v1/jobs/cancel", JobRequest, JobResponse)
    async def cancel_job(self, request: JobRequest, caller: Caller) -> JobResponse:
        """Cancel a queued or running job; it stops at its next checkpoint, registering nothing."""
        job = await anyio.to_thread.run_sync(
            self.runtime.jobs.store.cancel, caller.tenant, request.job
        )
        self.runtime.jobs.stop_local(job.id)  # the job may run in this very process
        return _job_response(job)

    @endpoint("/v1/admin/keys/create", KeyCreateRequest, CreatedKey)
    async def create_key(self, request: KeyCreateRequest, caller: Caller) -> CreatedKey:
        """Issue an API key for a tenant (admin key only); the key is in this answer only."""
        issued = await anyio.to_thread.run_sync(self.runtime.keys.create, request.tenant)
        return CreatedKey(
            tenant=issued.tenant, key=issued.key, prefix=issued.prefix, created=issued.created
        )

    @endpoint("/v1/admin/keys/list", KeyListRequest, KeysResponse)
    async def list_keys(self, request: KeyListRequest, caller: Caller) -> KeysResponse:
        """Every key (or one tenant's), by prefix; never the keys themselves."""
        found = await anyio.to_thread.run_sync(self.runtime.keys.list, request.tenant)
        return KeysResponse(keys=[_key_summary(key) for key in found])

    @endpoint("/v1/admin/keys/revoke", KeyRevokeRequest, KeySummary)
    async def revoke_key(self, request: KeyRevokeRequest, caller: Caller) -> KeySummary:
        """Revoke a key by its prefix: the next request with it answers 401."""
        revoked = await anyio.to_thread.run_sync(self.runtime.keys.revoke, request.prefix)
        return _key_summary(revoked)

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
bentoml_metrics.install()


def _job_response(job: JobInfo, *, with_result: bool = True) -> JobResponse:
    error = None
    if job.error_code is not None:
        error = JobError(code=job.error_code, message=job.error_message or "")
    return JobResponse(
        job=job.id,
        head=job.head,
        kind=job.kind,
        status=job.status,
        progress=JobProgress(phase=job.phase, fraction=job.fraction),
        n_examples=int(job.request.get("n_examples", 0)),
        created=job.created_at,
        updated=job.updated_at,
        finished=job.finished_at,
        error=error,
        version=job.version,
        result=TrainResponse.model_validate(job.result) if with_result and job.result else None,
    )


def _key_summary(key: KeyInfo) -> KeySummary:
    return KeySummary(
        tenant=key.tenant, prefix=key.prefix, created=key.created, revoked=key.revoked
    )


def _encode(ranked: list[RankedPrediction]) -> list[Prediction]:
    return [
        Prediction(
            label=p.label,
            score=p.score,
            abstained=p.abstained,
            top=[ScoredLabel(label=label, score=score) for label, score in p.top],
            labels=p.labels,
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
