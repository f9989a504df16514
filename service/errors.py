"""Graft's errors: each carries its HTTP status and a stable code, and renders as one JSON shape.

Every error a caller can cause answers ``{"error": {"code", "message", "field"?, ...}}``::

    GraftError
    ├── BadRequest                 400  invalid_request
    │   ├── InvalidJSON            400  invalid_json
    │   ├── InvalidExamples        400  invalid_examples
    │   ├── InvalidInput           400  invalid_input       (a text for an image backbone, ...)
    │   │   └── InvalidImage       400  invalid_image       (undecodable, animated, too small)
    │   ├── UnknownKind            400  unknown_kind
    │   ├── KindNotSupported       400  kind_not_supported  (tuned on an image backbone)
    │   └── LimitExceeded          400  limit_exceeded      (+ limit, value)
    ├── Unauthenticated            401  unauthenticated
    ├── Forbidden                  403  forbidden
    ├── NotFound                   404
    │   ├── HeadNotFound           404  head_not_found
    │   ├── VersionNotFound        404  version_not_found
    │   ├── AliasNotFound          404  alias_not_found
    │   ├── KeyNotFound            404  key_not_found
    │   ├── JobNotFound            404  job_not_found
    │   └── RouteNotFound          404  route_not_found     (a /v1 path that is no route)
    ├── MethodNotAllowed           405  method_not_allowed
    ├── Conflict                   409
    │   ├── BackboneMismatch       409  backbone_mismatch
    │   ├── VersionInUse           409  version_in_use
    │   ├── JobFinished            409  job_finished
    │   └── QuotaExceeded          409  quota_exceeded      (+ limit, value)
    ├── PayloadTooLarge            413  payload_too_large   (+ limit, value)
    ├── UnsupportedMediaType       415  unsupported_media_type
    └── Unavailable                503  unavailable

Nothing here catches bugs: an exception that is not a ``GraftError`` stays a 500 with BentoML's
masked message, and its stack trace goes to the server log only.
"""

from __future__ import annotations

from typing import Any, ClassVar


class GraftError(Exception):
    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, field: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.details = details

    def to_body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            error["field"] = self.field
        error.update(self.details)
        return {"error": error}


class BadRequest(GraftError):
    status = 400
    code = "invalid_request"


class InvalidJSON(BadRequest):
    code = "invalid_json"


class InvalidExamples(BadRequest):
    code = "invalid_examples"


class InvalidInput(BadRequest):
    code = "invalid_input"


class InvalidImage(InvalidInput):
    code = "invalid_image"


class UnknownKind(BadRequest):
    code = "unknown_kind"


class KindNotSupported(BadRequest):
    """A known head kind that this server's backbone cannot serve (tuned on an image backbone)."""

    code = "kind_not_supported"


class LimitExceeded(BadRequest):
    code = "limit_exceeded"

    def __init__(self, message: str, *, limit: str, value: int, field: str | None = None) -> None:
        super().__init__(message, field=field, limit=limit, value=value)


class Unauthenticated(GraftError):
    status = 401
    code = "unauthenticated"


class Forbidden(GraftError):
    status = 403
    code = "forbidden"


class NotFound(GraftError):
    status = 404
    code = "not_found"


class HeadNotFound(NotFound):
    code = "head_not_found"


class VersionNotFound(NotFound):
    code = "version_not_found"


class AliasNotFound(NotFound):
    code = "alias_not_found"


class KeyNotFound(NotFound):
    code = "key_not_found"


class JobNotFound(NotFound):
    code = "job_not_found"


class RouteNotFound(NotFound):
    code = "route_not_found"


class MethodNotAllowed(GraftError):
    status = 405
    code = "method_not_allowed"


class Conflict(GraftError):
    status = 409
    code = "conflict"


class BackboneMismatch(Conflict):
    code = "backbone_mismatch"


class VersionInUse(Conflict):
    code = "version_in_use"


class JobFinished(Conflict):
    code = "job_finished"


class QuotaExceeded(Conflict):
    code = "quota_exceeded"

    def __init__(self, message: str, *, limit: str, value: int) -> None:
        super().__init__(message, limit=limit, value=value)


class PayloadTooLarge(GraftError):
    status = 413
    code = "payload_too_large"

    def __init__(self, message: str, *, limit: str, value: int) -> None:
        super().__init__(message, limit=limit, value=value)


class UnsupportedMediaType(GraftError):
    status = 415
    code = "unsupported_media_type"


class Unavailable(GraftError):
    status = 503
    code = "unavailable"
