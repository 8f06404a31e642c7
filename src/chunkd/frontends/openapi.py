"""The OpenAPI document, made true enough for generated clients (openapi-python-client) and fuzzers
(schemathesis) to use every operation it describes.

FastAPI infers the document from handler signatures, but most upload handlers read the raw request
(a part streams straight into storage; a multipart chunk is parsed as it arrives), so what FastAPI
cannot see is added here, in one pass over the generated document:

* security schemes (``X-API-Key``, HTTP Bearer, HTTP Basic, ``AccessToken``) and each operation's
  ``security``; operations that also take a signed URL (``expires`` + ``signature`` in the query)
  list the empty requirement too, since the signature alone suffices;
* request bodies: raw binary (``application/octet-stream``, ``format: binary``) for part and
  whole-file PUTs, multipart and form schemas for the pm, media and asset routes (``BODIES``);
* the headers that carry meaning (``Content-MD5``, ``Range``, ``If-Range``, ``Content-Range``);
* the real error responses: chunkd answers bad input with 400 ``invalid_input``, never 422, so
  FastAPI's 422 and its ``HTTPValidationError`` schemas are removed, and every operation declares
  400/401/403/404/409/413/429 in its own dialect's error schema;
* ``format: date-time`` on timestamps, downloads typed as binary, and an optional JSON body (a
  ``complete`` without a body) declared as ``required: false`` rather than as ``anyOf [..., null]``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel

from chunkd.domain.media import MediaType
from chunkd.frontends.assets.router import CompleteAsset, CreateAsset
from chunkd.frontends.assets.schemas import AssetObject, AssetResult
from chunkd.frontends.media.schemas import Media, MediaChunk
from chunkd.frontends.pm.schemas import PmFile

__all__ = ["SECURITY_SCHEMES", "customise", "install_openapi"]

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "An API key `ck_<id>_<secret>`.",
    },
    "Bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key, or an access token from `POST /v1/auth/token`.",
    },
    "Basic": {
        "type": "http",
        "scheme": "basic",
        "description": "The API key's id as the user name, its secret as the password.",
    },
    "AccessToken": {
        "type": "apiKey",
        "in": "header",
        "name": "AccessToken",
        "description": "An access token from `POST /v1/auth/token` (or `POST /auth/token`).",
    },
}
CREDENTIALS: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]
ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 429)
TIMESTAMPS = frozenset({"createdAt", "completedAt", "expiresAt", "revokedAt", "added_at", "expires"})
BINARY: dict[str, Any] = {"type": "string", "format": "binary"}


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"}, "description": description}


def _octets(description: str) -> dict[str, Any]:
    # Not "required": the one part of an empty file is an empty body.
    return {"required": False, "description": description, "content": {"application/octet-stream": {"schema": BINARY}}}


def form_schema(properties: dict[str, Any], **members: Any) -> dict[str, Any]:
    """The JSON schema of a form (multipart or url-encoded): an object with ``properties``, listed in
    the order a client sends them (the fields that place a file's bytes before the bytes)."""
    return {"type": "object", **members, "properties": properties}


def _model_ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _answer(status: int, model: type[BaseModel], description: str, **members: Any) -> dict[str, Any]:
    """A success response whose JSON body is ``model`` (routes that build their answers as dicts)."""
    body = {"description": description, "content": {"application/json": {"schema": _model_ref(model)}}, **members}
    return {"responses": {str(status): body}}


_MEDIA_COMPLETE: dict[str, Any] = {
    "type": "object",
    "required": ["upload_id", "md5"],
    "properties": {
        "upload_id": {"type": "string", "description": "The upload_id the chunks answered."},
        "md5": {"type": "string", "pattern": "^[0-9a-fA-F]{32}$", "description": "MD5 hex digest of the file."},
        "type": {"type": "string", "enum": [t.value for t in MediaType], "description": "The media's type."},
    },
}
_ETAG = {"ETag": {"schema": {"type": "string"}, "description": "The asset's MD5, quoted."}}
# What each operation's handler reads from the raw request, and what it answers when FastAPI cannot
# see it (a dict built by hand): (method, path) → additions.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("put", "/v1/files/{file_id}/parts/{part_number}"): {
        "requestBody": _octets("The part's bytes: exactly partSize bytes (the last part: the rest)."),
        "parameters": [_header("Content-MD5", "Base64 MD5 of the part (RFC 1864); checked before it is stored.")],
    },
    ("put", "/v1/files/{file_id}/content"): {
        "requestBody": _octets("The whole file (sizeBytes bytes). The upload stays PENDING until complete."),
    },
    ("put", "/asset/{file_id}/parts/{part_number}"): {
        "requestBody": _octets("The part's bytes: partSize bytes, the last part the rest."),
        "responses": {
            "200": {
                "description": "Stored. No body: the part's ETag (its MD5, quoted) is in the ETag header, as in S3.",
                "headers": {"ETag": {"schema": {"type": "string"}, "description": "The part's MD5, quoted."}},
            }
        },
    },
    ("put", "/asset/{file_id}/content"): {
        "requestBody": _octets("The whole asset (up to one part); the PUT completes it."),
        **_answer(200, AssetResult, "Stored and completed.", headers=_ETAG),
    },
    ("post", "/asset"): {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _model_ref(CreateAsset)}}},
        **_answer(201, AssetObject, "The asset, with its upload URL(s)."),
    },
    ("post", "/asset/complete"): {
        "requestBody": {"required": True, "content": {"application/json": {"schema": _model_ref(CompleteAsset)}}},
        **_answer(200, AssetResult, "Completed or cancelled."),
    },
    ("post", "/api/v2/media/upload/chunk/"): {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": form_schema(
                        {
                            "upload_id": {"type": "string", "description": "From the second chunk on (first)."},
                            "image": {**BINARY, "description": "The chunk of an image (or send document)."},
                            "document": {**BINARY, "description": "The chunk of a PDF (or send image)."},
                        }
                    )
                }
            },
        },
        "parameters": [
            _header(
                "Content-Range",
                "bytes START-END/TOTAL of this chunk; without it (and upload_id) the chunk is the whole file.",
            )
        ],
        **_answer(201, MediaChunk, "The chunk is stored."),
    },
    ("post", "/api/v2/media/upload/complete/"): {
        # The seed's own encoding. JSON and multipart bodies with the same fields are accepted too, but
        # not listed: openapi-python-client 0.29 generates code that does not import for a required
        # body with several content types (openapi-generators/openapi-python-client#1451).
        "requestBody": {
            "required": True,
            "description": "Also accepted as JSON or multipart/form-data with the same fields.",
            "content": {"application/x-www-form-urlencoded": {"schema": _MEDIA_COMPLETE}},
        },
        **_answer(201, Media, "The Media."),
    },
    ("get", "/api/v2/media/{media_id}/"): _answer(200, Media, "The Media."),
    ("get", "/api/v2/pm/upload/{file_uuid}/info"): _answer(200, PmFile, "The File object."),
}
DOWNLOAD_HEADERS = [
    _header("Range", "bytes=START-END (one range): answered with 206 and Content-Range."),
    _header("If-Range", "The ETag the Range applies to; another one gets the whole file."),
]
MODELS: tuple[type[BaseModel], ...] = (
    CreateAsset,
    CompleteAsset,
    AssetObject,
    AssetResult,
    Media,
    MediaChunk,
    PmFile,
)


