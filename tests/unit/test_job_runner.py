"""The job runner with a stand-in training: one at a time, checkpoints, cancel, failures."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import anyio
import pytest

from service.database import create_registry_engine, upgrade_schema
from service.errors import InvalidExamples, Unavailable
from service.job_runner import JobRunner
from service.jobs import JobStore
from service.progress import TrainingProgress
from service.schemas import BackboneInfo, TrainResponse

BACKBONE = BackboneInfo(kind="text", name="test", fingerprint="sha256:test", dim=4)


@pytest.fixture
def runner(tmp_path):
    engine = create_registry_engine(f"sqlite:///{tmp_path / 'graft.db'}")
    upgrade_schema(engine)
    store = JobStore(engine, owner="test:1:a", stale_after=timedelta(seconds=30))
    runner = JobRunner(store, heartbeat_seconds=0.05, max_queued=2)
    runner.start()
    yield runner
    runner.close()
    engine.dispose()


def training(steps: int, *, gate: asyncio.Event | None = None, seen: list[int] | None = None):
    """A training that embeds ``steps`` chunks (waiting at ``gate`` before each), then fits."""

    async def train(progress: TrainingProgress) -> TrainResponse:
        for step in range(1, steps + 1):
            if gate is not None:
                await gate.wait()
                gate.clear()
            if seen is not None:
                seen.append(step)
            await progress.embedded(step, steps)
        await progress.phase("fitting")
        await progress.phase("registering")
        return TrainResponse(
            head="h",
            version=7,
            kind="linear",
            labels=["a", "b"],
            n_examples=steps,
            train_ms=1.0,
            backbone=BACKBONE,
            report={},
        )

    return train


async def until(condition, timeout: float = 60.0) -> None:
    """Waits for ``condition``; the bound is generous because CI machines can be very busy."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def test_jobs_run_one_at_a_time_and_record_their_result(runner):
    async def scenario():
        first = await runner.submit("acme", "h", "linear", {"n_examples": 3}, training(3))
        second = await runner.submit("acme", "h", "linear", {"n_examples": 2}, training(2))
        with pytest.raises(Unavailable, match="GRAFT_MAX_QUEUED_JOBS"):
            await runner.submit("acme", "h", "linear", {}, training(1))
        await until(lambda: not runner._tasks)
        return first, second

    first, second = asyncio.run(scenario())
    for job in (first, second):
        done = runner.store.get("acme", job.id)
        assert (done.status, done.version, done.result["version"]) == ("succeeded", 7, 7)


def test_cancel_stops_at_the_next_checkpoint_and_never_registers(runner):
    seen: list[int] = []

    async def scenario():
        gate = asyncio.Event()
        job = await runner.submit("acme", "h", "linear", {}, training(10, gate=gate, seen=seen))
        gate.set()
        await until(lambda: runner.store.get("acme", job.id).fraction > 0)
        runner.store.cancel("acme", job.id)  # as from another process: only the database knows
        gate.set()
        await until(lambda: not runner._tasks)
        return job

    job = asyncio.run(scenario())
    state = runner.store.get("acme", job.id)
    assert (state.status, state.phase, state.version) == ("cancelled", "embedding", None)
    assert seen == [1, 2]  # the second checkpoint saw the cancel: no third chunk


@pytest.mark.parametrize("where", ["this process", "another process"])
def test_a_queued_job_that_is_cancelled_gives_its_place_back_at_once(runner, where):
    async def scenario():
        gate = asyncio.Event()
        first = await runner.submit("acme", "h", "linear", {}, training(2, gate=gate))
        queued = await runner.submit("acme", "h", "linear", {}, training(1))
        with pytest.raises(Unavailable):  # max_queued=2
            await runner.submit("acme", "h", "linear", {}, training(1))
        runner.store.cancel("acme", queued.id)
        if where == "this process":
            runner.stop_local(queued.id)
        # Another process's cancel is read by the heartbeat (every 0.05 s here).
        await until(lambda: queued.id not in runner._tasks)
        assert runner.store.get("acme", first.id).status == "running"  # still holds the slot
        third = await runner.submit("acme", "h", "linear", {}, training(1))
        while first.id in runner._tasks:
            gate.set()
            await asyncio.sleep(0.01)
        await until(lambda: not runner._tasks)
        return first, queued, third

    first, queued, third = asyncio.run(scenario())
    statuses = [runner.store.get("acme", job.id).status for job in (first, queued, third)]
    assert statuses == ["succeeded", "cancelled", "succeeded"]


