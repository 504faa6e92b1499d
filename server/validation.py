"""JSON request bodies, validated by a validator compiled from the marshmallow schemas.

The schemas in ``schemas.py`` stay the one declaration of every body: apispec turns
them into JSON Schema (exactly as it does for ``/openapi.json``) and fastjsonschema
compiles that into Python code. On a 100-result submit this validates in 0.3 ms where
marshmallow's ``load`` takes 4.6 ms, and the hot endpoints run on every lease.

Errors come out in the one error shape, naming the field: ``json.results.3.sha256``.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from typing import Any

import fastjsonschema
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import request
from flask_smorest import Blueprint

from common.protocol import UNSTORABLE_TEXT

from .errors import InvalidInput


@functools.cache
def json_schema(schema_class: type) -> dict[str, Any]:
    """The JSON Schema of a marshmallow schema, references inlined, OpenAPI 3.0's
    ``nullable`` turned into JSON Schema's ``type: [..., "null"]``."""
    spec = APISpec("validation", "1", "3.0.3", plugins=[MarshmallowPlugin()])
    spec.components.schema(schema_class.__name__, schema=schema_class)
    components = spec.to_dict()["components"]["schemas"]

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(components[node["$ref"].rsplit("/", 1)[1]])
            node = {key: inline(value) for key, value in node.items()}
            if node.pop("nullable", False) and "type" in node:
                node["type"] = [node["type"], "null"] if isinstance(node["type"], str) else [*node["type"], "null"]
            return node
        if isinstance(node, list):
            return [inline(item) for item in node]
        return node

    return inline(components[schema_class.__name__])


@functools.cache
def validator(schema_class: type) -> Callable[[Any], Any]:
    formats = {"url": r"^https?://"}
    return fastjsonschema.compile(json_schema(schema_class), formats=formats)


def validate(schema_class: type, data: Any) -> dict[str, Any]:
    try:
        validator(schema_class)(data)
    except fastjsonschema.JsonSchemaValueException as error:
        path, problem = _describe(error)
        raise InvalidInput.at(path or ["body"], problem) from None
    return data


def _describe(error: fastjsonschema.JsonSchemaValueException) -> tuple[list[str | int], str]:
    """The failing field's path and a readable problem, in marshmallow's words where it has them."""
    path = list(error.path[1:])
    rule, definition, value = error.rule, error.rule_definition, error.value
    if rule == "required" and isinstance(value, dict):
        missing = [name for name in definition if name not in value]
        return [*path, missing[0]], "Missing data for required field."
    if rule == "additionalProperties" and isinstance(value, dict):
        known = set(error.definition.get("properties", {}))
        unknown = sorted(key for key in value if key not in known)
        return [*path, unknown[0] if unknown else "?"], "Unknown field."
    if rule == "type":
        wanted = " or ".join(definition) if isinstance(definition, list) else definition
        return path, f"Not a valid {wanted}."
    if rule in ("minimum", "maximum"):
        low, high = error.definition.get("minimum"), error.definition.get("maximum")
        if low is not None and high is not None:
            return path, f"Must be greater than or equal to {low} and less than or equal to {high}."
        if low is not None:
            return path, f"Must be greater than or equal to {low}."
        return path, f"Must be less than or equal to {high}."
    if rule in ("minLength", "maxLength", "minItems", "maxItems"):
        low = error.definition.get("minLength", error.definition.get("minItems"))
        high = error.definition.get("maxLength", error.definition.get("maxItems"))
        low, high = low if low is not None else 0, high if high is not None else "any"
        return path, f"Length must be between {low} and {high}."
    if rule == "enum":
        return path, f"Must be one of: {', '.join(map(str, definition))}."
    if rule == "pattern":
        return path, f"Does not match {definition}."
    return path, error.message.removeprefix("data").lstrip(". ")


#: ``UNSTORABLE_TEXT`` can reach a JSON body only as ``\u`` escapes, and only those send
#: a body through the slower check below.
_UNSTORABLE_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
UNSTORABLE_PROBLEM = "must not contain NUL characters or unpaired surrogates"


def parse_json(raw: bytes) -> Any:
    """A request body as JSON, or InvalidInput naming what is wrong with it: not JSON, not
    UTF-8, ``NaN``/``Infinity`` (not JSON either), or nested too deep to parse safely."""

    def no_constants(name: str) -> None:
        raise ValueError(f"{name} is not a JSON number")

    try:
        return json.loads(raw, parse_constant=no_constants)
    except RecursionError:
        problem = "Nested too deeply."
    except UnicodeDecodeError:
        problem = "Not UTF-8."
    except ValueError as error:
        problem = f"Invalid JSON body: {str(error)[:200]}."
    raise InvalidInput(f"json: {problem}", errors={"json": [problem]})


def storable(data: Any, site_text: tuple[tuple[str, ...], ...] = (), path: tuple = ()) -> Any:
    """``data`` with unstorable characters stripped from the fields named by ``site_text``
    (``*`` matches any key or index; a prefix covers everything below it), which carry a
    site's words; anywhere else they are the sender's error (InvalidInput at that field)."""

    def lenient(here: tuple) -> bool:
        return any(
            len(here) >= len(pattern) and all(p == "*" or p == h for p, h in zip(pattern, here, strict=False))
            for pattern in site_text
        )

    def clean(value: Any, here: tuple) -> Any:
        if isinstance(value, str):
            if UNSTORABLE_TEXT.search(value) is None:
                return value
            if lenient(here):
                return UNSTORABLE_TEXT.sub("", value)
            raise InvalidInput.at(list(here) or ["body"], UNSTORABLE_PROBLEM)
        if isinstance(value, dict):
            return {clean(key, (*here, key)): clean(item, (*here, key)) for key, item in value.items()}
        if isinstance(value, list):
            return [clean(item, (*here, index)) for index, item in enumerate(value)]
        return value

    return clean(data, path)


MAX_METADATA_DEPTH = 32


def too_deep(value: Any, limit: int = MAX_METADATA_DEPTH) -> bool:
    """True when ``value`` nests lists or objects more than ``limit`` levels: deeper
    metadata could not be written back out as JSON safely (every encoder recurses)."""
    level = [value]
    for _ in range(limit + 1):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
            if isinstance(child, dict | list)
        ]
        if not level:
            return False
    return True


#: Fields whose text comes from a site (a node reports it as it found it): stripped, not refused.
SITE_TEXT_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "SubmitRequestSchema": (("results", "*", "error"), ("results", "*", "found", "*", "metadata")),
}


def validated_json(schema_class: type):
    """View decorator: validate the JSON body against ``schema_class`` and pass it as the
    first argument (like flask-smorest's ``arguments``, which it documents the same way)."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(*args, **kwargs):
            raw = request.get_data(cache=True)
            if not request.is_json or not raw.strip():
                problem = "Invalid JSON body: send a JSON document with Content-Type: application/json."
                raise InvalidInput(f"json: {problem}", errors={"json": [problem]})
            data = parse_json(raw)
            if _UNSTORABLE_ESCAPE.search(raw):  # rare: keep the common path free of a walk
                data = storable(data, SITE_TEXT_FIELDS.get(schema_class.__name__, ()))
            return view(validate(schema_class, data), *args, **kwargs)

        documented = {
            "requestBody": {"required": True, "content": {"application/json": {"schema": schema_class}}},
            "responses": {"400": {"description": "Bad Request: the body names the field and the problem"}},
        }
        return Blueprint.doc(**documented)(wrapper)

    return decorator
