"""A small JSON Schema (2020-12) checker for the schemas RelayGuard ships, without a dependency.

The Lambda layer carries no ``jsonschema`` (it would bring a compiled ``rpds-py`` for arm64), yet
every notification must be checked against ``docs/schemas/notification.v1.json`` before it is
published. This checker implements the keywords that schema uses; a schema with any other
keyword is refused when loaded, so extending the schema cannot silently weaken the check.
tests/unit/test_notification_schema.py compares its verdicts with the ``jsonschema`` package's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

#: Keywords that carry no assertion (``format`` is an annotation by default in 2020-12).
ANNOTATIONS = frozenset({"$schema", "$id", "$comment", "$defs", "title", "description", "format", "default",
                         "examples"})
ASSERTIONS = frozenset({"type", "enum", "const", "required", "properties", "additionalProperties",
                        "propertyNames", "items", "minLength", "maxLength", "minimum", "maximum", "maxItems", "oneOf",
                        "anyOf", "allOf", "$ref"})
_SUBSCHEMA_MAPS = ("properties", "$defs")
_SUBSCHEMA_LISTS = ("oneOf", "anyOf", "allOf")
_SUBSCHEMAS = ("additionalProperties", "propertyNames", "items")


class SchemaError(ValueError):
    """The schema uses something this checker does not implement."""


_KINDS: tuple[tuple[type, str], ...] = (
    (type(None), "null"), (bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
    (dict, "object"),
)


def _kind(value: Any) -> str:
    # bool before int: in Python True is an int, in JSON it is not a number.
    return next((name for cls, name in _KINDS if isinstance(value, cls)), type(value).__name__)


def _is_type(value: Any, wanted: str) -> bool:
    kind = _kind(value)
    if wanted == "number":
        return kind in ("integer", "number")
    if wanted == "integer" and kind == "number":
        return float(value).is_integer()
    return kind == wanted


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``true`` is not ``1``, ``1`` is ``1.0``."""
    ka, kb = _kind(a), _kind(b)
    if {ka, kb} <= {"integer", "number"}:
        return bool(a == b)
    if ka != kb:
        return False
    if ka == "array":
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if ka == "object":
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


def check_schema(schema: Any, where: str = "#") -> None:
    """Raise :class:`SchemaError` for any keyword this checker would not enforce."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise SchemaError(f"{where}: a schema must be an object or a boolean")
    unknown = set(schema) - ANNOTATIONS - ASSERTIONS
    if unknown:
        raise SchemaError(f"{where}: unsupported keyword(s) {', '.join(sorted(unknown))}")
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        raise SchemaError(f"{where}: only local references ('#/...') are supported")
    for key in _SUBSCHEMA_MAPS:
        for name, sub in (schema.get(key) or {}).items():
            check_schema(sub, f"{where}/{key}/{name}")
    for key in _SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            check_schema(sub, f"{where}/{key}/{i}")
    for key in _SUBSCHEMAS:
        if key in schema:
            check_schema(schema[key], f"{where}/{key}")


class Validator:
    """Checks documents against one JSON Schema (the subset :func:`check_schema` accepts)."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        check_schema(schema)
        self.root = schema

    def errors(self, instance: Any) -> list[str]:
        """Every violation, each as ``path: problem``; empty when ``instance`` is valid."""
        return list(self._errors(instance, self.root, "$"))

    def _resolve(self, ref: str) -> Any:
        node: Any = self.root
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]
        return node

    def _errors(self, value: Any, schema: Any, path: str) -> Iterator[str]:
        if schema is True:
            return
        if schema is False:
            yield f"{path}: not allowed"
            return
        for keywords, check in _CHECKS:
            if not keywords.isdisjoint(schema):
                yield from check(self, value, schema, path)

    def _ref(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        yield from self._errors(value, self._resolve(schema["$ref"]), path)

    def _type(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        wanted = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_is_type(value, t) for t in wanted):
            yield f"{path}: expected {' or '.join(wanted)}, got {_kind(value)}"

    def _enum(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        if not any(_same(value, option) for option in schema["enum"]):
            yield f"{path}: {value!r} is not one of {schema['enum']!r}"

    def _const(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        if not _same(value, schema["const"]):
            yield f"{path}: must be {schema['const']!r}"

    def _object(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        if not isinstance(value, dict):
            return
        for name in schema.get("required", ()):
            if name not in value:
                yield f"{path}: missing required {name!r}"
        properties = schema.get("properties", {})
        for name, item in value.items():
            if name in properties:
                yield from self._errors(item, properties[name], f"{path}.{name}")
            elif "additionalProperties" in schema:
                yield from self._errors(item, schema["additionalProperties"], f"{path}.{name}")
            if "propertyNames" in schema:
                yield from self._errors(name, schema["propertyNames"], f"{path} key {name!r}")

    def _items(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        if isinstance(value, list):
            for i, item in enumerate(value):
                yield from self._errors(item, schema["items"], f"{path}[{i}]")

    def _bounds(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        if isinstance(value, str):
            if "minLength" in schema and len(value) < schema["minLength"]:
                yield f"{path}: shorter than {schema['minLength']}"
            if "maxLength" in schema and len(value) > schema["maxLength"]:
                yield f"{path}: longer than {schema['maxLength']}"
        if isinstance(value, list) and "maxItems" in schema and len(value) > schema["maxItems"]:
            yield f"{path}: more than {schema['maxItems']} items"
        if _kind(value) in ("integer", "number"):
            if "minimum" in schema and value < schema["minimum"]:
                yield f"{path}: less than {schema['minimum']}"
            if "maximum" in schema and value > schema["maximum"]:
                yield f"{path}: more than {schema['maximum']}"

    def _all_of(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        for sub in schema["allOf"]:
            yield from self._errors(value, sub, path)

    def _any_of(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        if not any(not list(self._errors(value, sub, path)) for sub in schema["anyOf"]):
            yield f"{path}: matches none of anyOf"

    def _one_of(self, value: Any, schema: Mapping[str, Any], path: str) -> Iterator[str]:
        results = [list(self._errors(value, sub, path)) for sub in schema["oneOf"]]
        passing = sum(1 for r in results if not r)
        if passing == 0:
            # The closest branch's errors say most about what is wrong.
            yield from min(results, key=len)
        elif passing > 1:
            yield f"{path}: matches {passing} branches of oneOf, expected exactly one"


_Check = Callable[[Validator, Any, Mapping[str, Any], str], Iterator[str]]
#: Each check with the keywords that call for it (a check runs once even if several are present).
_CHECKS: tuple[tuple[frozenset[str], _Check], ...] = (
    (frozenset({"$ref"}), Validator._ref),
    (frozenset({"type"}), Validator._type),
    (frozenset({"enum"}), Validator._enum),
    (frozenset({"const"}), Validator._const),
    (frozenset({"required", "properties", "additionalProperties", "propertyNames"}), Validator._object),
    (frozenset({"items"}), Validator._items),
    (frozenset({"minLength", "maxLength", "minimum", "maximum", "maxItems"}), Validator._bounds),
    (frozenset({"allOf"}), Validator._all_of),
    (frozenset({"anyOf"}), Validator._any_of),
    (frozenset({"oneOf"}), Validator._one_of),
)
