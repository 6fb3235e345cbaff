"""The API's message types (api/_messages.py) and its OpenAPI document say the same thing."""

from __future__ import annotations

import types
import typing
from typing import Any, Literal, NotRequired, Union, get_args, get_origin, get_type_hints

import pytest

from heartline.api import openapi_spec
from heartline.api._messages import EXIT_REASONS, SCHEMAS
from heartline.supervise._policy import ExitInfo

_JSON = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _resolve(schema: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.rsplit("/", 1)[1]
    return spec["components"]["schemas"][name]


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and typing.is_typeddict(tp)


def _compare(tp: Any, schema: dict[str, Any], spec: dict[str, Any], where: str) -> None:
    """Raise AssertionError where the type and the schema disagree."""
    schema = _resolve(schema, spec)
    if get_origin(tp) is NotRequired:
        tp = get_args(tp)[0]
    nullable = False
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        nullable = len(args) < len(get_args(tp))
        assert len(args) == 1, f"{where}: one type or None, got {tp}"
        tp = args[0]
    if nullable:
        assert schema.get("nullable") is True or "$ref" in schema, f"{where}: not nullable"
    if _is_typeddict(tp):
        assert schema.get("type", "object") == "object", where
        props = schema.get("properties", {})
        hints = get_type_hints(tp, include_extras=True)
        assert set(props) == set(hints), f"{where}: {set(props) ^ set(hints)} differ"
        for key in schema.get("required", []):
            assert key in tp.__required_keys__, f"{where}.{key}: required in the schema only"
        for key, sub in hints.items():
            _compare(sub, props[key], spec, f"{where}.{key}")
        return
    if get_origin(tp) is Literal:
        assert schema["type"] == "string", where
        assert list(schema.get("enum", [])) == list(get_args(tp)), f"{where}: enum differs"
        return
    if get_origin(tp) is list:
        assert schema["type"] == "array", where
        _compare(get_args(tp)[0], schema["items"], spec, f"{where}[]")
        return
    if tp is float:
        assert schema["type"] in ("number", "integer"), f"{where}: {schema['type']}"
        return
    assert schema["type"] == _JSON[tp], f"{where}: {schema['type']} is not {tp.__name__}"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_message_type_matches_its_openapi_schema(name: str) -> None:
    """Same fields, same required ones, same JSON types, same enums, same nullability."""
    spec = openapi_spec()
    _compare(SCHEMAS[name], spec["components"]["schemas"][name], spec, name)


def test_the_comparison_catches_a_difference() -> None:
    """A field added to a type but not documented (or a type that differs) is reported."""
    spec = openapi_spec()

    class Extra(typing.TypedDict):
        name: str
        stopped: bool
        killed: bool
        exit: None
        surprise: int

    with pytest.raises(AssertionError, match="surprise"):
        _compare(Extra, spec["components"]["schemas"]["StopResult"], spec, "StopResult")


def test_exit_reasons_are_one_closed_set() -> None:
    """Every reason an ExitInfo can carry is in the closed set the API documents."""
    assert set(EXIT_REASONS) == {
        "exit", "signal", "spawn-failed", "unknown", "watchdog", "check", "start-timeout",
    }  # fmt: skip
    with pytest.raises(ValueError, match="not an exit reason"):
        ExitInfo("exploded")  # type: ignore[arg-type]
