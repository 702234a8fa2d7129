"""``GET /openapi.json``: an OpenAPI 3.1 document whose schemas come from the signatures.

Each served program gets its own path, ``/v1/programs/{name}``, with its
request schema (one property per input field, all required, no others) and
its response schema (one property per output field), both written by
pydantic from the field types.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dspex.serve._endpoints import Endpoint

__all__ = ["openapi_document"]

_REF = "#/components/schemas/{model}"

_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "description": "the error's type name"},
                "message": {"type": "string"},
                "errors": {
                    "type": "array",
                    "description": "422 only: one entry per bad field",
                    "items": {
                        "type": "object",
                        "properties": {
                            "field": {"type": ["string", "null"]},
                            "type": {"type": "string"},
                            "message": {"type": "string"},
                        },
                    },
                },
            },
            "required": ["type", "message"],
        }
    },
    "required": ["error"],
}


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="Error")}}},
    }


def _schema(model: Any, components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, ref_template=_REF)
    for name, definition in schema.pop("$defs", {}).items():
        components[name] = definition
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _program_path(endpoint: Endpoint, components: dict[str, Any]) -> dict[str, Any]:
    request = _schema(endpoint.request_model, components)
    if endpoint.response_model is not None:
        response = _schema(endpoint.response_model, components)
    else:
        response = {"type": "object", "description": "the fields the program returns"}
    inputs = ", ".join(f.name for f in endpoint.inputs) or "any"
    outputs = ", ".join(f.name for f in endpoint.outputs) or "any"
    return {
        "post": {
            "operationId": f"call_{endpoint.name}",
            "summary": f"Run program {endpoint.name!r} ({inputs} -> {outputs})",
            "tags": ["programs"],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": request}},
            },
            "responses": {
                "200": {
                    "description": "the prediction's fields; with Accept: text/event-stream, "
                    "server-sent events: chunk (a piece of an output field), then prediction "
                    "(the fields) or error",
                    "content": {
                        "application/json": {"schema": response},
                        "text/event-stream": {"schema": {"type": "string"}},
                    },
                },
                "404": _error("no program of that name is served"),
                "422": _error("a missing, unknown or mistyped input field"),
                "429": _error("the program's queue is full; retry after Retry-After seconds"),
                "500": _error("the program raised: its error type and message"),
                "503": _error("the server is draining, or the LM's circuit breaker is open"),
            },
        }
    }


def _plain(summary: str, description: str, media: str = "application/json") -> dict[str, Any]:
    return {
        "get": {
            "summary": summary,
            "responses": {"200": {"description": description, "content": {media: {}}}},
        }
    }


def openapi_document(
    endpoints: Iterable[Endpoint], *, title: str = "dspex", version: str = "0.1.0"
) -> dict[str, Any]:
    """The OpenAPI 3.1 document for ``endpoints`` plus the fixed routes."""
    components: dict[str, Any] = {"Error": _ERROR_SCHEMA}
    paths: dict[str, Any] = {
        "/v1/programs": _plain("List the served programs", "names with input and output fields"),
        "/healthz": _plain("Liveness", "the process answers"),
        "/readyz": _plain("Readiness", "LM clients up and not draining (503 otherwise)"),
        "/metrics": _plain("Prometheus metrics", "text exposition", "text/plain"),
    }
    for endpoint in sorted(endpoints, key=lambda e: e.name):
        paths[f"/v1/programs/{endpoint.name}"] = _program_path(endpoint, components)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
