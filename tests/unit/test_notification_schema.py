"""The notification schema in the docs is the one the code checks every message against, and the check works.

``relayguard.domain.schema`` is a small checker written because the Lambda layer has no
``jsonschema``; these tests hold its verdicts against the ``jsonschema`` package's (a test-only
dependency) on valid messages and on many broken ones.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from relayguard.domain import notify
from relayguard.domain.models import Outcome
from relayguard.domain.notify import InvalidNotification, check_notification, digest_message, server_message
from relayguard.domain.schema import SchemaError, Validator
from relayguard.engine import ServerResult

DOCS_SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "notification.v1.json"
REFERENCE = jsonschema.Draft202012Validator(json.loads(DOCS_SCHEMA.read_text()))
OURS = Validator(notify.NOTIFICATION_SCHEMA)


def result(outcome: Outcome, **fields: Any) -> dict[str, Any]:
    return ServerResult(name="web1", address="203.0.113.10", mode="fix", outcome=outcome, **fields).to_json()


def server_doc(outcome: Outcome = Outcome.REMEDIATED, change: str = "remediated") -> dict[str, Any]:
    return server_message(result(outcome, generation="modern", exposed_before=True, exposed_after=False,
                                 restarted=True, warnings=["admin-exception:alwaysrelay"],
                                 affected_mailboxes=["alice@example.com"],
                                 relay_probe={"ip": "198.51.100.23", "code": 550, "reply": "550 not permitted"}),
                          change, "sweep-1", "sweep", "2026-11-25T13:23:10.000000+00:00")


def digest_doc() -> dict[str, Any]:
    return digest_message("sweep-1", mode="audit", trigger="sweep", total=3,
                          counts={"compliant": 1, "noncompliant": 1, "unreachable": 1},
                          started_at="2026-11-25T13:00:00+00:00", at="2026-11-25T13:05:00+00:00")


def test_the_schema_in_the_docs_is_the_file_the_code_loads() -> None:
    loaded = resources.files("relayguard").joinpath(notify.SCHEMA_RESOURCE)
    assert DOCS_SCHEMA.samefile(Path(str(loaded)))
    assert json.loads(DOCS_SCHEMA.read_text()) == notify.NOTIFICATION_SCHEMA
    assert notify.NOTIFICATION_SCHEMA["$defs"]["common"]["properties"]["schema"]["const"] == notify.SCHEMA


def test_the_schemas_outcome_vocabulary_is_the_outcome_enum() -> None:
    assert set(notify.NOTIFICATION_SCHEMA["$defs"]["outcome"]["enum"]) == {str(o) for o in Outcome}


@pytest.mark.parametrize("outcome", list(Outcome))
def test_a_message_for_every_outcome_passes_both_checkers(outcome: Outcome) -> None:
    change = {Outcome.REMEDIATED: "remediated", Outcome.NONCOMPLIANT: "noncompliant", Outcome.COMPLIANT: "recovered",
              Outcome.NOT_CPANEL: "recovered"}.get(outcome, "failed")
    doc = server_message(result(outcome), change, "alert-a1", "alert", "2026-11-25T13:23:10+00:00")
    assert OURS.errors(doc) == []
    REFERENCE.validate(doc)


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.pop(key)


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d.__setitem__(key, value)


SERVER_BREAKAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    **{f"without {k}": _drop(k) for k in ("schema", "event", "change", "server", "outcome", "reason", "generation",
                                          "exposed_before", "exposed_after", "restarted", "warnings",
                                          "affected_mailboxes", "relay_probe", "run_id", "mode", "at", "severity")},
    "another schema version": _set("schema", "relayguard.notification/v2"),
    "unknown outcome": _set("outcome", "exploded"),
    "unknown change": _set("change", "improved"),
    "unknown severity": _set("severity", "fatal"),
    "unknown trigger": _set("trigger", "cron"),
    "unknown mode": _set("mode", "repair"),
    "empty server": _set("server", ""),
    "empty run id": _set("run_id", ""),
    "restarted as 1": _set("restarted", 1),
    "exposed as a string": _set("exposed_after", "no"),
    "warnings not strings": _set("warnings", [1]),
    "mailboxes not a list": _set("affected_mailboxes", "alice@example.com"),
    "probe code as text": lambda d: d["relay_probe"].__setitem__("code", "550"),
    "probe code as a boolean": lambda d: d["relay_probe"].__setitem__("code", True),
    "relay probe not an object": _set("relay_probe", []),
}
DIGEST_BREAKAGES: dict[str, Callable[[dict[str, Any]], None]] = {
    **{f"without {k}": _drop(k) for k in ("started_at", "total", "counts", "failed", "outcome", "severity")},
    "digest outcome of a server": _set("outcome", "remediated"),
    "negative total": _set("total", -1),
    "total as a float": _set("total", 2.5),
    "a zero count": lambda d: d["counts"].__setitem__("compliant", 0),
    "a count for no outcome": lambda d: d["counts"].__setitem__("bogus", 1),
    "failed as a boolean": _set("failed", False),
}


@pytest.mark.parametrize(("make", "breakage"), [
    *((server_doc, b) for b in SERVER_BREAKAGES.values()), *((digest_doc, b) for b in DIGEST_BREAKAGES.values()),
], ids=[*SERVER_BREAKAGES, *DIGEST_BREAKAGES])
def test_both_checkers_reject_each_broken_message(make: Callable[[], dict[str, Any]],
                                                    breakage: Callable[[dict[str, Any]], None]) -> None:
    doc = copy.deepcopy(make())
    breakage(doc)
    assert not REFERENCE.is_valid(doc)
    assert OURS.errors(doc) != []
    with pytest.raises(InvalidNotification, match=r"relayguard\.notification/v1 violated"):
        check_notification(doc)


@pytest.mark.parametrize("make", [server_doc, digest_doc])
def test_both_checkers_accept_the_builders_messages(make: Callable[[], dict[str, Any]]) -> None:
    doc = make()
    assert OURS.errors(doc) == []
    assert REFERENCE.is_valid(doc)
    assert check_notification(doc) is doc


def test_an_error_names_the_field_and_the_problem() -> None:
    doc = server_doc()
    doc["outcome"] = "exploded"
    (problem,) = OURS.errors(doc)
    assert problem.startswith("$.outcome: 'exploded' is not one of ")


def test_the_builders_refuse_to_produce_a_message_outside_the_schema() -> None:
    with pytest.raises(InvalidNotification, match=r"\$\.change: 'someday' is not one of"):
        server_message(result(Outcome.FAILED), "someday", "sweep-1", "sweep", "2026-11-25T13:23:10+00:00")
    with pytest.raises(InvalidNotification, match=r"\$\.trigger"):
        digest_message("r", mode="audit", trigger="cron", total=0, counts={}, started_at="x", at="y")


@pytest.mark.parametrize("schema", [
    {"type": "string", "pattern": "^a"},
    {"properties": {"a": {"uniqueItems": True}}},
    {"$ref": "https://example.com/other.json"},
    {"oneOf": [{"type": "string"}, {"if": {"type": "string"}}]},
])
def test_a_schema_with_a_keyword_the_checker_does_not_enforce_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        Validator(schema)


@pytest.mark.parametrize(("schema", "instance"), [
    ({"type": "integer"}, True),
    ({"type": "integer"}, 2.0),
    ({"type": "number"}, 2),
    ({"enum": [1]}, True),
    ({"const": False}, 0),
    ({"const": {"a": [1, 2]}}, {"a": [1, 2]}),
    ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, 1),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, None),
    ({"additionalProperties": False, "properties": {"a": True}}, {"a": 1, "b": 2}),
    ({"propertyNames": {"enum": ["a"]}}, {"b": 1}),
    ({"maxLength": 2, "minimum": 3}, "abc"),
    ({"maximum": 3}, 4),
    ({"items": {"type": "string"}}, ["a", 1]),
    (False, 1),
])
def test_json_semantics_agree_with_jsonschema(schema: Any, instance: Any) -> None:
    assert (Validator(schema).errors(instance) == []) == jsonschema.Draft202012Validator(schema).is_valid(instance)
