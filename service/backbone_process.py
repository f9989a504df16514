"""The backbone process: one child per server process that owns the frozen model's weights.

Why a process and not a thread: a forward pass through a transformers model takes the GIL back
between every operation, so in a thread it competes with the event loop that parses requests,
and under load each hand-over can wait a full switch interval. Why not a separate BentoML service
through ``bentoml.depends``: one more HTTP hop per batch, and it measured slower than both (see
the README, "Where the backbone runs"). The batching stays in the server process, which sends each
finished batch down a pipe and reads the rows back when the event loop sees them arrive; nothing
else crosses.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from adapters.base import TokenLayer
from adapters.tuned import TopLayer
from service.backbone import BackboneInfo, Inputs, Model
from service.errors import Unavailable
from service.settings import Settings

log = logging.getLogger("graft.backbone")

#: How long the child may take to load and warm up the model.
START_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class ModelSpec:
    """Everything the child needs to load the model (plain values: it crosses a process)."""

    kind: str
    name: str
    dtype: str  # "auto", "float32" or "bfloat16"
    threads: int


def load_model(spec: ModelSpec) -> Model:
    """The frozen model of ``spec``, in this process."""
    from service.backbone import TextModel, resolve_torch_dtype, text_model_dir

    dtype = resolve_torch_dtype(spec.dtype)
    if spec.kind == "image":
        from service.vision import ImageModel

        return ImageModel(spec.name, dtype=dtype)
    return TextModel(text_model_dir(spec.name), name=spec.name, dtype=dtype)


def _serve(connection: Connection, spec: ModelSpec) -> None:
    """The child: load, report, then answer one batch at a time until the parent goes away."""
    from service.backbone import configure_torch_threads

    configure_torch_threads(spec.threads)
    model = load_model(spec)
    model.warm_up()
    connection.send(model.info)
    while True:
        try:
            items, wanted = connection.recv()
        except (EOFError, OSError):
            return  # the server process is gone: so are we
        try:
            if wanted:
                connection.send(("ok", model.forward_with_states(items, wanted)))
            else:
                connection.send(("ok", (model.forward(items), [])))
        except Exception as exc:  # reported to the callers of this batch, not fatal here
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


class BackboneProcess:
    """The server process's end: starts the child, sends batches, restarts a child that died."""

    def __init__(self, spec: ModelSpec) -> None:
        self.spec = spec
        self._context = multiprocessing.get_context("spawn")  # not fork: we may run threads
        self._lock: asyncio.Lock | None = None
        self._start()

    def _start(self) -> None:
        self._connection, child_end = self._context.Pipe()
        self._child = self._context.Process(
            target=_serve, args=(child_end, self.spec), name="graft-backbone", daemon=True
        )
        self._child.start()
        child_end.close()
        self._starting = True  # its first message, the model's description, is still to come
        self._unread = 0  # answers to batches whose caller was cancelled while waiting

    def wait_ready(self) -> BackboneInfo:
        """Block until the child has loaded and warmed up the model; its description."""
        if not self._connection.poll(START_TIMEOUT_S):
            raise RuntimeError(f"the backbone process did not start in {START_TIMEOUT_S:.0f} s")
        return self._started(self._recv_or_fail())

    def _recv_or_fail(self) -> Any:
        try:
            return self._connection.recv()
        except EOFError:
            raise RuntimeError("the backbone process exited while loading the model") from None

    def _started(self, info: BackboneInfo) -> BackboneInfo:
        self.info = info
        self._starting = False
        log.info(
            "backbone %s loaded in its own process (pid %d): dim=%d dtype=%s fingerprint=%s "
            "threads=%d",
            self.info.name,
            self._child.pid,
            self.info.dim,
            self.info.dtype,
            self.info.fingerprint,
            self.spec.threads,
        )
        return self.info

    async def forward(
        self, items: Sequence[Any], wanted: Sequence[tuple[int, TokenLayer]] = ()
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        """One batch through the child, one batch at a time, in call order: the features, and
        per ``(row, layer)`` in ``wanted`` that item's token states (entering the top layer, or
        leaving it)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            try:
                if self._starting:  # a restarted child: wait for it to load, off the event loop
                    self._started(await self._receive())
                for _ in range(self._unread):  # answers nobody waits for any more
                    await self._receive()
                self._unread = 0
                self._connection.send((list(items), list(wanted)))
                try:
                    status, payload = await self._receive()
                except asyncio.CancelledError:
                    self._unread += 1  # its answer will still arrive: skip it next time
                    raise
            except (EOFError, OSError) as exc:
                self._restart()
                raise Unavailable("the backbone process stopped; it is restarting, retry") from exc
        if status != "ok":
            raise RuntimeError(f"backbone forward pass failed: {payload}")
        features, states = payload
        return np.asarray(features), states

    async def _receive(self) -> Any:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        descriptor = self._connection.fileno()

        def readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(descriptor, readable)
        try:
            await ready
        finally:
            loop.remove_reader(descriptor)
        return self._connection.recv()

    def _restart(self) -> None:
        log.error("the backbone process (pid %s) died; starting a new one", self._child.pid)
        self._connection.close()
        self._child.join(timeout=5)
        self._start()  # the next forward waits for it to be ready

    def close(self) -> None:
        self._connection.close()  # the child reads EOF and exits
        self._child.join(timeout=10)
        if self._child.is_alive():
            self._child.terminate()


class SharedBackbone:
    """The server process's handle on the backbone: inputs are prepared here, passes run there."""

    def __init__(self, inputs: Inputs, process: BackboneProcess, info: BackboneInfo) -> None:
        self.inputs = inputs
        self.process = process
        self.info = info

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def fingerprint(self) -> str:
        return self.info.fingerprint

    @property
    def dim(self) -> int:
        return self.info.dim

    @property
    def prepare_off_loop(self) -> bool:
        return self.inputs.prepare_off_loop

    def prepare(self, inputs: Sequence[Any], field: str = "inputs") -> list[Any]:
        return self.inputs.prepare(inputs, field)

    @functools.cached_property
    def top_layer(self) -> TopLayer | None:
        """Read on first use (a few megabytes): only tuned heads need it."""
        return self.inputs.top_layer()

    def cost(self, item: Any) -> int:
        return self.inputs.cost(item)

    async def forward(
        self, items: Sequence[Any], wanted: Sequence[tuple[int, TokenLayer]] = ()
    ) -> tuple[np.ndarray, list[np.ndarray]]:
        return await self.process.forward(items, wanted)

    def close(self) -> None:
        self.process.close()


def start_backbone(settings: Settings) -> SharedBackbone:
    """Start the backbone process and load the input side here while it loads the weights."""
    if settings.backbone_kind == "image":
        from service.vision import set_child_environment

        set_child_environment()  # before the child starts: its OpenMP reads it once, at import
    process = BackboneProcess(
        ModelSpec(
            kind=settings.backbone_kind,
            name=settings.backbone_name,
            dtype=settings.backbone_dtype,
            threads=settings.threads_per_worker,
        )
    )
    inputs = load_inputs(settings)
    return SharedBackbone(inputs, process, process.wait_ready())


def load_inputs(settings: Settings) -> Inputs:
    if settings.backbone_kind == "image":
        from service.vision import ImageInputs

        return ImageInputs(settings)
    from service.backbone import TextInputs, text_model_dir

    return TextInputs(text_model_dir(settings.backbone_name), max_tokens=settings.max_tokens)
