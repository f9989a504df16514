"""The ASGI front door of ``/v1`` routes: caller, media type, body size, validation, access log.

It runs in front of BentoML's own handling, in this order, and answers the first failure itself
with Graft's JSON error shape:

1. every ``/v1`` route takes POST: 405 for another method;
2. authenticate (``Authorization`` / ``X-Tenant-ID``): 401, 403, or a bad tenant header 400;
3. the body must be JSON: 415 for another ``Content-Type``;
4. the body must fit ``GRAFT_MAX_BODY_BYTES``: 413, from ``Content-Length`` before reading, or
   while reading a body sent without one;
5. the body must match the route's request model, its inputs the backbone's modality (texts
   or images): 400 naming the field.

A request that passes is replayed to BentoML unchanged. Each request gets an ``X-Request-ID``
(the caller's, if it sent a sane one) and one JSON access-log line with tenant, head, version,
status and latency, never the body (unless ``GRAFT_LOG_PAYLOADS`` is on) and never a key; and it
counts in ``graft_requests_total`` by route, status and tenant (opted-in tenants only).

Paths outside ``/v1`` are BentoML's (probes, /metrics, its index page); its 404 and 405 for
them are answered in the JSON error shape too.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from typing import Any, get_args

import anyio
import bentoml
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service import metrics
from service.endpoint import CALLER_KEY, LOG_KEY, REQUEST_MODELS, error_response
from service.errors import (
    BadRequest,
    GraftError,
    InvalidInput,
    InvalidJSON,
    MethodNotAllowed,
    PayloadTooLarge,
    RouteNotFound,
    UnknownKind,
    UnsupportedMediaType,
)
from service.schemas import MODALITY_MISMATCH, NAME_PATTERN

access_log = logging.getLogger("graft.access")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_JSON_TYPES = {"application/json", ""}
#: With GRAFT_LOG_PAYLOADS on, this much of each request body goes into its access-log line.
LOGGED_BODY_CHARS = 4000
TRAIN_ROUTES = ("/v1/heads/train", "/v1/jobs/train")
#: The route a path that is no route is logged and counted under.
UNKNOWN_ROUTE = "(unknown)"
#: How much of a made-up path a route_not_found message repeats.
SHOWN_PATH_CHARS = 200


def _is_api_path(path: str) -> bool:
    """/v1 and below, however its slashes and case are typed: Graft answers those itself."""
    folded = re.sub("/+", "/", path).lower()
    return folded == "/v1" or folded.startswith("/v1/")


def _shown(path: str) -> str:
    return path if len(path) <= SHOWN_PATH_CHARS else path[:SHOWN_PATH_CHARS] + "..."


def _count_refusal(route: str, exc: GraftError) -> None:
    """A predict or train call refused here (its key, size, media type or fields) never reaches
    the handler that counts its kind of call, so it is counted as one here."""
    outcome = "client_error" if exc.status < 500 else "server_error"
    if route == "/v1/predict":
        metrics.PREDICTIONS.labels(outcome).inc()
    elif route in TRAIN_ROUTES:
        metrics.TRAININGS.labels(metrics.KIND_NOT_READ, outcome).inc()


class Gateway:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.graft: Any = None  # the service instance, known once the lifespan has started it

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._bind_on_startup(send))
            return
        path = scope.get("path", "")
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not _is_api_path(path):  # BentoML's own: /readyz, /metrics, its index page
            await self.app(scope, receive, _refusals_as_json(scope, send))
            return
        model = REQUEST_MODELS.get(path)
        started = time.perf_counter()
        headers = Headers(scope=scope)
        given_id = headers.get("x-request-id", "")
        request_id = given_id if _REQUEST_ID.match(given_id) else uuid.uuid4().hex
        # A made-up path is logged and counted as one route, so a scan cannot add series.
        route = path if model is not None else UNKNOWN_ROUTE
        record: dict[str, Any] = {"request_id": request_id, "route": route}
        scope[LOG_KEY] = record

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            if model is None:
                raise RouteNotFound(f"{_shown(path)} is not a Graft route")
            body = await self._admit(scope, receive, headers, model, record)
        except GraftError as exc:
            record["error"] = exc.code
            _count_refusal(route, exc)
            await error_response(exc)(scope, receive, send_with_id)
        else:
            await self.app(scope, _replay(body, receive), send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            record["latency_ms"] = round(elapsed * 1000, 2)
            metrics.REQUEST_SECONDS.labels(route).observe(elapsed)
            opted_in = self.graft.settings.metrics_tenants if self.graft is not None else ()
            metrics.REQUESTS.labels(
                route,
                str(record.get("status", "none")),
                metrics.tenant_label(record.get("tenant"), opted_in),
            ).inc()
            access_log.info("request", extra=record)

    def _bind_on_startup(self, send: Send) -> Send:
        """BentoML creates the service instance during the app's lifespan startup; taking it
        then (not from a global at request time) ties this gateway to its own app's instance."""

        async def send_and_bind(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                self.graft = bentoml.get_current_service()
            await send(message)

        return send_and_bind

    async def _admit(
        self,
        scope: Scope,
        receive: Receive,
        headers: Headers,
        model: type[BaseModel],
        record: dict[str, Any],
    ) -> bytes:
        if scope["method"] != "POST":
            raise MethodNotAllowed(f"{scope['path']} takes POST, not {scope['method']}")
        graft = self.graft
        admin_route = scope["path"].startswith("/v1/admin/")
        if "authorization" in headers or admin_route:  # a key to look up: SQL, off the loop
            caller = await anyio.to_thread.run_sync(
                lambda: graft.auth.caller(headers, admin_route=admin_route)
            )
        else:
            caller = graft.auth.caller(headers, admin_route=False)
        scope[CALLER_KEY] = caller
        record["tenant"] = caller.tenant if not caller.admin else "(admin)"

        media_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in _JSON_TYPES:
            raise UnsupportedMediaType(
                f"request bodies must be application/json, not {media_type!r}",
                field="Content-Type",
            )
        limit = graft.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(int(declared), limit)
        body = await _read_body(receive, limit)
        if graft.settings.log_payloads:  # texts in the log: for debugging only, off by default
            record["body"] = body.decode("utf-8", errors="replace")[:LOGGED_BODY_CHARS]
        try:
            # The backbone's modality: a text sent to an image backbone (or the reverse) is
            # refused here, naming its field.
            context = {"modality": graft.settings.backbone_kind}
            model.model_validate_json(body or b"{}", context=context)
        except ValidationError as exc:
            # Which head a refused call was for is what an operator looks for first.
            record["head"] = _head_named_in(body)
            raise validation_error(exc, model) from None
        return body


def _refusals_as_json(scope: Scope, send: Send) -> Send:
    """BentoML's answer to a path outside /v1, but its 404 and 405 (plain text) in Graft's JSON
    error shape, as every refusal is: ``GET /wp-login.php``, ``POST /readyz``."""
    replaced = False

    async def send_json_refusals(message: Message) -> None:
        nonlocal replaced
        if message["type"] == "http.response.start" and message["status"] in (404, 405):
            replaced = True
            path, method = _shown(scope["path"]), scope["method"]
            allow = Headers(raw=message.get("headers", [])).get("allow", "")
            # Starlette lists a route's methods from a set, in an order that varies by process.
            allow = ", ".join(sorted(m.strip() for m in allow.split(",") if m.strip()))
            exc: GraftError = (
                RouteNotFound(f"{path} is not a Graft route")
                if message["status"] == 404
                else MethodNotAllowed(f"{path} takes {allow or 'another method'}, not {method}")
            )
            body = json.dumps(exc.to_body()).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", b"%d" % len(body)),
            ]
            if allow:
                headers.append((b"allow", allow.encode("latin-1")))
            await send({"type": "http.response.start", "status": exc.status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif not replaced:  # the replaced answer's own body is dropped
            await send(message)

    return send_json_refusals


def _head_named_in(body: bytes) -> str | None:
    """The head a refused body names, if it is JSON naming one by a valid name (bodies over
    64 KB are not parsed a second time on the event loop just for the log)."""
    if len(body) > 65536:
        return None
    try:
        head = json.loads(body).get("head")
    except (ValueError, AttributeError, RecursionError):  # not JSON, not an object, too deep
        return None
    return head if isinstance(head, str) and re.fullmatch(NAME_PATTERN, head) else None


def _too_large(size: int, limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request body has {size} bytes or more; the limit (GRAFT_MAX_BODY_BYTES) is {limit}",
        limit="GRAFT_MAX_BODY_BYTES",
        value=limit,
    )


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the client went away; what was read goes on and fails downstream
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def validation_error(exc: ValidationError, model: type[BaseModel] | None = None) -> GraftError:
    """The first problem pydantic found, as a Graft error that names its field."""
    first: Mapping[str, Any] = exc.errors(include_url=False, include_input=False)[0]
    kind = first["type"]
    message = str(first["msg"]).removeprefix("Value error, ")
    if kind == "json_invalid":
        return InvalidJSON(f"the request body is not valid JSON: {message}")
    location = [str(part) for part in first["loc"]]
    if not location:
        return BadRequest(f"the request body must be a JSON object: {message}")
    field = ".".join(location)
    if location == ["kind"] and kind == "literal_error":
        return UnknownKind(f"unknown head kind: {message}", field=field)
    if kind == MODALITY_MISMATCH:
        return InvalidInput(f"{field}: {message}", field=field)
    if kind == "extra_forbidden" and model is not None:
        message += _fields_hint(model, location)
    return BadRequest(f"{field}: {message}", field=field)


def _fields_hint(model: type[BaseModel], location: list[str]) -> str:
    """What an unknown field's object does take, and the likeliest of them: "Extra inputs are
    not permitted" alone left a caller guessing that ``"abstain"`` on a predict call is
    ``"abstain_threshold"``, or that an example's ``"intent"`` is its ``"label"`` (the list of
    an example's fields shows it; no spelling rule would)."""
    *path, unknown = location
    owner: type[BaseModel] | None = model
    for part in path:
        if owner is None:
            return ""
        if part.isdigit() or part not in owner.model_fields:
            continue  # a list index or a mapping key: the model stays the item's
        owner = _model_in(owner.model_fields[part].annotation)
    if owner is None:
        return ""
    fields = list(owner.model_fields)
    if not fields:
        return " (this object takes no fields: send {})"
    close = difflib.get_close_matches(unknown, fields, n=1, cutoff=0.7)
    if len(unknown) >= 3:  # "" or "k" is part of too many names to mean one of them
        close += [n for n in fields if (unknown in n or n in unknown) and n not in close]
    guess = f"; did you mean {close[0]!r}?" if close else ""
    return f" (this object takes {', '.join(fields)}){guess}"


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside a field's type (``list[Example] | None`` gives Example)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in get_args(annotation):
        found = _model_in(argument)
        if found is not None:
            return found
    return None
