"""Tenants' heads at work: train and register, resolve and predict, classify in one call.

This is the layer between the HTTP endpoints and the parts: it embeds through the shared
batcher, fits through ``adapters``, stores through the registry and caches fitted heads per
process. Blocking work (SQL, fitting) runs in worker threads so the event loop keeps batching.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import numpy as np

from adapters import Head, HeadState, TrainingDataError, head_from_state
from adapters.training import TrainingReport, fit_head
from service import metrics
from service.backbone_process import SharedBackbone
from service.batcher import EmbeddingBatcher
from service.cache import HeadCache
from service.errors import BackboneMismatch, InvalidExamples
from service.limits import Limits
from service.registry import HeadInfo, NewVersion, Registry, VersionInfo, VersionRef
from service.settings import Settings

T = TypeVar("T")


@dataclass(frozen=True)
class RankedPrediction:
    label: str | None
    score: float
    top: list[tuple[str, float]]
    abstained: bool = False


def rank(classes: Sequence[str], proba: np.ndarray, top_k: int) -> list[RankedPrediction]:
    """Turn a probability matrix into per-row predictions with the ``top_k`` labels."""
    k = min(top_k, len(classes))
    order = np.argsort(-proba, axis=1, kind="stable")[:, :k]
    results = []
    for row, ranked in zip(proba, order, strict=True):
        top = [(classes[i], float(row[i])) for i in ranked]
        results.append(RankedPrediction(label=top[0][0], score=top[0][1], top=top))
    return results


class HeadService:
    def __init__(
        self,
        settings: Settings,
        backbone: SharedBackbone,
        batcher: EmbeddingBatcher,
        registry: Registry,
        cache: HeadCache,
    ) -> None:
        self.settings = settings
        self.backbone = backbone
        self.batcher = batcher
        self.registry = registry
        self.cache = cache
        self.limits = Limits(settings)

    # -- features ----------------------------------------------------------------------------

    async def embed(self, inputs: Sequence[str], *, bulk: bool = False) -> np.ndarray:
        if bulk:  # large batches: keep tokenisation off the event loop
            items = await anyio.to_thread.run_sync(self.backbone.prepare, inputs)
        else:
            items = self.backbone.prepare(inputs)
        return await self.batcher.embed(items, bulk=bulk)

    async def embed_inputs(self, inputs: Sequence[str]) -> np.ndarray:
        """The /v1/embed path: limits first, then the shared backbone."""
        self.limits.check_inputs(inputs)
        return await self.embed(inputs)

    # -- training ----------------------------------------------------------------------------

    async def fit(
        self, texts: Sequence[str], labels: Sequence[str], kind: str
    ) -> tuple[Head, TrainingReport]:
        """Embed and fit, without storing anything."""
        self.limits.check_examples(texts, labels)
        features = await self.embed(texts, bulk=True)
        try:
            return await anyio.to_thread.run_sync(fit_head, kind, features, labels, texts)
        except TrainingDataError as exc:
            raise InvalidExamples(str(exc), field="examples") from exc

    async def train(
        self, tenant: str, head: str, texts: Sequence[str], labels: Sequence[str], kind: str
    ) -> VersionInfo:
        started = time.perf_counter()
        try:
            fitted, report = await self.fit(texts, labels, kind)
            state = fitted.to_state()
            train_ms = round((time.perf_counter() - started) * 1000, 1)
            new = NewVersion(
                kind=kind,
                labels=list(fitted.classes_),
                n_examples=len(texts),
                backbone=self.backbone.name,
                fingerprint=self.backbone.fingerprint,
                config_json=state.config_json(),
                weights=state.tensor_bytes(),
                report=report.to_dict(),
                train_ms=train_ms,
            )
            info = await anyio.to_thread.run_sync(self._register, tenant, head, new)
        except Exception as exc:
            metrics.TRAININGS.labels(kind, _outcome(exc)).inc()
            raise
        metrics.TRAININGS.labels(kind, "ok").inc()
        metrics.TRAINING_SECONDS.observe(train_ms / 1000)
        metrics.TRAINING_EXAMPLES.observe(len(texts))
        return info

    def _register(self, tenant: str, head: str, new: NewVersion) -> VersionInfo:
        info = self.registry.register_version(
            tenant,
            head,
            new,
            max_heads=self.settings.max_heads_per_tenant,
            keep_versions=self.settings.max_versions_per_head,
        )
        metrics.HEADS_REGISTERED.set(self.registry.count_heads())
        return info

    # -- prediction --------------------------------------------------------------------------

    async def predict(
        self, tenant: str, head: str, version: int | str | None, inputs: Sequence[str], top_k: int
    ) -> tuple[VersionRef, list[RankedPrediction]]:
        try:
            self.limits.check_inputs(inputs)
            ref = await self._read(self.registry.resolve, tenant, head, version)
            fitted = await self._head_for(ref)
            features = await self.embed(inputs)
            predictions = rank(fitted.classes_, fitted.predict_proba(features), top_k)
        except Exception as exc:
            metrics.PREDICTIONS.labels(_outcome(exc)).inc()
            raise
        metrics.PREDICTIONS.labels("ok").inc()
        metrics.PREDICTED_INPUTS.inc(len(inputs))
        return ref, predictions

    async def classify(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        inputs: Sequence[str],
        kind: str,
        top_k: int,
    ) -> tuple[Head, list[RankedPrediction]]:
        self.limits.check_inputs(inputs)
        fitted, _report = await self.fit(texts, labels, kind)
        features = await self.embed(inputs)
        return fitted, rank(fitted.classes_, fitted.predict_proba(features), top_k)

    # -- the registry, off the event loop --------------------------------------------------

    async def _read(self, query: Callable[..., T], *args: Any) -> T:
        if self.registry.reads_are_local:
            return query(*args)
        return await anyio.to_thread.run_sync(query, *args)

    async def list_heads(self, tenant: str) -> list[HeadInfo]:
        return await self._read(self.registry.list_heads, tenant)

    async def get_head(self, tenant: str, head: str) -> HeadInfo:
        return await self._read(self.registry.get_head, tenant, head)

    async def delete(self, tenant: str, head: str, version: int | None) -> list[int]:
        deleted = await anyio.to_thread.run_sync(self.registry.delete, tenant, head, version)
        metrics.HEADS_REGISTERED.set(await anyio.to_thread.run_sync(self.registry.count_heads))
        return deleted

    async def set_alias(self, tenant: str, head: str, alias: str, version: int) -> int | None:
        return await anyio.to_thread.run_sync(self.registry.set_alias, tenant, head, alias, version)

    async def delete_alias(self, tenant: str, head: str, alias: str) -> int:
        return await anyio.to_thread.run_sync(self.registry.delete_alias, tenant, head, alias)

    async def _head_for(self, ref: VersionRef) -> Head:
        if ref.fingerprint != self.backbone.fingerprint:
            raise BackboneMismatch(
                f"version {ref.version} of head {ref.head!r} was trained on backbone "
                f"{ref.fingerprint}, but this server runs {self.backbone.name} "
                f"({self.backbone.fingerprint}); retrain the head on this backbone",
                field="head",
            )
        cached = self.cache.get(ref.id)
        if cached is not None:
            metrics.HEAD_CACHE_HITS.inc()
            return cached
        metrics.HEAD_CACHE_MISSES.inc()
        started = time.perf_counter()
        config_json, weights = await self._read(self.registry.load_weights, ref.id)
        state = HeadState.from_serialized(config_json, weights)
        fitted = head_from_state(state)
        self.cache.put(ref.id, fitted, state.nbytes)
        metrics.HEAD_LOAD_SECONDS.observe(time.perf_counter() - started)
        return fitted


def _outcome(exc: BaseException) -> str:
    status = getattr(exc, "status", 500)
    return "client_error" if 400 <= status < 500 else "server_error"
