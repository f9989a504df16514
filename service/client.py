"""A small typed Python client of Graft's HTTP API; the ``graft`` CLI and the tests use it.

    with GraftClient("http://127.0.0.1:3000", key="gk_...") as graft:
        graft.train("intents", [{"text": "Where is my card?", "label": "card_arrival"}, ...])
        graft.predict("intents", ["I lost my card"]).predictions[0].label

Answers are the service's own pydantic models (``service.schemas``), so a field renamed on the
server is a type error here, not a silent ``KeyError``. Every error answer raises
:class:`GraftAPIError` with Graft's stable ``code``; a server that cannot be reached raises
:class:`GraftUnreachable`. Fields the client does not name (new training options) pass through
``**options`` unchanged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from service.schemas import (
    DeleteResponse,
    EvaluateResponse,
    HeadsResponse,
    HeadSummary,
    JobResponse,
    JobsResponse,
    PredictResponse,
    TrainResponse,
)

DEFAULT_URL = "http://127.0.0.1:3000"
#: Job states after which nothing changes any more.
FINISHED = ("succeeded", "failed", "cancelled")
#: Bytes per chunk of an upload whose progress is reported.
UPLOAD_CHUNK = 64 * 1024

ModelT = TypeVar("ModelT", bound=BaseModel)
#: Called as ``on_upload(bytes_sent, bytes_total)`` while a request body is sent.
UploadProgress = Callable[[int, int], None]
#: Called with each new state of a job while :meth:`GraftClient.wait_for_job` polls it.
JobProgress = Callable[[JobResponse], None]


class GraftClientError(Exception):
    """Anything that kept a call from getting an answer from Graft."""


class GraftUnreachable(GraftClientError):
    """No HTTP answer at all: the server is down, the URL is wrong, or the call timed out."""

    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(f"cannot reach Graft at {url}: {cause}")
        self.url = url
        self.cause = cause


class GraftAPIError(GraftClientError):
    """An error answer: its HTTP status, Graft's stable code, the message and the field."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.details = dict(details or {})

    @classmethod
    def from_response(cls, response: httpx.Response) -> GraftAPIError:
        try:
            error = response.json()["error"]
            details = {k: v for k, v in error.items() if k not in ("code", "message", "field")}
            return cls(
                response.status_code,
                str(error["code"]),
                str(error["message"]),
                error.get("field"),
                details,
            )
        except (ValueError, KeyError, TypeError):  # not Graft's JSON shape (a proxy, a 500)
            text = response.text.strip()[:200] or response.reason_phrase
            return cls(response.status_code, f"http_{response.status_code}", text)