def fitting_until_stopped(steps: list[int]):
    """A training whose fit, on a worker thread as a real one runs, steps until told to stop
    (it would take 20 minutes otherwise)."""

    async def train(progress: TrainingProgress) -> TrainResponse:
        await progress.phase("fitting")

        def fit() -> None:
            for step in range(1, 120_001):
                if progress.stopped():
                    return
                steps.append(step)
                time.sleep(0.01)

        await anyio.to_thread.run_sync(fit)
        await progress.phase("registering")
        raise AssertionError("a stopped fit went on to register")

    return train


@pytest.mark.parametrize("where", ["this process", "another process"])
def test_a_cancel_reaches_a_fit_between_its_steps(runner, where):
    steps: list[int] = []

    async def scenario():
        job = await runner.submit("acme", "h", "linear", {}, fitting_until_stopped(steps))
        await until(lambda: len(steps) >= 3)
        runner.store.cancel("acme", job.id)
        if where == "this process":
            runner.stop_local(job.id)
        await until(lambda: not runner._tasks)
        return job

    job = asyncio.run(scenario())
    state = runner.store.get("acme", job.id)
    assert (state.status, state.phase, state.version) == ("cancelled", "fitting", None)
    assert len(steps) < 120_000


def test_a_refusal_fails_the_job_with_its_code(runner):
    async def refuse(progress: TrainingProgress) -> TrainResponse:
        raise InvalidExamples("linear heads need at least 2 labels", field="examples")

    async def crash(progress: TrainingProgress) -> TrainResponse:
        raise RuntimeError("a bug")

    async def scenario():
        jobs = [
            await runner.submit("acme", "h", "linear", {}, refuse),
            await runner.submit("acme", "h", "linear", {}, crash),
        ]
        await until(lambda: not runner._tasks)
        return jobs

    refused, crashed = asyncio.run(scenario())
    assert runner.store.get("acme", refused.id).error_code == "invalid_examples"
    internal = runner.store.get("acme", crashed.id)
    assert (internal.error_code, internal.error_message) == (
        "internal",
        "the training failed on the server; the server log has details",
    )


def test_heartbeats_keep_a_long_job_alive_and_shutdown_fails_it(runner):
    runner.store.stale_after = timedelta(seconds=0.3)

    async def scenario():
        gate = asyncio.Event()
        job = await runner.submit("acme", "h", "linear", {}, training(2, gate=gate))
        await asyncio.sleep(0.6)  # twice the stale age, beaten every 0.05 s
        assert runner.store.get("acme", job.id).status == "running"
        runner.close()
        return job

    job = asyncio.run(scenario())
    state = runner.store.get("acme", job.id)
    assert (state.status, state.error_code) == ("failed", "job_interrupted")
    assert "shut down" in (state.error_message or "")


def test_concurrent_submits_cannot_pass_the_queue_limit(runner):
    async def scenario():
        gate = asyncio.Event()  # never set: the jobs hold their places
        tries = [runner.submit("acme", "h", "linear", {}, training(1, gate=gate)) for _ in range(6)]
        found = await asyncio.gather(*tries, return_exceptions=True)
        for job in found:
            if not isinstance(job, Exception):
                runner.store.cancel("acme", job.id)
                runner.stop_local(job.id)
        while runner._tasks:  # the running one stops at its next checkpoint
            gate.set()
            await asyncio.sleep(0.01)
        return found

    found = asyncio.run(scenario())
    # Each submit awaits its row's write; before, all 6 were let in past max_queued=2.
    assert sum(not isinstance(job, Exception) for job in found) == 2
    assert sum(isinstance(job, Unavailable) for job in found) == 4
