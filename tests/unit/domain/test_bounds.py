"""The documented bounds: views of a result are cut by rule, marked and counted; the record stays whole;
an SNS message fits SNS's limit for any fleet, whatever the characters."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
from relayguard.domain.bounds import (
    ITEM_LIMIT,
    MAILBOX_LIMIT,
    OMITTED,
    OUTPUT_LIMIT,
    bounded_result,
    clip_text,
    state_result,
)
from relayguard.domain.models import Outcome, StepResult
from relayguard.domain.notify import (
    MESSAGE_BUDGET,
    NOTIFY_LIST_LIMIT,
    payload_size,
    server_message,
    server_text,
    sns_payload,
)
from relayguard.engine import ServerResult

from tests.unit.samples import NOTIFICATION_SCHEMA

AT = "2026-11-25T13:23:10.000000+00:00"
LOCATION = "s3://relayguard-records/records/sweep-1/web1/20261125T132310000000Z-0123abcd.json"
REFERENCE = jsonschema.Draft202012Validator(NOTIFICATION_SCHEMA)


def big_result(mailboxes: int = 10_000, output: int = 50_000, mailbox: str = "") -> dict[str, Any]:
    names = [mailbox or f"user{i}@customer{i % 97}.example.com" for i in range(mailboxes)]
    return ServerResult(
        name="web1", address="203.0.113.10", mode="fix", outcome=Outcome.REMEDIATED, generation="legacy",
        exposed_before=True, exposed_after=False, restarted=True, warnings=["admin-exception:alwaysrelay"],
        steps=[StepResult("finish", 0, 1.0, "o" * output, "short")], affected_mailboxes=names,
        relay_probe={"ip": "198.51.100.23", "code": 550, "reply": "550 relay not permitted"},
        before={"exim_status": "s" * (OUTPUT_LIMIT + 1), "lists": {"relayhosts": {"entries": ["198.51.100.9"]}}},
    ).to_json()


def test_short_text_is_left_alone_and_long_text_keeps_its_start_and_says_how_long_it_was() -> None:
    assert clip_text("exim is running") == "exim is running"
    clipped = clip_text("x" * 5000, 100)
    assert clipped.startswith("x" * 100 + "\n[relayguard: clipped, first 100 of 5000 characters")
    assert "x" * 101 not in clipped


def test_a_bounded_view_lists_the_first_mailboxes_counts_all_and_says_where_the_record_is() -> None:
    record = big_result()
    view = bounded_result(record, LOCATION)
    assert view["affected_mailboxes"] == record["affected_mailboxes"][:MAILBOX_LIMIT]
    assert view["affected_mailboxes_total"] == 10_000
    assert view["record"] == LOCATION
    (step,) = view["steps"]
    assert step["stdout"] == clip_text("o" * 50_000)
    assert step["stdout_total"] == 50_000
    assert step["stderr"] == "short"
    assert "stderr_total" not in step
    assert view["before"]["exim_status"] == clip_text("s" * (OUTPUT_LIMIT + 1))
    assert view["before"]["lists"] == record["before"]["lists"]  # revert --record restores these: whole
    # The record itself is untouched: it is what goes to S3 or --record-dir.
    assert len(record["affected_mailboxes"]) == 10_000
    assert len(record["steps"][0]["stdout"]) == 50_000


def test_a_listed_mailbox_longer_than_any_address_is_cut_with_an_ellipsis() -> None:
    view = bounded_result(big_result(mailboxes=1, mailbox="m" * 1000))
    assert view["affected_mailboxes"] == ["m" * (ITEM_LIMIT - 1) + "…"]


def test_the_state_table_gets_the_whole_view_when_it_fits_and_drops_only_list_sized_fields_when_not() -> None:
    small = bounded_result(big_result(mailboxes=3, output=10), LOCATION)
    assert state_result(small) == small
    huge = bounded_result(big_result(), LOCATION)
    huge["before"]["lists"]["relayhosts"]["entries"] = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
                                                        for i in range(40_000)]
    kept = state_result(huge)
    assert (kept["before"], kept["after"], kept["revert"]) == (OMITTED, OMITTED, OMITTED)
    assert kept["record"] == LOCATION
    assert kept["affected_mailboxes_total"] == 10_000
    assert len(json.dumps(kept).encode()) <= 300_000


def test_a_10000_mailbox_result_makes_one_valid_message_well_under_the_sns_limit() -> None:
    doc = server_message(big_result(), "remediated", "sweep-1", "sweep", AT, record=LOCATION)
    assert REFERENCE.is_valid(doc), list(REFERENCE.iter_errors(doc))
    assert len(doc["affected_mailboxes"]) == NOTIFY_LIST_LIMIT
    assert (doc["affected_mailboxes_total"], doc["record"]) == (10_000, LOCATION)
    text = server_text(doc)
    assert "... and 9980 more, listed in the record" in text
    assert LOCATION in text
    # MessageStructure=json: the body SNS measures is the JSON of every protocol's string.
    body = sns_payload(doc, text)
    assert json.loads(json.loads(body)["sqs"]) == doc
    assert payload_size(doc, text) == len(body.encode()) < MESSAGE_BUDGET < 256 * 1024


def test_a_message_of_the_worst_characters_still_fits_by_giving_up_its_lists() -> None:
    # Control characters cost the most: 6 characters escaped once, 7 bytes escaped twice.
    worst = big_result(mailbox="\x01" * 5000)
    worst["reason"] = "\x02" * 100_000
    worst["warnings"] = ["\x03" * 5000] * 500
    worst["relay_probe"]["reply"] = "\x04" * 100_000
    doc = server_message(worst, "failed", "sweep-1", "sweep", AT, record=LOCATION)
    assert payload_size(doc, server_text(doc)) <= MESSAGE_BUDGET
    assert REFERENCE.is_valid(doc)
    assert doc["affected_mailboxes_total"] == 10_000
    assert doc["record"] == LOCATION
    assert len(doc["affected_mailboxes"]) < NOTIFY_LIST_LIMIT


def test_an_ordinary_message_keeps_every_mailbox_and_warning_it_has() -> None:
    doc = server_message(big_result(mailboxes=2, output=10), "remediated", "sweep-1", "sweep", AT)
    assert doc["affected_mailboxes"] == ["user0@customer0.example.com", "user1@customer1.example.com"]
    assert (doc["affected_mailboxes_total"], doc["record"]) == (2, None)
    assert doc["warnings"] == ["admin-exception:alwaysrelay"]
