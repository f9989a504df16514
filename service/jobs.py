"""Training jobs in the registry database: create, progress, finish, cancel, and find dead ones.

A job row is the one shared truth about a job, so any worker or replica can report or cancel it.
The process that accepted a job runs it (``service.job_runner``) and is its *owner*; it refreshes
the job's ``heartbeat_at`` while the job is queued or running. A job whose heartbeat is older than
``stale_after`` belongs to a process that died (kill -9, lost machine), and is marked ``failed``
by whoever notices first: a process starting up, the periodic sweep, or a read of that job.

Why heartbeats and not "fail every unfinished job at start-up": with several workers or replicas
on one database, a process that starts cannot tell a job of a dead process from one that a live
neighbour is running right now; only the owner's silence can. The price is that a dead job is
reported as failed ``stale_after`` seconds after its process died, not at once.

Cancel and the last step of training race for the same row: cancel only takes a job that has not
entered its ``registering`` phase, and the runner enters that phase only if the job is still
``running``. Both are single conditional UPDATEs, so exactly one of them wins: a cancelled job
never registers a version, and a job that registered one is never reported cancelled.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Executable, Row, delete, func, insert, select, update
from sqlalchemy.exc import OperationalError

from service.database import writer
from service.errors import JobFinished, JobNotFound, Unavailable
from service.registry import as_utc, utcnow
from service.tables import jobs

log = logging.getLogger("graft.jobs")
T = TypeVar("T")

QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
)
ACTIVE = (QUEUED, RUNNING)
#: The phase after which a job can no longer be cancelled (its version is being written).
REGISTERING = "registering"
#: Error code of a job whose process died or shut down while it was queued or running.
INTERRUPTED = "job_interrupted"
#: Error code of a job that failed on a server fault (the stack trace is in the server log).
INTERNAL = "internal"


@dataclass(frozen=True)
class JobInfo:
    id: str
    tenant: str
    head: str
    kind: str
    status: str
    phase: str
    fraction: float
    request: dict[str, Any]
    error_code: str | None
    error_message: str | None
    version: int | None
    result: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE


class JobStore:
    """SQL for the ``jobs`` table; every method blocks (call it from a worker thread)."""

    def __init__(self, engine: Engine, *, owner: str, stale_after: timedelta) -> None:
        self.engine = engine
        self.owner = owner
        self.stale_after = stale_after
        self._writer = writer(engine)

    # -- the owner's side -------------------------------------------------------------------

    def create(self, tenant: str, head: str, kind: str, request: dict[str, Any]) -> JobInfo:
        now = utcnow()
        job_id = uuid.uuid4().hex
        self._execute(
            insert(jobs).values(
                id=job_id,
                tenant=tenant,
                head=head,
                kind=kind,
                status=QUEUED,
                phase=QUEUED,
                fraction=0.0,
                request=request,
                owner=self.owner,
                heartbeat_at=now,
                created_at=now,
                updated_at=now,
            )
        )
        return self._get(job_id)

    def start(self, job_id: str, phase: str) -> bool:
        """queued → running; False if the job was cancelled (or failed) while it waited."""
        return self._advance(job_id, QUEUED, status=RUNNING, phase=phase, fraction=0.0)

    def record_progress(self, job_id: str, phase: str, fraction: float) -> bool:
        """Progress of a running job; False once it is no longer running (cancelled, failed)."""
        return self._advance(job_id, RUNNING, phase=phase, fraction=fraction)

    def is_running(self, job_id: str) -> bool:
        """The cheap check between two progress writes: has someone cancelled the job?"""
        with self.engine.connect() as conn:
            status = conn.execute(select(jobs.c.status).where(jobs.c.id == job_id)).scalar()
        return status == RUNNING

    def succeed(self, job_id: str, version: int, result: dict[str, Any]) -> None:
        # Unconditional: past the registering fence the version exists, whatever a sweep thought.
        now = utcnow()
        self._execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                status=SUCCEEDED,
                phase="done",
                fraction=1.0,
                version=version,
                result=result,
                error_code=None,
                error_message=None,
                updated_at=now,
                finished_at=now,
            )
        )

    def fail(self, job_id: str, code: str, message: str) -> bool:
        failed = _failed(code, message)
        return bool(
            self._execute(
                update(jobs).where(jobs.c.id == job_id, jobs.c.status.in_(ACTIVE)).values(failed)
            )
        )

    def beat(self, job_ids: Collection[str]) -> int:
        """Refresh the heartbeat of the jobs this process is running or holding in its queue
        (only those: a row whose task ended without its last write goes stale and is swept)."""
        return self._execute(
            update(jobs)
            .where(
                jobs.c.owner == self.owner,
                jobs.c.id.in_(list(job_ids)),
                jobs.c.status.in_(ACTIVE),
            )
            .values(heartbeat_at=utcnow())
        )

    def inactive(self, job_ids: Collection[str]) -> set[str]:
        """Those of ``job_ids`` that are no longer queued or running (cancelled, or finished)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.id).where(jobs.c.id.in_(list(job_ids)), jobs.c.status.not_in(ACTIVE))
            )
            return {row.id for row in rows}

    def fail_own(self, message: str) -> int:
        """At shutdown: this owner's unfinished jobs cannot finish any more."""
        return self._execute(
            update(jobs)
            .where(jobs.c.owner == self.owner, jobs.c.status.in_(ACTIVE))
            .values(_failed(INTERRUPTED, message))
        )

    # -- anyone's side ----------------------------------------------------------------------

    def get(self, tenant: str, job_id: str) -> JobInfo:
        """The tenant's job; another tenant's job is indistinguishable from none."""
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id, jobs.c.tenant == tenant))
            found = row.first()
        if found is None:
            raise JobNotFound(f"no job {job_id!r}", field="job")
        if self._is_stale(found):
            self.fail_stale()  # its process died: say so now rather than at the next sweep
            return self._get(job_id)
        return _job_info(found)

    def list(
        self, tenant: str, *, head: str | None = None, status: str | None = None, limit: int = 20
    ) -> list[JobInfo]:
        """The tenant's jobs, newest first, of one head or in one status if asked."""
        query = select(jobs).where(jobs.c.tenant == tenant)
        if head is not None:
            query = query.where(jobs.c.head == head)
        if status is not None:
            query = query.where(jobs.c.status == status)
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        if any(self._is_stale(row) for row in rows):
            self.fail_stale()  # as get does: a dead process's job is reported failed now
            return self.list(tenant, head=head, status=status, limit=limit)
        return [_job_info(row) for row in rows]

    def cancel(self, tenant: str, job_id: str) -> JobInfo:
        def cancel(conn: Connection) -> str:
            now = utcnow()
            taken = conn.execute(
                update(jobs)
                .where(
                    jobs.c.id == job_id,
                    jobs.c.tenant == tenant,
                    jobs.c.status.in_(ACTIVE),
                    jobs.c.phase != REGISTERING,
                )
                .values(status=CANCELLED, updated_at=now, finished_at=now)
            ).rowcount
            row = conn.execute(
                select(jobs.c.status, jobs.c.phase).where(
                    jobs.c.id == job_id, jobs.c.tenant == tenant
                )
            ).first()
            if row is None:
                raise JobNotFound(f"no job {job_id!r}", field="job")
            if not taken:
                if row.status in ACTIVE:
                    raise JobFinished(
                        f"job {job_id} is registering its version; it is too late to cancel",
                        field="job",
                    )
                raise JobFinished(f"job {job_id} has finished ({row.status})", field="job")
            return job_id

        return self._get(self._write(cancel))

    def fail_stale(self) -> int:
        """Fail every queued or running job whose owner has been silent too long (it died)."""
        cutoff = utcnow() - self.stale_after
        stale = (jobs.c.status.in_(ACTIVE), jobs.c.heartbeat_at < cutoff)
        with self.engine.connect() as conn:  # a read first: the common answer is "none"
            if not conn.execute(select(func.count()).select_from(jobs).where(*stale)).scalar():
                return 0
        seconds = round(self.stale_after.total_seconds())
        message = (
            f"the server process running this job stopped (no heartbeat for {seconds} s); "
            "submit the job again"
        )
        failed = self._execute(update(jobs).where(*stale).values(_failed(INTERRUPTED, message)))
        if failed:
            log.warning("jobs of a stopped process marked failed", extra={"jobs": failed})
        return failed

    def prune(self, older_than: timedelta) -> int:
        """Forget finished jobs older than ``older_than``."""
        cutoff = utcnow() - older_than
        return self._execute(
            delete(jobs).where(jobs.c.finished_at.is_not(None), jobs.c.finished_at < cutoff)
        )

    def active_counts(self) -> dict[str, int]:
        """Queued and running jobs over all tenants (for the metrics)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(jobs.c.status, func.count())
                .where(jobs.c.status.in_(ACTIVE))
                .group_by(jobs.c.status)
            ).all()
        counts = dict.fromkeys(ACTIVE, 0)
        counts.update({status: int(n) for status, n in rows})
        return counts

    # -- plumbing ---------------------------------------------------------------------------

    def _advance(self, job_id: str, expected: str, **values: Any) -> bool:
        """Move a job on if it is still ``expected``; a write by its owner, so a heartbeat too."""
        now = utcnow()
        return bool(
            self._execute(
                update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status == expected)
                .values(**values, heartbeat_at=now, updated_at=now)
            )
        )

    def _is_stale(self, row: Row[Any]) -> bool:
        """An unfinished job whose process has not beaten for ``stale_after``: it died."""
        return row.status in ACTIVE and as_utc(row.heartbeat_at) < utcnow() - self.stale_after

    def _get(self, job_id: str) -> JobInfo:
        with self.engine.connect() as conn:
            return _job_info(conn.execute(select(jobs).where(jobs.c.id == job_id)).one())

    def _execute(self, statement: Executable) -> int:
        """One statement in its own write transaction; the number of rows it touched."""
        return int(self._write(lambda conn: conn.execute(statement).rowcount))

    def _write(self, work: Callable[[Connection], T]) -> T:
        try:
            with self._writer.begin() as conn:
                return work(conn)
        except OperationalError as exc:
            if "locked" in str(exc).lower():
                raise Unavailable("the registry is busy; retry the request") from exc
            raise


def _failed(code: str, message: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "status": FAILED,
        "error_code": code,
        "error_message": message,
        "updated_at": now,
        "finished_at": now,
    }


def _job_info(row: Row[Any]) -> JobInfo:
    return JobInfo(
        id=row.id,
        tenant=row.tenant,
        head=row.head,
        kind=row.kind,
        status=row.status,
        phase=row.phase,
        fraction=float(row.fraction),
        request=dict(row.request),
        error_code=row.error_code,
        error_message=row.error_message,
        version=row.version,
        result=dict(row.result) if row.result is not None else None,
        created_at=as_utc(row.created_at),
        updated_at=as_utc(row.updated_at),
        finished_at=as_utc(row.finished_at) if row.finished_at is not None else None,
    )
