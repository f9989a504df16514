"""Tenants' heads at work: train and register, resolve and predict, classify in one call.

This is the layer between the HTTP endpoints and the parts: it embeds through the shared
batcher, fits through ``adapters``, stores through the registry and caches fitted heads per
process. Blocking work (SQL, fitting) runs in worker threads so the event loop keeps batching.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import anyio
import numpy as np

from adapters import (
    HEAD_KINDS,
    Head,
    HeadState,
    TextFeatures,
    TokenStates,
    TopLayer,
    TrainingDataError,
    head_from_state,
)
from adapters.base import TokenLayer
from adapters.evaluation import Evaluation, check_truth, evaluate_head
from adapters.scope import answers, label_columns, labels_of
from adapters.selection import Features
from adapters.stopping import FitStopped, stoppable
from adapters.training import (
    Abstain,
    TrainingReport,
    check_abstain_option,
    check_label_count,
    check_label_form,
    fit_head,
)
from service import metrics
from service.backbone_process import SharedBackbone
from service.batcher import EmbeddingBatcher
from service.cache import HeadCache
from service.errors import (
    AliasNotFound,
    BackboneMismatch,
    BadRequest,
    HeadNotFound,
    InvalidExamples,
    KindNotSupported,
    VersionNotFound,
)
from service.limits import Limits
from service.progress import EMBED_CHUNK, TrainingProgress, TrainingStopped
from service.registry import HeadInfo, NewVersion, Registry, VersionInfo, VersionRef
from service.schemas import InputItem
from service.settings import Settings
from service.training_data import TrainingSet, training_set

T = TypeVar("T")

#: Why a kind that reads texts cannot learn on an image backbone.
_LEARN_FROM_TEXTS = {
    "hybrid": "learn from the words of texts",
    "matching": "match the tokens of texts",
}

log = logging.getLogger("graft.training")


@contextmanager
def _refused_on(field: str) -> Iterator[None]:
    """The learning side's refusal of the caller's data, as a 400 naming ``field``."""
    try:
        yield
    except TrainingDataError as exc:
        raise InvalidExamples(str(exc), field=field) from exc


@dataclass(frozen=True)
class RankedPrediction:
    label: str | None
    score: float
    top: list[tuple[str, float]]
    abstained: bool = False
    labels: list[str] | None = None


def rank(
    head: Head, proba: np.ndarray, top_k: int, threshold: float | None = None
) -> list[RankedPrediction]:
    """Per-row predictions with the ``top_k`` labels of a probability matrix.

    A single-label head abstains (``label=None``) where its top probability is under
    ``threshold`` (the call's, else the head's own), or where its out-of-scope class is
    likelier than every label; that class is never ranked. A multilabel head answers every
    label at or over its per-label threshold, and abstains when there is none.
    """
    classes = head.classes_
    if threshold is None:
        threshold = head.abstain_threshold_
    cut = None
    if head.multilabel:
        cut = head.params["threshold"] if threshold is None else threshold
    columns = label_columns(classes)
    k = min(top_k, len(columns))
    order = columns[np.argsort(-proba[:, columns], axis=1, kind="stable")[:, :k]]
    _best, scores = answers(classes, proba)
    results = []
    for row, ranked, score in zip(proba, order, scores, strict=True):
        top = [(classes[i], float(row[i])) for i in ranked]
        label: str | None = top[0][0]
        labels = None
        if cut is not None:
            labels = [classes[i] for i in np.argsort(-row, kind="stable") if row[i] >= cut]
            abstained = not labels
        else:
            abstained = score < (threshold or 0.0)
        results.append(
            RankedPrediction(
                label=None if abstained else label,
                score=top[0][1],
                top=top,
                abstained=abstained,
                labels=labels,
            )
        )
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

    async def _prepare(self, inputs: Sequence[InputItem], *, bulk: bool, field: str) -> list[Any]:
        """Backbone items of ``inputs``; a bad one is refused naming ``{field}.{index}``."""
        if bulk or self.backbone.prepare_off_loop:  # large batches, or images to decode
            return await anyio.to_thread.run_sync(self.backbone.prepare, inputs, field)
        return self.backbone.prepare(inputs, field)

    async def embed(
        self, inputs: Sequence[InputItem], *, bulk: bool = False, field: str = "inputs"
    ) -> np.ndarray:
        """Features of ``inputs``."""
        items = await self._prepare(inputs, bulk=bulk, field=field)
        return await self.batcher.embed(items, bulk=bulk)

    async def token_states(
        self,
        inputs: Sequence[InputItem],
        layer: TokenLayer,
        *,
        bulk: bool = False,
        field: str = "inputs",
    ) -> TokenStates:
        """What tuned and matching heads read: the token states that enter the backbone's top
        layer (``"below_top"``) or leave it (``"top"``)."""
        items = await self._prepare(inputs, bulk=bulk, field=field)
        self._check_token_budget(items, field)
        return TokenStates.from_rows(await self.batcher.embed_states(items, bulk=bulk, layer=layer))

    def _check_token_budget(self, items: Sequence[list[int]], field: str) -> None:
        self.limits.check_token_states(len(items), max(map(len, items), default=0), field)

    async def head_inputs(
        self, head: Head, inputs: Sequence[InputItem], *, bulk: bool = False, field: str = "inputs"
    ) -> Features:
        """What ``head`` predicts from: pooled features, token states for a tuned or matching
        head, or features with their texts for a hybrid head."""
        if head.token_layer is not None:
            return await self.token_states(inputs, head.token_layer, bulk=bulk, field=field)
        features = await self.embed(inputs, bulk=bulk, field=field)
        if head.takes_texts:  # counting n-grams is Python per character: off the event loop
            texts = [str(text) for text in inputs]
            return await anyio.to_thread.run_sync(TextFeatures.of, features, texts)
        return features

    def _top_layer(self) -> TopLayer:
        top = self.backbone.top_layer
        if top is None:
            raise KindNotSupported(
                f"this server's backbone ({self.backbone.name}) has no transformer layer to tune; "
                "train a linear, mlp, prototype, multilabel or auto head instead",
                field="kind",
            )
        return top

    def _check_reads_texts(self, kind: str) -> None:
        if self.backbone.kind != "text":
            raise KindNotSupported(
                f"this server's backbone ({self.backbone.name}) reads images, and {kind} heads "
                f"{_LEARN_FROM_TEXTS[kind]}; train a linear, mlp, prototype, multilabel or "
                "auto head instead",
                field="kind",
            )

    async def embed_inputs(self, inputs: Sequence[InputItem]) -> np.ndarray:
        """The /v1/embed path: limits first, then the shared backbone."""
        self.limits.check_inputs(inputs)
        return await self.embed(inputs)

    # -- training ----------------------------------------------------------------------------

    async def fit(
        self,
        texts: Sequence[InputItem],
        labels: Sequence[Any],
        kind: str,
        progress: TrainingProgress | None = None,
        *,
        abstain: Abstain = False,
        base: TrainingSet | None = None,
        descriptions: Mapping[str, str] | None = None,
    ) -> tuple[Head, TrainingReport, TrainingSet]:
        """Embed and fit (on ``base``'s examples too, if given), without storing anything.

        ``descriptions`` (label to text) are embedded with the examples and taught as rows
        that no estimate scores; each replaces the base's description of its label."""
        descriptions = descriptions or {}
        await self.check_training(
            texts,
            labels,
            kind,
            abstain,
            with_base=base is not None,
            count_tokens=False,
            descriptions=descriptions,
        )
        if base is not None:
            _check_grows_into(base, kind)
            self.limits.check_training_set(
                base.n_examples + len(texts),
                base.labels + list(labels),
                "examples",
                with_base=True,
            )
            with _refused_on("abstain"):
                check_abstain_option(kind, base.example_labels + list(labels), abstain)
            _check_described(descriptions, base.labels + list(labels))
            base = base.without_descriptions_of(descriptions)
        inputs = [*texts, *descriptions.values()]
        row_labels = [*labels, *descriptions]
        cls = HEAD_KINDS.get(kind)
        layer = cls.token_layer if cls is not None else None
        with_texts = cls is not None and cls.takes_texts
        top = self._top_layer() if layer == "below_top" else None  # where a tuned head starts
        if with_texts and base is not None:
            base.kept_texts()  # a base that kept no texts is refused before any embedding
        features: np.ndarray | TokenStates
        if not inputs:  # a new version from its base's examples alone: nothing to embed
            empty = np.zeros((0, self.backbone.dim), dtype=np.float32)
            features = TokenStates.from_rows([]) if layer else empty
            if progress is not None:
                await progress.phase("fitting")
        elif progress is None and layer:
            features = await self.token_states(inputs, layer, bulk=True, field="examples")
        elif progress is None:
            features = await self.embed(inputs, bulk=True, field="examples")
        else:
            features = await self._embed_reporting(inputs, progress, layer=layer)
            await progress.phase("fitting")
        data = training_set(
            features,
            row_labels,
            inputs,
            keep_texts=with_texts,
            descriptions=len(descriptions),
            token_layer=layer or "below_top",
        )
        if base is not None:
            data = base.extended(data)
            if layer:  # the new examples alone were checked before embedding
                assert isinstance(data.features, TokenStates)
                n_inputs, longest = data.features.hidden.shape[:2]
                self.limits.check_token_states(n_inputs, longest, "base_version")
        if top is not None:
            data = data.with_top(top)

        def fit_on_a_worker() -> tuple[Head, TrainingReport]:
            # A cancelled job's fit stops at its next step, and gives the job slot back; a
            # hybrid head's n-grams are counted here too, off the event loop.
            with stoppable(progress.stopped if progress is not None else None):
                learns_from = data.with_texts() if with_texts else data.features
                budget_s = self.settings.auto_budget_s
                return fit_head(
                    kind,
                    learns_from,
                    data.labels,
                    data.digests,
                    abstain=abstain,
                    budget_s=budget_s,
                    teach_only=data.teach_only_mask(),
                    on_progress=progress.fitted if progress is not None else None,
                )

        try:
            # What the fit refuses is in the examples, or in the base's when none were sent.
            with _refused_on("examples" if texts or base is None else "base_version"):
                head, report = await anyio.to_thread.run_sync(fit_on_a_worker)
        except FitStopped as exc:
            log.info("training stopped part-way through fitting", extra={"kind": kind})
            raise TrainingStopped() from exc
        return head, report, data

    async def check_training(
        self,
        texts: Sequence[InputItem],
        labels: Sequence[Any],
        kind: str,
        abstain: Abstain,
        *,
        with_base: bool,
        count_tokens: bool = True,
        descriptions: Mapping[str, str] | None = None,
    ) -> None:
        """What a training would refuse before it embeds anything: a job's mistakes are a 400
        when it is submitted, not a failed job later. (The checks that need a base version's
        examples are made when the training runs; ``count_tokens=False`` leaves a tuned head's
        token budget to the embedding pass, which tokenises anyway.)"""
        descriptions = descriptions or {}
        if not texts and not with_base:
            raise BadRequest(
                "examples: at least one example is needed (none only with a base_version, whose "
                "examples the new version then learns from alone)",
                field="examples",
            )
        self.limits.check_examples(texts, labels)
        cls = HEAD_KINDS.get(kind)
        if cls is not None and cls.token_layer == "below_top":
            self._top_layer()  # a backbone that cannot serve the kind
        elif cls is not None and (cls.takes_texts or cls.token_layer is not None):
            self._check_reads_texts(kind)
        with _refused_on("examples"):
            check_label_form(kind, labels)
        if descriptions:
            self.limits.check_descriptions(descriptions)
            if kind == "multilabel":
                raise InvalidExamples(
                    "multilabel heads take no label descriptions; teach each label by examples",
                    field="label_descriptions",
                )
        if not with_base:  # a base's examples may give a label its second example, or a label
            with _refused_on("examples"):
                check_label_count(kind, labels)
            with _refused_on("abstain"):
                check_abstain_option(kind, labels, abstain)
            _check_described(descriptions, labels)
        if count_tokens and cls is not None and cls.token_layer is not None:
            # The descriptions are embedded with the examples, so they share the budget.
            everything = [*texts, *descriptions.values()]
            items = await self._prepare(everything, bulk=True, field="examples")
            self._check_token_budget(items, "examples")

    async def _embed_reporting(
        self, texts: Sequence[InputItem], progress: TrainingProgress, *, layer: TokenLayer | None
    ) -> np.ndarray | TokenStates:
        """Embed chunk by chunk, reporting after each one (where a cancelled job stops); token
        states of ``layer`` where a kind reads those."""
        items = await self._prepare(texts, bulk=True, field="examples")
        if layer:
            self._check_token_budget(items, "examples")
        features = np.empty((len(items), self.backbone.dim), dtype=np.float32)
        states: list[np.ndarray] = []
        for start in range(0, len(items), EMBED_CHUNK):
            chunk = items[start : start + EMBED_CHUNK]
            if layer:
                states.extend(await self.batcher.embed_states(chunk, bulk=True, layer=layer))
            else:
                features[start : start + len(chunk)] = await self.batcher.embed(chunk, bulk=True)
            await progress.embedded(start + len(chunk), len(items))
        if layer:
            return TokenStates.from_rows(states)
        return features

    async def train(
        self,
        tenant: str,
        head: str,
        texts: Sequence[InputItem],
        labels: Sequence[Any],
        kind: str,
        progress: TrainingProgress | None = None,
        *,
        abstain: Abstain = False,
        base_version: int | str | None = None,
        descriptions: Mapping[str, str] | None = None,
    ) -> VersionInfo:
        """Embed, fit and register; ``progress`` (a training job's) hears of each step.

        With ``base_version``, the new version learns from that version's examples as well
        as from these; the base's features are reused, not recomputed.
        """
        started = time.perf_counter()
        with counted_as_training(kind):
            base = None
            grown_from: dict[str, int] = {}
            if base_version is not None:
                number, base = await self._training_set_of(tenant, head, base_version)
                grown_from["base_version"] = number  # the report says what it grew from
            fitted, report, data = await self.fit(
                texts, labels, kind, progress, abstain=abstain, base=base, descriptions=descriptions
            )
            state = fitted.to_state()
            train_ms = round((time.perf_counter() - started) * 1000, 1)
            new = NewVersion(
                kind=fitted.kind,
                labels=labels_of(fitted.classes_),
                n_examples=data.n_examples,
                backbone=self.backbone.name,
                fingerprint=self.backbone.fingerprint,
                config_json=state.config_json(),
                weights=state.tensor_bytes(),
                report={**report.to_dict(), **grown_from},
                train_ms=train_ms,
                training_data=data.to_bytes(),
            )
            if progress is not None:
                await progress.phase("registering")  # past this, a job can no longer be cancelled
            info = await anyio.to_thread.run_sync(self._register, tenant, head, new)
        metrics.TRAININGS.labels(kind, "ok").inc()
        metrics.TRAINING_SECONDS.observe(train_ms / 1000)
        metrics.TRAINING_EXAMPLES.observe(len(texts))
        return info

    async def _training_set_of(
        self, tenant: str, head: str, version: int | str
    ) -> tuple[int, TrainingSet]:
        """The version ``version`` resolves to (a number or an alias), and its training set."""
        try:
            ref = await self._read(self.registry.resolve, tenant, head, version)
        except (VersionNotFound, AliasNotFound) as exc:
            exc.field = "base_version"  # the request's name for the version it could not find
            raise
        except HeadNotFound as exc:
            raise HeadNotFound(
                f"{exc.message}, so it has no version {version!r} to add to; train it without "
                '"base_version" first',
                field="head",
            ) from None
        self._check_backbone(ref)
        stored = await self._read(self.registry.load_training_data, ref.id)
        if stored is None:
            raise InvalidExamples(
                f"version {ref.version} of head {head!r} was trained before Graft kept training "
                "sets; train it again with all its examples",
                field="base_version",
            )
        return ref.version, TrainingSet.from_bytes(stored)

    def _register(self, tenant: str, head: str, new: NewVersion) -> VersionInfo:
        return self.registry.register_version(
            tenant,
            head,
            new,
            max_heads=self.settings.max_heads_per_tenant,
            keep_versions=self.settings.max_versions_per_head,
        )

    # -- prediction --------------------------------------------------------------------------

    async def predict(
        self,
        tenant: str,
        head: str,
        version: int | str | None,
        inputs: Sequence[InputItem],
        top_k: int,
        abstain_threshold: float | None = None,
    ) -> tuple[VersionRef, list[RankedPrediction]]:
        try:
            self.limits.check_inputs(inputs)
            ref = await self._read(self.registry.resolve, tenant, head, version)
            fitted = await self._head_for(ref)
            features = await self.head_inputs(fitted, inputs)
            proba = await self._proba(fitted, features)
            predictions = rank(fitted, proba, top_k, abstain_threshold)
        except Exception as exc:
            metrics.PREDICTIONS.labels(_outcome(exc)).inc()
            raise
        metrics.PREDICTIONS.labels("ok").inc()
        metrics.PREDICTED_INPUTS.inc(len(inputs))
        return ref, predictions

    async def classify(
        self,
        texts: Sequence[InputItem],
        labels: Sequence[Any],
        inputs: Sequence[InputItem],
        kind: str,
        top_k: int,
        descriptions: Mapping[str, str] | None = None,
    ) -> tuple[Head, list[RankedPrediction]]:
        self.limits.check_inputs(inputs)
        fitted, _report, _data = await self.fit(texts, labels, kind, descriptions=descriptions)
        features = await self.head_inputs(fitted, inputs)
        return fitted, rank(fitted, await self._proba(fitted, features), top_k)

    async def evaluate(
        self,
        tenant: str,
        head: str,
        version: int | str | None,
        inputs: Sequence[InputItem],
        labels: Sequence[Any],
        abstain_threshold: float | None = None,
    ) -> tuple[VersionRef, Evaluation]:
        """Score a stored version on labelled examples it may never have seen."""
        self.limits.check_examples(inputs, labels)
        ref = await self._read(self.registry.resolve, tenant, head, version)
        fitted = await self._head_for(ref)
        with _refused_on("examples"):
            check_truth(fitted, labels)  # before the embedding pass it would waste
        features = await self.head_inputs(fitted, inputs, bulk=True, field="examples")
        proba = await anyio.to_thread.run_sync(fitted.predict_proba, features)
        found = await anyio.to_thread.run_sync(
            partial(evaluate_head, fitted, proba, list(labels), abstain_threshold)
        )
        return ref, found

    async def _proba(self, head: Head, features: Features) -> np.ndarray:
        """A frozen-feature head's matrix product runs here; a tuned head's transformer layer
        and a matching head's token matching (milliseconds per input) and a hybrid head's
        n-gram counting run off the event loop so that batching goes on meanwhile."""
        if head.token_layer is not None or head.takes_texts:
            return await anyio.to_thread.run_sync(head.predict_proba, features)
        return head.predict_proba(features)

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
        return await anyio.to_thread.run_sync(self.registry.delete, tenant, head, version)

    async def set_alias(self, tenant: str, head: str, alias: str, version: int) -> int | None:
        return await anyio.to_thread.run_sync(self.registry.set_alias, tenant, head, alias, version)

    async def delete_alias(self, tenant: str, head: str, alias: str) -> int:
        return await anyio.to_thread.run_sync(self.registry.delete_alias, tenant, head, alias)

    def _check_backbone(self, ref: VersionRef) -> None:
        if ref.fingerprint != self.backbone.fingerprint:
            raise BackboneMismatch(
                f"version {ref.version} of head {ref.head!r} was trained on backbone "
                f"{ref.fingerprint}, but this server runs {self.backbone.name} "
                f"({self.backbone.fingerprint}); retrain the head on this backbone",
                field="head",
            )

    async def _head_for(self, ref: VersionRef) -> Head:
        self._check_backbone(ref)
        cached = self.cache.get(ref.id)
        if cached is not None:
            metrics.HEAD_CACHE_HITS.inc()
            return cached
        metrics.HEAD_CACHE_MISSES.inc()
        started = time.perf_counter()
        config_json, weights = await self._read(self.registry.load_weights, ref.id)
        state = HeadState.from_serialized(config_json, weights)
        fitted = head_from_state(state)
        self.cache.put(ref.id, fitted, fitted.resident_bytes(state.nbytes))
        metrics.HEAD_CACHE_BYTES.set(self.cache.nbytes)
        metrics.HEAD_LOAD_SECONDS.observe(time.perf_counter() - started)
        return fitted


def _check_grows_into(base: TrainingSet, kind: str) -> None:
    """A multilabel base grows only into a multilabel head, and a single-label one into any
    other kind: said first, before a mismatch shows up as some other check's puzzling refusal."""
    lists = any(isinstance(label, tuple) for label in base.labels)
    if lists and kind != "multilabel":
        raise InvalidExamples(
            "the base version is a multilabel head's (its examples carry lists of labels): "
            'send "kind": "multilabel" and "labels" lists, or train this kind with all its '
            "examples",
            field="base_version",
        )
    if not lists and kind == "multilabel" and base.labels:
        raise InvalidExamples(
            "the base version's examples carry single labels, and a multilabel head learns "
            "from lists of labels: train it with all its examples as lists",
            field="base_version",
        )


def _check_described(descriptions: Mapping[str, str], labels: Sequence[Any]) -> None:
    """A description teaches a label that has examples; one of a label that has none is most
    likely a misspelt label, and would train a label from a few words alone."""
    known = {str(label) for label in labels}
    unknown = [label for label in descriptions if label not in known]
    if unknown:
        shown = ", ".join(repr(label) for label in unknown[:3]) + (
            ", ..." if len(unknown) > 3 else ""
        )
        raise InvalidExamples(
            f"label_descriptions describe label(s) with no examples: {shown}; a description "
            "adds to a label's examples, it does not replace them",
            field="label_descriptions",
        )


@contextmanager
def counted_as_training(kind: str) -> Iterator[None]:
    """A failure raised inside counts as a training of ``kind`` that ended so: a training's
    own, and a job's checks at submit, which stand for the training it would have run."""
    try:
        yield
    except Exception as exc:
        metrics.TRAININGS.labels(kind, _outcome(exc)).inc()
        raise


def _outcome(exc: BaseException) -> str:
    if isinstance(exc, TrainingStopped):
        return "cancelled"
    status = getattr(exc, "status", 500)
    return "client_error" if 400 <= status < 500 else "server_error"