def _walk(node: Any, visit: Callable[[dict[str, Any]], None]) -> None:
    if isinstance(node, dict):
        visit(node)
        for value in node.values():
            _walk(value, visit)
    elif isinstance(node, list):
        for value in node:
            _walk(value, visit)


def _date_times(node: dict[str, Any]) -> None:
    properties = node.get("properties")
    if not isinstance(properties, dict):
        return
    for name, schema in properties.items():
        if name not in TIMESTAMPS or not isinstance(schema, dict):
            continue
        for branch in [schema, *schema.get("anyOf", [])]:
            if isinstance(branch, dict) and branch.get("type") == "string":
                branch["format"] = "date-time"


def _add_models(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in MODELS:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema


def _optional_json_body(operation: dict[str, Any]) -> None:
    """``Body()`` typed ``Model | None`` comes out as ``anyOf [Model, null]``, which generated
    clients cannot send as "no body"; declare the model with ``required: false`` instead."""
    body = operation.get("requestBody")
    if not body:
        return
    media = body.get("content", {}).get("application/json")
    if not media:
        return
    branches = media.get("schema", {}).get("anyOf")
    if isinstance(branches, list) and {"type": "null"} in branches:
        rest = [b for b in branches if b != {"type": "null"}]
        if len(rest) == 1:
            media["schema"] = rest[0]
            body["required"] = False


def _error_responses(operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    responses.pop("422", None)
    dialect = responses.get("400", {}).get("content")
    for status in ERROR_STATUSES:
        entry = responses.setdefault(str(status), {"description": HTTPStatus(status).phrase})
        if dialect and "content" not in entry:
            entry["content"] = copy.deepcopy(dialect)


def _downloads(operation: dict[str, Any]) -> None:
    """A download answers with the file's own media type: declared as binary, octet-stream first
    (clients pick the first type they know), any type after it."""
    for status in ("200", "206"):
        response = operation.get("responses", {}).get(status)
        if response is not None and "*/*" in response.get("content", {}):
            response["content"] = {"application/octet-stream": {"schema": BINARY}, "*/*": {"schema": BINARY}}


def _parameters(operation: dict[str, Any], added: list[dict[str, Any]]) -> None:
    present = {(p.get("in"), p.get("name", "").lower()) for p in operation.get("parameters", [])}
    for parameter in added:
        if (parameter["in"], parameter["name"].lower()) not in present:
            operation.setdefault("parameters", []).append(copy.deepcopy(parameter))


def customise(document: dict[str, Any]) -> dict[str, Any]:
    """Apply the additions above to a FastAPI-generated document (in place; returned)."""
    _add_models(document)
    components = document.setdefault("components", {})
    components["securitySchemes"] = copy.deepcopy(SECURITY_SCHEMES)
    for path, operations in document.get("paths", {}).items():
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            names = {p.get("name") for p in operation.get("parameters", [])}
            signed = "signature" in names
            operation["security"] = CREDENTIALS + ([{}] if signed else [])
            extra = BODIES.get((method, path), {})
            if "requestBody" in extra:
                operation["requestBody"] = copy.deepcopy(extra["requestBody"])
            _parameters(operation, extra.get("parameters", []))
            operation.setdefault("responses", {}).update(copy.deepcopy(extra.get("responses", {})))
            _optional_json_body(operation)
            _error_responses(operation)
            if any("*/*" in r.get("content", {}) for r in operation.get("responses", {}).values()):
                _downloads(operation)
                _parameters(operation, DOWNLOAD_HEADERS)
    schemas = components.get("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    _walk(document, _date_times)
    return document


def install_openapi(app: FastAPI) -> None:
    """Serve the customised document at ``/openapi.json`` (and so in ``/docs``): FastAPI's own
    generation (with every option it passes, and its cache), then ``customise`` once per document."""
    generate = app.openapi
    customised: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        document = generate()
        if not customised or customised[0] is not document:
            customise(document)
            customised[:] = [document]
        return document

    app.openapi = openapi  # type: ignore[method-assign]
