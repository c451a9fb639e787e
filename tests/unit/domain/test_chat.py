"""Chat-ready notifications: every notification as an AWS Chatbot custom notification that reads at one
glance, carries the email's facts, cannot be turned into markup by what a server said, and follows the
schema (checked by our checker and by the ``jsonschema`` package alike)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from relayguard.domain import chat
from relayguard.domain.chat import CHAT_SCHEMA, InvalidChatMessage, chat_message, check_chat_message
from relayguard.domain.models import Outcome
from relayguard.domain.notify import (
    deliverability_message,
    digest_facts,
    digest_message,
    digest_text,
    run_stopped_facts,
    run_stopped_message,
    run_stopped_text,
    server_facts,
    server_message,
    server_text,
)
from relayguard.engine import ServerResult

from tests.unit.test_deliverability_notify import BAD, _finding, _result

DOCS_SCHEMA = Path(__file__).resolve().parents[3] / "docs" / "schemas" / "chatbot-custom-notification.v1.json"
REFERENCE = jsonschema.Draft202012Validator(json.loads(DOCS_SCHEMA.read_text()))
AT = "2026-11-25T13:23:10.000000+00:00"
RECORD = "s3://relayguard-records/records/sweep-1/web9/2026-11-25T13:23:10Z-job.json"


def failed(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"reason": "exim-restart-failed", "generation": "legacy", "exposed_before": True}
    values.update(fields)
    result = ServerResult(name=values.pop("name", "web9"), address="203.0.113.19", mode="fix",
                          outcome=Outcome.FAILED, **values)
    return server_message(result.to_json(), "failed", "sweep-1", "sweep", AT, record=RECORD)


def digest(**fields: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"mode": "fix", "trigger": "sweep", "total": 5,
                            "counts": {"remediated": 2, "compliant": 1, "failed": 1, "noncompliant": 1},
                            "started_at": "2026-11-25T13:00:00+00:00", "at": AT}
    args.update(fields)
    return digest_message("sweep-1", **args)


def stopped() -> dict[str, Any]:
    return run_stopped_message("sweep-1", mode="fix", trigger="sweep", reason="error-budget", total=20,
                               fixes={"started": 4, "finished": 4, "failed": 2},
                               limits={"max_changes": None, "canary": 1, "max_errors": "2"}, at=AT)


def both_checkers_accept(message: dict[str, Any]) -> None:
    assert list(REFERENCE.iter_errors(message)) == []
    assert check_chat_message(message) is message


def test_the_schema_in_the_docs_is_the_one_the_code_loads() -> None:
    assert json.loads(DOCS_SCHEMA.read_text()) == CHAT_SCHEMA
    jsonschema.Draft202012Validator.check_schema(CHAT_SCHEMA)


def test_a_failure_reads_at_one_glance_with_the_emails_facts() -> None:
    doc = failed(relay_probe={"ip": "198.51.100.23", "code": 250, "reply": "250 accepted"})
    message = chat_message(doc)
    both_checkers_accept(message)
    content = message["content"]
    # The title alone says what happened, to which server, how badly.
    assert content["title"] == ":rotating_light: RelayGuard: web9 failed (failed, exim-restart-failed)"
    assert content["textType"] == "client-markdown"
    # Every fact of the email is a line of the description, in the same order.
    lines = content["description"].splitlines()
    assert lines[0] == "*Server:* `web9`"
    assert lines[1:] == [f"*{label}:* {value}" for label, value in server_facts(doc)]
    for label, value in server_facts(doc):
        assert f"{label}: {value}" in server_text(doc)
    assert content["nextSteps"][0] == "Look up `exim-restart-failed` in docs/operations.md, Troubleshooting"
    assert any(RECORD in step for step in content["nextSteps"])
    meta = message["metadata"]
    assert meta["threadId"] == "relayguard-run-sweep-1"  # a run's messages thread together
    assert meta["eventType"] == "server-result"
    assert meta["relatedResources"] == [RECORD]
    assert meta["additionalContext"]["severity"] == "critical"


def test_the_digest_and_the_stop_carry_the_same_facts_as_their_email() -> None:
    for doc, facts, text in ((digest(), digest_facts, digest_text), (digest(stopped="error-budget"), digest_facts,
                             digest_text), (stopped(), run_stopped_facts, run_stopped_text)):
        message = chat_message(doc)
        both_checkers_accept(message)
        lines = message["content"]["description"].splitlines()
        assert lines == [f"*{label}:* {value}" for label, value in facts(doc)]
        for label, value in facts(doc):
            assert f"{label}: {value}" in text(doc)
        assert message["metadata"]["threadId"] == "relayguard-run-sweep-1"
    title = chat_message(digest(stopped="error-budget"))["content"]["title"]
    assert title == (":rotating_light: RelayGuard run sweep-1: failed, 5 servers, 1 failed, STOPPED (error-budget)")
    assert "By outcome: compliant 1, failed 1, noncompliant 1, remediated 2" in digest_text(digest()).splitlines()


def test_severity_leads_the_title() -> None:
    quiet = digest(counts={"compliant": 5})
    assert chat_message(quiet)["content"]["title"].startswith(":large_green_circle: ")
    assert "nextSteps" not in chat_message(quiet)["content"]  # nothing to do: no steps
    assert chat_message(stopped())["content"]["title"].startswith(":red_circle: ")


def test_what_a_server_says_cannot_mention_a_channel_or_plant_a_link() -> None:
    doc = failed(name="web9<!channel>", reason="whmapi1-refused: <https://evil.example|click> `x`",
                 relay_probe={"ip": "198.51.100.23", "code": 250, "reply": "250 <!here> & ok"},
                 affected_mailboxes=["<@U0123>@example.com"])
    message = chat_message(doc)
    both_checkers_accept(message)
    shown = json.dumps([message["content"], message["metadata"]["summary"]])
    for markup in ("<!channel>", "<!here>", "<https://", "<@U0123>"):
        assert markup not in shown, markup
    assert "250 &lt;!here&gt; &amp; ok" in message["content"]["description"]
    assert "`web9&lt;!channel&gt;`" in message["content"]["description"]


def test_any_size_fits_the_schema() -> None:
    doc = failed(reason="x" * 5000, warnings=["w" * 250] * 20, affected_mailboxes=[f"u{i}@example.com" for i in
                                                                                     range(500)],
                 relay_probe={"ip": "198.51.100.23", "code": 550, "reply": "5" * 1000},
                 plan=["step " + "s" * 300] * 30)
    message = chat_message(doc)
    both_checkers_accept(message)
    assert len(message["content"]["description"]) <= chat.DESCRIPTION_LIMIT
    assert "and 495 more" in message["content"]["description"] or "cut" in message["content"]["description"]


@pytest.mark.parametrize("outcome", list(Outcome))
def test_every_outcome_gives_a_valid_chat_message(outcome: Outcome) -> None:
    result = ServerResult(name="web1", address="203.0.113.10", mode="fix", outcome=outcome,
                          reason="max-changes" if outcome == Outcome.SKIPPED else "")
    both_checkers_accept(chat_message(server_message(result.to_json(), "failed", "sweep-1", "sweep", AT)))


def test_a_broken_message_is_refused_by_both_checkers() -> None:
    good = chat_message(digest())
    for broken in ({**good, "version": "2.0"}, {**good, "content": {**good["content"], "textType": "html"}},
                   {**good, "content": {**good["content"], "keywords": ["k"] * 7}},
                   {**good, "content": {**good["content"], "title": "t" * 251}},
                   {**good, "extra": 1}):
        assert list(REFERENCE.iter_errors(broken))
        with pytest.raises(InvalidChatMessage):
            check_chat_message(broken)


def test_deliverability_findings_read_at_one_glance_too() -> None:
    findings = (*BAD, *(_finding(f"c{i}.test", "missing", "valid", "gmail-bulk-senders") for i in range(8)))
    doc = deliverability_message(_result(*findings).to_json(), "run-1", "sweep", AT, record=RECORD)
    message = chat_message(doc)
    both_checkers_accept(message)
    content = message["content"]
    assert content["title"].startswith(":warning: RelayGuard: web1 deliverability: ")
    assert "- `a.test` (192.0.2.1): gmail-all-senders, gmail-bulk-senders" in content["description"]
    assert "- and 4 more, listed in the record" in content["description"]
    assert message["metadata"]["eventType"] == "server-deliverability"



def test_the_example_in_the_deploy_guide_is_what_the_code_sends() -> None:
    deploy = (Path(__file__).resolve().parents[3] / "docs" / "deploy.md").read_text()
    after = deploy.split("A failed fix, as the chat topic carries it", 1)[1]
    shown = json.loads(after.split("```json\n", 1)[1].split("\n```", 1)[0])
    result = ServerResult(name="web9", address="203.0.113.19", mode="fix", outcome=Outcome.FAILED,
                          reason="exim-restart-failed", generation="legacy", exposed_before=True, exposed_after=True,
                          affected_mailboxes=["alice@example.com", "bob@example.com"])
    doc = server_message(result.to_json(), "failed", "sweep-1", "sweep", "2026-12-06T06:01:12.000000+00:00",
                         record="s3://relayguard-records/records/sweep-1/web9/20261206T060112Z-job.json")
    assert shown == chat_message(doc)
