"""Cross-request micro-batching: inputs from concurrent calls of any tenant share backbone passes.

Each call hands its prepared items (token ids) to :meth:`EmbeddingBatcher.embed` and awaits its
rows. One worker task per process drains the queue one batch at a time: it sorts what is waiting
by cost (token length), cuts the next batch so that its padded size stays under a token budget,
runs it in the backbone process and scatters the rows back to their callers. There is no waiting
window: while a pass runs, new calls queue up and join the choice of the next batch, so a lone
request is served at once and a busy process batches by itself.

Choosing batch by batch, shortest first, is what keeps tenants from stalling each other: a
one-text call that arrives behind another tenant's 256 long texts rides one of the next two
passes instead of waiting for all of them. So that long texts are never starved, every other
pass is taken from the items that have waited ``PATIENCE_S`` (when there are any).

Two lanes keep interactive latency low while a training call embeds hundreds of texts:
``interactive`` items (predict, classify, embed) get ``INTERACTIVE_PER_BULK`` passes for each
pass of ``bulk`` items (training) while both wait, so neither lane starves.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from adapters.base import TokenLayer
from service import metrics
from service.backbone_process import SharedBackbone

T = TypeVar("T")

#: Interactive passes between two bulk (training) passes while both lanes have work.
INTERACTIVE_PER_BULK = 2
#: Items that have waited this long get every other pass, shortest of them first.
PATIENCE_S = 1.0


@dataclass(eq=False)
class _Call:
    """One caller's items and the future its rows go to."""

    future: asyncio.Future[None]
    rows: np.ndarray
    remaining: int
    #: The token states the caller asked for (entering the top layer or leaving it), if any,
    #: and where they go: one per item.
    layer: TokenLayer | None = None
    states: list[np.ndarray] = field(default_factory=list)
    queued_at: float = field(default_factory=time.perf_counter)


@dataclass(eq=False)
class _Slot:
    call: _Call
    index: int
    item: Any
    cost: int


class EmbeddingBatcher:
    def __init__(self, backbone: SharedBackbone, *, max_tokens: int, max_items: int) -> None:
        self.backbone = backbone
        self.max_tokens = max_tokens
        self.max_items = max_items
        self._interactive: list[_Slot] = []
        self._bulk: list[_Slot] = []
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None

    async def embed(self, items: Sequence[Any], *, bulk: bool = False) -> np.ndarray:
        """Features for already prepared ``items``, in order; waits for the shared passes."""
        return (await self._submit(items, bulk, states=None)).rows

    async def embed_states(
        self, items: Sequence[Any], *, bulk: bool = False, layer: TokenLayer = "below_top"
    ) -> list[np.ndarray]:
        """Per item, the token states that enter the backbone's top layer (for tuned heads) or
        leave it (``layer="top"``, for matching heads).

        They ride in the same shared passes as everyone's features: the backbone still runs
        once per batch for all tenants."""
        return (await self._submit(items, bulk, states=layer)).states

    async def _submit(
        self, items: Sequence[Any], bulk: bool, *, states: TokenLayer | None
    ) -> _Call:
        loop = asyncio.get_running_loop()
        call = _Call(
            future=loop.create_future(),
            rows=np.empty((len(items), self.backbone.dim), dtype=np.float32),
            remaining=len(items),
            layer=states,
            states=[np.empty(0)] * len(items) if states else [],
        )
        if not items:
            return call
        slots = [_Slot(call, i, item, self.backbone.cost(item)) for i, item in enumerate(items)]
        (self._bulk if bulk else self._interactive).extend(slots)
        self._ensure_worker(loop).set()
        await call.future
        return call

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    def _ensure_worker(self, loop: asyncio.AbstractEventLoop) -> asyncio.Event:
        if self._worker is None or self._worker.done() or self._worker.get_loop() is not loop:
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._drain(), name="graft-batcher")
        assert self._wakeup is not None
        return self._wakeup

    async def _drain(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            since_bulk = 0
            patient = False
            while self._interactive or self._bulk:
                if self._interactive and (since_bulk < INTERACTIVE_PER_BULK or not self._bulk):
                    await self._run(self._take(self._interactive, patient=patient))
                    since_bulk += 1
                    patient = not patient
                else:
                    await self._run(self._take(self._bulk, patient=True))
                    since_bulk = 0

    def _take(self, queue: list[_Slot], *, patient: bool) -> list[_Slot]:
        """Remove and return the next batch of ``queue``: its shortest items, or with
        ``patient``, first the shortest of those that have waited ``PATIENCE_S``, the batch
        then filled up with the shortest of the rest (a pass is never spent half empty)."""
        queue.sort(key=_by_cost)
        order = queue
        if patient:
            cutoff = time.perf_counter() - PATIENCE_S
            waited = [slot for slot in queue if slot.call.queued_at < cutoff]
            order = waited + [slot for slot in queue if slot.call.queued_at >= cutoff]
        batch = first_batch(order, _by_cost, self.max_tokens, self.max_items)
        taken = {id(slot) for slot in batch}
        queue[:] = [slot for slot in queue if id(slot) not in taken]
        return batch

    async def _run(self, batch: list[_Slot]) -> None:
        live = [s for s in batch if not s.call.future.done()]  # callers that gave up are skipped
        if not live:
            return
        now = time.perf_counter()
        for slot in live:
            metrics.BATCH_QUEUE_WAIT.observe(now - slot.call.queued_at)
        metrics.BATCH_SIZE.observe(len(live))
        metrics.BATCH_TOKENS.observe(len(live) * max(s.cost for s in live))
        wanted = [(i, layer) for i, s in enumerate(live) if (layer := s.call.layer) is not None]
        try:
            rows, states = await self.backbone.forward([s.item for s in live], wanted)
        except Exception as exc:  # a failed pass fails only the calls that were in it
            for slot in live:
                if not slot.call.future.done():
                    slot.call.future.set_exception(exc)
            return
        for (i, _layer), state in zip(wanted, states, strict=True):
            live[i].call.states[live[i].index] = state
        for slot, row in zip(live, rows, strict=True):
            call = slot.call
            if call.future.done():
                continue
            call.rows[slot.index] = row
            call.remaining -= 1
            if call.remaining == 0:
                call.future.set_result(None)


def _by_cost(slot: _Slot) -> int:
    return slot.cost


def first_batch(
    ordered: Sequence[T], cost: Callable[[T], int], max_tokens: int, max_items: int
) -> list[T]:
    """The items a batch takes from the front of ``ordered`` (one or two cost-sorted runs):
    greedily, while the batch padded to its longest item stays within ``max_tokens``."""
    batch: list[T] = []
    longest = 0
    for item in ordered:
        if len(batch) >= max_items:
            break
        padded_to = max(longest, cost(item))
        if batch and (len(batch) + 1) * padded_to > max_tokens:
            continue  # a shorter item further on (in the second run) may still fit
        batch.append(item)
        longest = padded_to
    return batch


def cut_batches(
    ordered: Sequence[T], cost: Callable[[T], int], max_tokens: int, max_items: int
) -> Iterator[list[T]]:
    """Split cost-sorted items into the batches :func:`first_batch` takes one after another."""
    rest = list(ordered)
    while rest:
        batch = first_batch(rest, cost, max_tokens, max_items)
        yield batch  # a prefix: in a sorted run, once an item does not fit, no later one does
        rest = rest[len(batch) :]
