"""/openapi.json: an OpenAPI 3.1 description of every route, generated, not written by hand.

Each view carries its `Operation` (the pydantic models of its body, query and path, its answers
and the backend errors it may raise); `openapi_document` walks the app's URL map and turns
those models into JSON Schemas with pydantic (2020-12, the dialect OpenAPI 3.1 uses). The
routes validate requests against the same `Operation`, so what is served is what is checked.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from typing import Any, TypeVar

from flask import Flask
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from backend.errors import BackendError, Unauthorized
from backend.serving.schemas import ErrorBody

EXTENSION = "ls_active_yolo_openapi"  # where create_app keeps the built document
_ATTRIBUTE = "openapi_operation"
_REF = "#/components/schemas/{model}"
_SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})
_CONVERTER = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")

View = TypeVar("View", bound=Callable[..., Any])


@dataclass(frozen=True)
class Answer:
    """One documented status: a JSON body of `json`'s model and/or a body of another media
    type (`text`: text/html, application/octet-stream, ...); `headers`: the headers it sets,
    each with what it holds."""

    description: str
    json: type[BaseModel] | None = None
    text: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Operation:
    """What a route takes and answers. `errors` are the BackendError classes it may raise
    (each documents its status); 500 is documented everywhere, 401 where basic auth applies."""

    answers: Mapping[int, Answer]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    path: type[BaseModel] | None = None
    errors: tuple[type[BackendError], ...] = field(default=())


def operation(op: Operation) -> Callable[[View], View]:
    """Record `op` on a view (put it under the route decorator)."""

    def record(view: View) -> View:
        setattr(view, _ATTRIBUTE, op)
        return view

    return record


def operation_of(view: Callable[..., Any] | None) -> Operation | None:
    return getattr(view, _ATTRIBUTE, None)


def openapi_document(app: Flask, open_paths: Collection[str] | None = None) -> dict[str, Any]:
    """The description of `app`'s documented routes. `open_paths`: with basic auth on, the
    paths it does not guard (None: auth is off)."""
    routes = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        op = operation_of(view)
        if op is None:
            continue
        path = _CONVERTER.sub(r"{\g<name>}", rule.rule)
        for method in sorted((rule.methods or set()) - _SKIPPED_METHODS):
            routes.append((path, method.lower(), op, (view.__doc__ or "").strip()))

    models: set[type[BaseModel]] = {ErrorBody}
    for _, _, op, _ in routes:
        models.update(a.json for a in op.answers.values() if a.json is not None)
        models.update([op.body] if op.body is not None else [])
    ordered = sorted(models, key=lambda m: m.__name__)
    refs, defs = models_json_schema([(m, "validation") for m in ordered], ref_template=_REF)
    ref = {model: refs[(model, "validation")] for model in ordered}

    paths: dict[str, dict[str, Any]] = {}
    for path, method, op, doc in routes:
        auth = None if open_paths is None else path not in open_paths
        paths.setdefault(path, {})[method] = _operation(op, doc, ref, auth)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "ls-active-yolo", "version": _version()},
        "paths": paths,
        "components": {"schemas": defs.get("$defs", {})},
    }
    if open_paths is not None:
        document["components"]["securitySchemes"] = {
            "basicAuth": {"type": "http", "scheme": "basic"}
        }
    return document


def _operation(
    op: Operation,
    doc: str,
    ref: Mapping[type[BaseModel], dict[str, Any]],
    auth: bool | None,
) -> dict[str, Any]:
    """One operation object; `auth`: whether basic auth guards it (None: auth is off)."""
    spec: dict[str, Any] = {"description": " ".join(doc.split())}
    parameters = [
        *_parameters(op.path, "path"),
        *_parameters(op.query, "query"),
    ]
    if parameters:
        spec["parameters"] = parameters
    if op.body is not None:
        spec["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": ref[op.body]}},
        }
    responses: dict[str, Any] = {}
    for status, answer in sorted(op.answers.items()):
        content: dict[str, Any] = {}
        if answer.json is not None:
            content["application/json"] = {"schema": ref[answer.json]}
        if answer.text is not None:
            content[answer.text] = {"schema": {"type": "string"}}
        responses[str(status)] = {"description": answer.description, "content": content}
        if answer.headers:
            responses[str(status)]["headers"] = {
                name: {"description": text, "schema": {"type": "string"}}
                for name, text in answer.headers.items()
            }
    errors: dict[int, list[str]] = {500: ["An unexpected error (logged; the answer says no more)."]}
    for error in op.errors:
        errors.setdefault(error.status, []).append(_first_line(error.__doc__))
    if auth:
        errors[401] = [_first_line(Unauthorized.__doc__)]
    for status, meanings in sorted(errors.items()):
        responses[str(status)] = {
            "description": "; ".join(dict.fromkeys(meanings)),
            "content": {"application/json": {"schema": ref[ErrorBody]}},
        }
    spec["responses"] = responses
    if auth is not None:
        spec["security"] = [{"basicAuth": []}] if auth else []
    return spec


def _parameters(model: type[BaseModel] | None, where: str) -> list[dict[str, Any]]:
    if model is None:
        return []
    schema = model.model_json_schema(ref_template=_REF)
    required = set(schema.get("required", ()))
    parameters = []
    for name, prop in schema["properties"].items():
        # an optional parameter is left out, never null: keep its non-null type only
        kinds = [k for k in prop.get("anyOf", [prop]) if k.get("type") != "null"]
        (kind,) = kinds
        parameter: dict[str, Any] = {
            "name": name,
            "in": where,
            "required": where == "path" or name in required,
            "schema": {k: v for k, v in kind.items() if k not in ("title", "description")},
        }
        if "description" in prop:
            parameter["description"] = prop["description"]
        parameters.append(parameter)
    return parameters


def _first_line(text: str | None) -> str:
    return (text or "").strip().split("\n", 1)[0]


def _version() -> str:
    try:
        return package_version("ls-active-yolo")
    except PackageNotFoundError:  # run from a checkout that is not installed
        return "unknown"
