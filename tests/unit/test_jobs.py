"""Training jobs in the registry: life cycle, tenant scoping, the cancel fence, dead owners."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import update

from service.database import create_registry_engine, upgrade_schema
from service.errors import JobFinished, JobNotFound
from service.jobs import JobStore
from service.registry import utcnow
from service.tables import jobs

STALE = timedelta(seconds=30)
REQUEST = {"kind": "linear", "n_examples": 6}


@pytest.fixture
def engine(database_url):
    engine = create_registry_engine(database_url)
    upgrade_schema(engine)
    yield engine
    engine.dispose()


def store(engine, owner: str = "host:1:a", stale_after: timedelta = STALE) -> JobStore:
    return JobStore(engine, owner=owner, stale_after=stale_after)


def age_heartbeats(engine, seconds: float) -> None:
    """Make every job look as if its owner last beat ``seconds`` ago."""
    with engine.begin() as conn:
        conn.execute(update(jobs).values(heartbeat_at=utcnow() - timedelta(seconds=seconds)))


def test_a_job_runs_through_its_phases_to_success(engine):
    jobs_ = store(engine)
    job = jobs_.create("acme", "intents", "linear", REQUEST)
    assert (job.status, job.phase, job.fraction, job.version) == ("queued", "queued", 0.0, None)
    assert len(job.id) == 32
    assert jobs_.start(job.id, "embedding")
    assert jobs_.record_progress(job.id, "embedding", 0.5)
    seen = jobs_.get("acme", job.id)
    assert (seen.status, seen.phase, seen.fraction) == ("running", "embedding", 0.5)
    assert jobs_.record_progress(job.id, "registering", 0.0)
    jobs_.succeed(job.id, 3, {"head": "intents", "version": 3})
    done = jobs_.get("acme", job.id)
    assert (done.status, done.phase, done.fraction, done.version) == ("succeeded", "done", 1.0, 3)
    assert done.result == {"head": "intents", "version": 3}
    assert done.finished_at is not None and done.finished_at >= done.created_at
    assert done.request == REQUEST


def test_another_tenants_job_does_not_exist(engine):
    jobs_ = store(engine)
    job = jobs_.create("acme", "intents", "linear", REQUEST)
    with pytest.raises(JobNotFound):
        jobs_.get("globex", job.id)
    with pytest.raises(JobNotFound):
        jobs_.cancel("globex", job.id)
    with pytest.raises(JobNotFound):
        jobs_.get("acme", "0" * 32)
    assert jobs_.get("acme", job.id).status == "queued"  # globex's cancel changed nothing


def test_cancel_stops_a_queued_or_running_job_and_refuses_a_finished_one(engine):
    jobs_ = store(engine)
    waiting = jobs_.create("acme", "a", "linear", REQUEST)
    assert jobs_.cancel("acme", waiting.id).status == "cancelled"
    assert not jobs_.start(waiting.id, "embedding")  # the runner then skips it

    running = jobs_.create("acme", "b", "linear", REQUEST)
    jobs_.start(running.id, "embedding")
    cancelled = jobs_.cancel("acme", running.id)
    assert (cancelled.status, cancelled.phase) == ("cancelled", "embedding")
    assert not jobs_.record_progress(running.id, "embedding", 0.9)  # the runner's stop signal
    with pytest.raises(JobFinished, match=r"has finished \(cancelled\)"):
        jobs_.cancel("acme", running.id)

    finished = jobs_.create("acme", "c", "linear", REQUEST)
    jobs_.start(finished.id, "embedding")
    jobs_.succeed(finished.id, 1, {})
    with pytest.raises(JobFinished, match=r"has finished \(succeeded\)"):
        jobs_.cancel("acme", finished.id)


def test_a_registering_job_can_no_longer_be_cancelled(engine):
    jobs_ = store(engine)
    job = jobs_.create("acme", "a", "linear", REQUEST)
    jobs_.start(job.id, "embedding")
    assert jobs_.record_progress(job.id, "registering", 0.0)  # the fence: the runner won
    with pytest.raises(JobFinished, match="too late to cancel"):
        jobs_.cancel("acme", job.id)
    assert jobs_.get("acme", job.id).status == "running"


def test_failure_carries_code_and_message(engine):
    jobs_ = store(engine)
    job = jobs_.create("acme", "a", "linear", REQUEST)
    jobs_.start(job.id, "embedding")
    assert jobs_.fail(job.id, "invalid_examples", "needs two labels")
    failed = jobs_.get("acme", job.id)
    assert (failed.status, failed.error_code, failed.error_message) == (
        "failed",
        "invalid_examples",
        "needs two labels",
    )
    assert not jobs_.fail(job.id, "internal", "again")  # finished jobs stay as they ended


def test_only_jobs_of_silent_owners_are_failed(engine):
    """Two replicas on one database: A is alive and beating, B died; C starts and sweeps."""
    alive, dead = store(engine, "host-a:1:x"), store(engine, "host-b:2:y")
    mine = alive.create("acme", "a", "linear", REQUEST)
    alive.start(mine.id, "embedding")
    theirs = dead.create("acme", "b", "linear", REQUEST)
    dead.start(theirs.id, "embedding")
    queued = dead.create("acme", "c", "linear", REQUEST)
    age_heartbeats(engine, 60)
    assert alive.beat([mine.id, theirs.id]) == 1  # A beats its own; B's process is gone

    newcomer = store(engine, "host-c:3:z")
    assert newcomer.fail_stale() == 2
    assert newcomer.get("acme", mine.id).status == "running"
    for job in (theirs, queued):
        failed = newcomer.get("acme", job.id)
        assert (failed.status, failed.error_code) == ("failed", "job_interrupted")
        assert "no heartbeat for 30 s" in (failed.error_message or "")
    assert newcomer.fail_stale() == 0


def test_reading_a_job_of_a_dead_owner_fails_it(engine):
    jobs_ = store(engine, stale_after=timedelta(seconds=0.2))
    job = jobs_.create("acme", "a", "linear", REQUEST)
    jobs_.start(job.id, "embedding")
    time.sleep(0.3)
    assert jobs_.get("acme", job.id).status == "failed"


def test_shutdown_fails_own_jobs_only(engine):
    a, b = store(engine, "a"), store(engine, "b")
    ours, theirs = (
        a.create("acme", "x", "linear", REQUEST),
        b.create("acme", "y", "linear", REQUEST),
    )
    assert a.fail_own("the server shut down") == 1
    assert a.get("acme", ours.id).error_message == "the server shut down"
    assert b.get("acme", theirs.id).status == "queued"


def test_active_counts_and_pruning(engine):
    jobs_ = store(engine)
    first = jobs_.create("acme", "a", "linear", REQUEST)
    second = jobs_.create("globex", "b", "linear", REQUEST)
    jobs_.start(second.id, "embedding")
    jobs_.create("acme", "c", "linear", REQUEST)
    assert jobs_.active_counts() == {"queued": 2, "running": 1}
    jobs_.cancel("acme", first.id)
    assert jobs_.prune(timedelta(days=7)) == 0
    with engine.begin() as conn:
        conn.execute(
            update(jobs)
            .values(finished_at=utcnow() - timedelta(days=8))
            .where(jobs.c.id == first.id)
        )
    assert jobs_.prune(timedelta(days=7)) == 1
    with pytest.raises(JobNotFound):
        jobs_.get("acme", first.id)
