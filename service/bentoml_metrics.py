"""Bounds the path label of BentoML's own request metrics: every made-up path counts as one.

BentoML's outermost middleware labels ``bentoml_service_request_*`` with the path as sent, so
each path a scanner tries (``/wp-login.php``, ``/v1/x1``, ``/v1/x2``, ...) would add series to
every worker's metrics file for good, and /metrics would grow without bound. BentoML has no
setting for it (its ``skip_paths`` skips only a timestamp gauge), so the middleware class it
builds its app with is replaced by a subclass that shows it a route, not the path: a path
that is no route of the service or of BentoML's own is shown as ``(unknown)``, as in Graft's
own metrics. The subclass hands the inner app the path as sent.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("graft")

UNKNOWN_ROUTE = "(unknown)"
#: BentoML's own routes besides the service's API routes.
BENTOML_ROUTES = frozenset({"/", "/docs.json", "/metrics", "/readyz", "/livez", "/healthz"})
#: BentoML's static files (the index page's), each folder counted as one route.
STATIC_PREFIXES = ("/static_content/", "/assets/")
#: Where the path as sent travels past the metrics middleware, to be handed back.
_PATH_AS_SENT = "graft.path_as_sent"


def route_label(path: str, api_routes: frozenset[str]) -> str:
    """The label a request's path gets: itself if it is a route, else one of a few fixed ones."""
    if path in api_routes or path in BENTOML_ROUTES:
        return path
    return next((prefix for prefix in STATIC_PREFIXES if path.startswith(prefix)), UNKNOWN_ROUTE)


class _PathAsSent:
    """Between the metrics middleware and the app: puts back the path the metrics did not see."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if _PATH_AS_SENT in scope:
            scope = {**scope, "path": scope[_PATH_AS_SENT]}
        await self.app(scope, receive, send)


def install() -> None:
    """Make BentoML build its app with the bounded middleware (at import of the service, before
    any worker builds its app). Without the class where BentoML keeps it, log and carry on."""
    try:
        from bentoml._internal.context import server_context
        from bentoml._internal.server.http import instruments
    except ImportError:  # pragma: no cover - another BentoML layout
        log.warning("BentoML's request metrics are unbounded: their middleware has moved")
        return
    original = getattr(instruments, "RunnerTrafficMetricsMiddleware", None)
    if original is None or getattr(original, "bounded_by_graft", False):
        return

    class BoundedRunnerTrafficMetrics(original):  # type: ignore[misc, valid-type]
        bounded_by_graft = True

        def __init__(self, app: Any, **options: Any) -> None:
            super().__init__(_PathAsSent(app), **options)
            self._api_routes: frozenset[str] | None = None

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] in ("http", "websocket"):  # both label their path
                if self._api_routes is None:  # known once the worker has loaded the service
                    self._api_routes = frozenset(server_context.service_routes)
                path = scope.get("path", "")
                label = route_label(path, self._api_routes)
                if label != path:
                    scope = {**scope, "path": label, _PATH_AS_SENT: path}
            await super().__call__(scope, receive, send)

    setattr(instruments, "RunnerTrafficMetricsMiddleware", BoundedRunnerTrafficMetrics)  # noqa: B010
