"""Runs training jobs inside the server process that accepted them, one at a time, off the request.

A job is an asyncio task on the worker's event loop: embedding goes through the same batcher as
every other call (its bulk lane, so predictions keep flowing), while the blocking parts (SQL,
tokenising, fitting) run in worker threads, so the loop is never held. One job runs at a time per
process (the backbone is the bottleneck, and two jobs would only interleave); the others wait
``queued``, at most ``GRAFT_MAX_QUEUED_JOBS`` per process, because a waiting job keeps its
examples in memory.

A daemon thread beats the heartbeat of this process's jobs every ``GRAFT_JOB_HEARTBEAT_SECONDS``
and now and then fails the jobs of processes that went silent (see ``service.jobs``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import anyio

from service import metrics
from service.errors import GraftError, Unavailable
from service.jobs import CANCELLED, FAILED, INTERNAL, SUCCEEDED, JobInfo, JobStore
from service.progress import TrainingProgress, TrainingStopped
from service.schemas import TrainResponse

log = logging.getLogger("graft.jobs")

#: A job unheard of for this many heartbeats belongs to a process that died.
STALE_BEATS = 6
#: Every this many heartbeats, look for (and fail) the jobs of processes that died.
SWEEP_BEATS = 6
#: Finished jobs are forgotten after this long.
RETENTION = timedelta(days=7)
#: Least time between two progress writes of one job; between them, each checkpoint checks for
#: a cancel with a read (no write lock), so a cancel from any process stops the next chunk.
PROGRESS_INTERVAL_S = 0.5
#: While a head is fitted, least time between two reads of whether its job was cancelled.
STOP_READ_INTERVAL_S = 1.0

Training = Callable[[TrainingProgress], Awaitable[TrainResponse]]


def process_owner_id() -> str:
    """Names this process in the jobs table: host and pid for people, a nonce against pid reuse."""
    return f"{socket.gethostname()[:80]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def stale_after(heartbeat_seconds: float) -> timedelta:
    return timedelta(seconds=heartbeat_seconds * STALE_BEATS)


class JobRunner:
    def __init__(self, store: JobStore, *, heartbeat_seconds: float, max_queued: int) -> None:
        self.store = store
        self.heartbeat_seconds = heartbeat_seconds
        self.max_queued = max_queued
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping: set[str] = set()  # cancelled through this process: stop at once
        self._started: set[str] = set()  # holding the one-job slot; the others wait for it
        self._creating = 0  # submits writing their job's row: their queue places are taken
        self._loop: asyncio.AbstractEventLoop | None = None
        self._one_at_a_time: asyncio.Semaphore | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._maintain, name="graft-jobs", daemon=True)

    def start(self) -> None:
        """At process start-up: fail the jobs of dead processes, forget old ones, start beating."""
        self.store.fail_stale()
        self.store.prune(RETENTION)
        self._thread.start()

    def close(self) -> None:
        self._closed.set()
        if self._tasks:
            self.store.fail_own(
                "the server shut down while the job was queued or running; submit it again"
            )

    async def submit(
        self, tenant: str, head: str, kind: str, request: dict[str, Any], train: Training
    ) -> JobInfo:
        """Record a queued job and start it in the background; answers at once."""
        held = len(self._tasks) + self._creating
        if held >= self.max_queued:
            raise Unavailable(
                f"this server process already has {held} training jobs queued or running "
                "(GRAFT_MAX_QUEUED_JOBS); retry later"
            )
        # The place is taken before the row is written: concurrent submits each await that
        # write, and counting only the started tasks let 24 of them past a limit of 8.
        self._creating += 1
        try:
            job = await anyio.to_thread.run_sync(self.store.create, tenant, head, kind, request)
        finally:
            self._creating -= 1
        self._loop = asyncio.get_running_loop()
        task = self._loop.create_task(self._run(job, train), name=f"job-{job.id}")
        self._tasks[job.id] = task
        task.add_done_callback(lambda _: self._forget(job.id))
        return job

    def stop_local(self, job_id: str) -> None:
        """A cancel of a job this process holds: a running one stops at its next checkpoint; a
        queued one at once, so that it gives its place in the queue back."""
        task = self._tasks.get(job_id)
        if task is None:
            return
        self._stopping.add(job_id)
        if job_id not in self._started:
            task.cancel()

    def _forget(self, job_id: str) -> None:
        self._tasks.pop(job_id, None)
        self._stopping.discard(job_id)
        self._started.discard(job_id)

    async def _run(self, job: JobInfo, train: Training) -> None:
        started = time.perf_counter()
        status, version, error = FAILED, None, None
        try:
            if self._one_at_a_time is None:
                self._one_at_a_time = asyncio.Semaphore(1)
            async with self._one_at_a_time:
                self._started.add(job.id)  # before any await: stop_local no longer cancels it
                if job.id in self._stopping or not await anyio.to_thread.run_sync(
                    self.store.start, job.id, "embedding"
                ):
                    raise TrainingStopped()
                response = await train(_JobProgress(self, job.id))
            version = response.version
            await anyio.to_thread.run_sync(
                self.store.succeed, job.id, version, response.model_dump(mode="json")
            )
            status = SUCCEEDED
        except TrainingStopped:
            status = CANCELLED
        except asyncio.CancelledError:
            if job.id not in self._stopping:
                raise  # not a cancelled job: the event loop itself is shutting down
            status = CANCELLED  # cancelled while queued
        except GraftError as exc:  # the caller's data or a limit: the job says which
            error = exc.code
            await self._fail(job.id, exc.code, exc.message)
        except Exception:
            log.exception("training job failed", extra={"job": job.id, "tenant": job.tenant})
            error = INTERNAL
            await self._fail(
                job.id, INTERNAL, "the training failed on the server; the server log has details"
            )
        finally:
            metrics.JOBS.labels(status).inc()
            log.info(
                "job finished",
                extra={
                    "job": job.id,
                    "tenant": job.tenant,
                    "head": job.head,
                    "kind": job.kind,
                    "n_examples": job.request.get("n_examples"),
                    "status": status,
                    "version": version,
                    "error": error,
                    "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                },
            )

    async def _fail(self, job_id: str, code: str, message: str) -> None:
        try:
            await anyio.to_thread.run_sync(self.store.fail, job_id, code, message)
        except Exception:  # the row stays active, unbeaten: a sweep fails it soon
            log.exception("could not record a failed job", extra={"job": job_id})

    def _stop_queued_jobs_cancelled_elsewhere(self, held: list[str]) -> None:
        """A queued job cancelled through another process or replica gives its place back
        within a heartbeat (a running one reads its cancel at its own checkpoints)."""
        queued = [job_id for job_id in held if job_id not in self._started]
        loop = self._loop
        if not queued or loop is None or loop.is_closed():
            return
        for job_id in self.store.inactive(queued):
            loop.call_soon_threadsafe(self.stop_local, job_id)

    def _maintain(self) -> None:
        beats = 0
        while not self._closed.wait(self.heartbeat_seconds):
            beats += 1
            try:
                held = list(self._tasks)  # a copy: the event loop changes the dict
                if held:
                    self.store.beat(held)
                    self._stop_queued_jobs_cancelled_elsewhere(held)
                if beats % SWEEP_BEATS == 0:
                    self.store.fail_stale()
            except Exception:  # a database hiccup must not end the heartbeat
                log.exception("job heartbeat failed")


class _JobProgress:
    """A job's :class:`TrainingProgress`: writes progress, and stops a job that was cancelled."""

    def __init__(self, runner: JobRunner, job_id: str) -> None:
        self.runner = runner
        self.job_id = job_id
        self._last_write = 0.0
        self._last_read = 0.0
        self._ended_elsewhere = False

    async def embedded(self, done: int, total: int) -> None:
        self._stop_if_cancelled_here()
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_INTERVAL_S or done == total:
            self._last_write = now
            await self._record("embedding", done / total if total else 1.0)
        elif not await anyio.to_thread.run_sync(self.runner.store.is_running, self.job_id):
            raise TrainingStopped()  # cancelled through another process: a read tells us

    async def phase(self, name: str) -> None:
        self._stop_if_cancelled_here()
        await self._record(name, 0.0)

    def stopped(self) -> bool:
        # Asked often, on the fitting thread: a cancel that reached this process is a set
        # lookup; one that reached another process or replica costs a read, so one a second.
        if self.job_id in self.runner._stopping or self._ended_elsewhere:
            return True
        now = time.monotonic()
        if now - self._last_read < STOP_READ_INTERVAL_S:
            return False
        self._last_read = now
        try:
            return not self.runner.store.is_running(self.job_id)
        except Exception:  # a database hiccup must not fail the fit; the next read may tell
            log.warning("could not read whether job %s was cancelled", self.job_id, exc_info=True)
            return False

    def fitted(self, fraction: float) -> None:
        # On the fitting thread, between folds: a write at most every PROGRESS_INTERVAL_S, and
        # none that can fail the fit (the next one, or the phase after it, will tell).
        now = time.monotonic()
        if now - self._last_write < PROGRESS_INTERVAL_S and fraction < 1.0:
            return
        self._last_write = now
        try:
            if not self.runner.store.record_progress(self.job_id, "fitting", fraction):
                self._ended_elsewhere = True  # cancelled through another process: stop now
        except Exception:
            log.warning("could not record job %s's progress", self.job_id, exc_info=True)

    def _stop_if_cancelled_here(self) -> None:
        if self.job_id in self.runner._stopping:
            raise TrainingStopped()

    async def _record(self, phase: str, fraction: float) -> None:
        # The write is also the check for a cancel that reached another process or replica.
        still_running = await anyio.to_thread.run_sync(
            self.runner.store.record_progress, self.job_id, phase, fraction
        )
        if not still_running:
            raise TrainingStopped()