class GraftClient:
    def __init__(
        self,
        url: str = DEFAULT_URL,
        *,
        key: str | None = None,
        tenant: str | None = None,
        timeout: float = 600.0,
        http: httpx.Client | None = None,
    ) -> None:
        """``key`` authenticates (and decides the tenant); ``tenant`` is sent as X-Tenant-ID
        for servers running with GRAFT_AUTH=off. ``http`` replaces the HTTP client (tests pass
        an in-process one)."""
        self.url = url.rstrip("/")
        self._headers = {"Content-Type": "application/json"}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        if tenant:
            self._headers["X-Tenant-ID"] = tenant
        self._owns_http = http is None
        self._http = http or httpx.Client(base_url=self.url, timeout=timeout)

    def close(self) -> None:
        if self._owns_http:  # a client handed in belongs to whoever made it
            self._http.close()

    def __enter__(self) -> GraftClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- heads -----------------------------------------------------------------------------

    def train(
        self,
        head: str,
        examples: Sequence[Mapping[str, Any]],
        *,
        kind: str | None = None,
        on_upload: UploadProgress | None = None,
        **options: Any,
    ) -> TrainResponse:
        """Train a head in one call (it answers once the version is registered)."""
        body = _training_body(head, examples, kind, options)
        return self._call("/v1/heads/train", body, TrainResponse, on_upload)

    def predict(
        self,
        head: str,
        inputs: Sequence[Any],
        *,
        version: int | str | None = None,
        top_k: int = 3,
        **options: Any,
    ) -> PredictResponse:
        body = {"head": head, "inputs": list(inputs), "version": version, "top_k": top_k}
        return self._call("/v1/predict", {**body, **options}, PredictResponse)

    def evaluate(
        self,
        head: str,
        examples: Sequence[Mapping[str, Any]],
        *,
        version: int | str | None = None,
        on_upload: UploadProgress | None = None,
        **options: Any,
    ) -> EvaluateResponse:
        """Accuracy, macro-F1, per-label metrics and the confusion matrix of a head on
        labelled examples; stores nothing."""
        body = {"head": head, "version": version, "examples": list(examples), **options}
        return self._call("/v1/heads/evaluate", body, EvaluateResponse, on_upload)

    def list_heads(self) -> HeadsResponse:
        return self._call("/v1/heads/list", {}, HeadsResponse)

    def get_head(self, head: str) -> HeadSummary:
        return self._call("/v1/heads/get", {"head": head}, HeadSummary)

    def delete_head(self, head: str, version: int | None = None) -> DeleteResponse:
        return self._call("/v1/heads/delete", {"head": head, "version": version}, DeleteResponse)

    # -- training jobs ---------------------------------------------------------------------

    def start_training_job(
        self,
        head: str,
        examples: Sequence[Mapping[str, Any]],
        *,
        kind: str | None = None,
        on_upload: UploadProgress | None = None,
        **options: Any,
    ) -> JobResponse:
        """Queue a training job; answers at once with its id (``.job``)."""
        body = _training_body(head, examples, kind, options)
        return self._call("/v1/jobs/train", body, JobResponse, on_upload)

    def get_job(self, job: str) -> JobResponse:
        return self._call("/v1/jobs/get", {"job": job}, JobResponse)

    def list_jobs(
        self, *, head: str | None = None, status: str | None = None, limit: int = 20
    ) -> JobsResponse:
        body = {"head": head, "status": status, "limit": limit}
        return self._call("/v1/jobs/list", body, JobsResponse)

    def cancel_job(self, job: str) -> JobResponse:
        return self._call("/v1/jobs/cancel", {"job": job}, JobResponse)

    def wait_for_job(
        self,
        job: str,
        *,
        on_progress: JobProgress | None = None,
        timeout: float | None = None,
        poll_seconds: float = 0.25,
    ) -> JobResponse:
        """Poll until the job has succeeded, failed or been cancelled; its last state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        wait = poll_seconds
        while True:
            state = self.get_job(job)
            if on_progress is not None:
                on_progress(state)
            if state.status in FINISHED:
                return state
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job} is still {state.status} after {timeout} s")
            time.sleep(wait)
            wait = min(wait * 1.5, 2.0)  # quick for short jobs, gentle for long ones

    # -- plumbing --------------------------------------------------------------------------

    def _call(
        self,
        path: str,
        body: Mapping[str, Any],
        model: type[ModelT],
        on_upload: UploadProgress | None = None,
    ) -> ModelT:
        return model.model_validate(self._post(path, body, on_upload).json())

    def _post(
        self, path: str, body: Mapping[str, Any], on_upload: UploadProgress | None = None
    ) -> httpx.Response:
        payload = json.dumps(body, ensure_ascii=False).encode()
        content: bytes | Iterator[bytes] = payload
        if on_upload is not None:
            content = _reporting_chunks(payload, on_upload)
        try:
            response = self._http.post(
                path,
                content=content,
                headers={**self._headers, "Content-Length": str(len(payload))},
            )
        except httpx.TransportError as exc:
            raise GraftUnreachable(self.url, exc) from exc
        if response.is_error:
            raise GraftAPIError.from_response(response)
        return response


def _training_body(
    head: str, examples: Sequence[Mapping[str, Any]], kind: str | None, options: dict[str, Any]
) -> dict[str, Any]:
    body: dict[str, Any] = {"head": head, "examples": list(examples), **options}
    if kind is not None:
        body["kind"] = kind
    return body


def _reporting_chunks(payload: bytes, on_upload: UploadProgress) -> Iterator[bytes]:
    total = len(payload)
    on_upload(0, total)
    for start in range(0, total, UPLOAD_CHUNK):
        chunk = payload[start : start + UPLOAD_CHUNK]
        yield chunk
        on_upload(start + len(chunk), total)
