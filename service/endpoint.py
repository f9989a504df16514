"""``@endpoint``: a BentoML API whose handler takes (request, caller) and whose errors are JSON.

BentoML calls an API with one keyword argument per request field; Graft's handlers take the whole
validated request and the :class:`~service.auth.Caller` the gateway authenticated. A
:class:`~service.errors.GraftError` raised below becomes its JSON error response here (BentoML would
otherwise mask 401/403 messages and wrap the rest in its own shape).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import bentoml
from pydantic import BaseModel
from starlette.responses import JSONResponse

from service.auth import Caller
from service.errors import GraftError, MethodNotAllowed

RequestT = TypeVar("RequestT", bound=BaseModel)
Handler = Callable[[Any, RequestT, Caller], Awaitable[BaseModel]]

#: Route → request model, for the gateway to validate bodies before they reach BentoML.
REQUEST_MODELS: dict[str, type[BaseModel]] = {}
CALLER_KEY = "graft.caller"
LOG_KEY = "graft.log"


def error_response(exc: GraftError) -> JSONResponse:
    headers = {"Allow": "POST"} if isinstance(exc, MethodNotAllowed) else None
    return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)


def endpoint(
    route: str, request_model: type[RequestT], response_model: type[BaseModel]
) -> Callable[[Handler[RequestT]], Any]:
    def decorate(handler: Handler[RequestT]) -> Any:
        async def api(self: Any, ctx: bentoml.Context, **fields: Any) -> Any:
            request = request_model.model_construct(**fields)
            scope = ctx.request.scope
            record = scope.get(LOG_KEY, {})
            if isinstance(getattr(request, "head", None), str):
                record["head"] = request.head  # type: ignore[attr-defined]
            try:
                response = await handler(self, request, scope[CALLER_KEY])
            except GraftError as exc:
                record["error"] = exc.code
                ctx.response.status_code = exc.status
                return error_response(exc)
            if isinstance(getattr(response, "version", None), int):
                record["version"] = response.version  # type: ignore[attr-defined]
            if isinstance(getattr(response, "job", None), str):
                record["job"] = response.job  # type: ignore[attr-defined]
            return response

        api.__name__ = handler.__name__
        api.__qualname__ = handler.__qualname__
        api.__doc__ = handler.__doc__
        api.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD),
                inspect.Parameter(
                    "ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=bentoml.Context
                ),
                inspect.Parameter("fields", inspect.Parameter.VAR_KEYWORD, annotation=Any),
            ],
            return_annotation=response_model,
        )
        REQUEST_MODELS[route] = request_model
        return bentoml.api(route=route, input_spec=request_model, output_spec=response_model)(api)

    return decorate
