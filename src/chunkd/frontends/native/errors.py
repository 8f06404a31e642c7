"""The Files API's error dialect: ``{"error": {"code", "message", "field"?, ...}}``."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse, Response
from starlette.routing import Match

from chunkd.domain import errors as e
from chunkd.frontends.http import StatusTable, error_headers, validation_error
from chunkd.frontends.http.json_body import UNPARSED_BODY
from chunkd.frontends.refusals import Refusal, render_refusal
from chunkd.scope import REQUEST_ID

__all__ = [
    "SHOULD_RETRY",
    "error_response",
    "install_error_handlers",
    "refusal_response",
    "render_error",
    "status_for",
]

# The shared statuses, but an expired upload is a conflict with its state here (409), not gone.
_STATUS = StatusTable((e.Expired, 409))


# Stainless-generated SDKs' retry hint: "false" stops their automatic retries of a 408/409/429/5xx.
SHOULD_RETRY = "X-Should-Retry"


def status_for(error: e.ChunkdError) -> int:
    return _STATUS.status(error) or 400


def error_response(status: int, code: str, message: str, field: str | None = None, /, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        body["field"] = field
    body.update(extra)
    return JSONResponse({"error": body}, status_code=status, headers=error_headers(None, status))


def refusal_response(refusal: Refusal) -> JSONResponse:
    """A guard's refusal (rate limit, body timeout, too large...) in the Files API's shape."""
    response = error_response(refusal.status_code, refusal.code, refusal.message, refusal.field, **refusal.extra)
    response.headers.update(refusal.headers or {})
    return response


def render_error(exc: Exception) -> JSONResponse | None:
    """The Files API's answer to a domain or validation error or a guard's refusal; None for
    anything else."""
    if isinstance(exc, Refusal):
        return refusal_response(exc)
    if isinstance(exc, e.ChunkdError):
        details = exc.to_dict()
        code, message, field = details.pop("code"), details.pop("message"), details.pop("field", None)
        status = status_for(exc)
        response = error_response(status, code, message, field, **details)
        response.headers.update(error_headers(exc, status))
        if status == 409 and not isinstance(exc, e.Busy):
            # The Files API follows Lightfield's, whose SDK (Stainless-generated, as seed 004 shows
            # it) retries every 409 twice, backing off, unless told not to: only a busy upload frees
            # up; a cancelled, expired or completed one, or missing parts, answer the same again.
            response.headers[SHOULD_RETRY] = "false"
        return response
    if isinstance(exc, RequestValidationError):
        field, message = validation_error(exc.errors())
        if field in _PATH_NAMES:  # the path parameter as the API documents it, not the handler's name
            message = f"{_PATH_NAMES[field]}{message.removeprefix(field)}"
            field = _PATH_NAMES[field]
        return error_response(400, "invalid_input", message, field)
    return None


# The Files API documents its file's path parameter as ``id`` (``POST /v1/files/{id}/complete``);
# a part's number is ``partNumber``, as its answers and the engine's errors name it.
_PATH_NAMES = {"file_id": "id", "part_number": "partNumber"}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route serves at this path (Starlette's own 405 names only the first
    route that matched the path, which is wrong when several routes share it)."""
    allowed = []
    for method in _METHODS:
        probe = {**request.scope, "method": method}
        if any(route.matches(probe)[0] is Match.FULL for route in request.app.router.routes):
            allowed.append(method)
    if "GET" in allowed and "HEAD" not in allowed:
        allowed.insert(allowed.index("GET") + 1, "HEAD")  # a GET route answers HEAD too (routes.DirectRoutes)
    return allowed


def install_error_handlers(app: FastAPI) -> None:
    """App-wide fallback: errors outside any frontend's own routes get the Files API's shape."""

    async def _handle(_: Request, exc: Exception) -> JSONResponse:
        response = render_error(exc)
        assert response is not None
        return response

    app.add_exception_handler(e.ChunkdError, _handle)
    app.add_exception_handler(RequestValidationError, _handle)

    async def _bug(request: Request, exc: Exception) -> Response:
        # Starlette's error middleware answers an unhandled exception (a bug) with this, then
        # re-raises it to the server, which logs it: a 500 in the path's dialect naming the request
        # id of that log line, where Starlette's own was plain text with nothing to quote.
        request_id = str(request.scope.get("state", {}).get(REQUEST_ID, ""))
        message = f"the server failed to answer this request (request id {request_id}); it was logged"
        refusal = Refusal(500, "internal_error", message, extra={"requestId": request_id}, close=True)
        return render_refusal(request.scope, refusal, refusal_response)

    app.add_exception_handler(Exception, _bug)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        # Starlette's own 404 and 405 (no route, or not this method) under a dialect's path are
        # answered in that dialect's shape, as its guards' refusals are.
        if not isinstance(exc, Refusal):
            codes = {
                404: "not_found",
                405: "method_not_allowed",
                401: "unauthenticated",
                408: "body_timeout",
                413: "too_large",
            }
            headers = dict(exc.headers or {})
            if exc.status_code == 405:
                headers["Allow"] = ", ".join(_allowed_methods(request))
            if exc.status_code == 400 and exc.detail == UNPARSED_BODY:
                # FastAPI's answer to a JSON body it cannot decode at all (not UTF-8, or an integer
                # past Python's 4,300-digit limit), which names neither the field nor what is
                # wrong; a syntax error is "not valid JSON" already.
                message = "body: the body is not valid JSON (not UTF-8 text, or a number of more than 4300 digits)"
                exc = Refusal(400, "invalid_input", message, field="body")
            else:
                exc = Refusal(
                    exc.status_code, codes.get(exc.status_code, "http_error"), str(exc.detail), headers=headers
                )
        return render_refusal(request.scope, exc, refusal_response)
