"""The chat topic's adapter: the Chatbot document alone as the body, the results topic first, and a chat
publish that fails never makes the job retry (which would announce the change twice)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, cast

import pytest
from botocore.exceptions import ClientError
from relayguard.adapters.notify_chatbot import ChatbotNotifier, WithChat
from relayguard.domain.chat import InvalidChatMessage, chat_message
from relayguard.domain.notify import attributes, digest_message, digest_text
from relayguard.ports import Notification

from tests.fakes import FakeMetrics, FakeNotifier

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient

CHAT = "arn:aws:sns:eu-west-1:123456789012:chat"
AT = "2026-11-25T13:23:10+00:00"


class RecordingSns:
    """Stands in for boto3's SNS client: keeps what ``publish`` was called with; may refuse."""

    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[dict[str, Any]] = []
        self.refuse = refuse

    def publish(self, **kwargs: Any) -> dict[str, str]:
        if self.refuse:
            raise ClientError({"Error": {"Code": "AuthorizationError", "Message": "no"}}, "Publish")
        self.calls.append(kwargs)
        return {"MessageId": str(len(self.calls))}


def notification() -> Notification:
    doc = digest_message("sweep-1", mode="fix", trigger="sweep", total=2, counts={"failed": 1, "compliant": 1},
                         started_at=AT, at=AT)
    return Notification(subject="RelayGuard run sweep-1: failed", document=doc, text=digest_text(doc),
                        attributes=attributes(doc))


def test_the_chat_topic_gets_the_chatbot_document_as_the_whole_body_with_the_filter_attributes() -> None:
    sns = RecordingSns()
    note = notification()
    ChatbotNotifier(cast("SNSClient", sns), CHAT).publish(note)
    (call,) = sns.calls
    assert call["TopicArn"] == CHAT
    assert "MessageStructure" not in call  # Chatbot reads the body itself, it has no protocol key
    assert json.loads(call["Message"]) == chat_message(note.document)
    assert {k: v["StringValue"] for k, v in call["MessageAttributes"].items()} == note.attributes


def test_results_go_first_and_a_failed_chat_publish_is_logged_and_counted_not_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    results, metrics = FakeNotifier(), FakeMetrics()
    chat = ChatbotNotifier(cast("SNSClient", RecordingSns(refuse=True)), CHAT)
    WithChat(results, chat, metrics).publish(notification())
    assert len(results.published) == 1
    assert "chat notification not published" in caplog.text
    assert "ClientError" in caplog.text
    assert metrics.values("ChatNotificationsFailed") == [1]


def test_a_chat_copy_that_goes_out_counts_no_failure() -> None:
    metrics = FakeMetrics()
    WithChat(FakeNotifier(), ChatbotNotifier(cast("SNSClient", RecordingSns()), CHAT), metrics).publish(notification())
    assert metrics.points == []


def test_a_results_publish_that_fails_raises_and_sends_no_chat_copy() -> None:
    chat = RecordingSns()
    with pytest.raises(ConnectionError):
        WithChat(FakeNotifier(failures=1), ChatbotNotifier(cast("SNSClient", chat), CHAT),
                 FakeMetrics()).publish(notification())
    assert chat.calls == []


def test_a_document_the_chat_schema_refuses_stops_before_anything_is_sent() -> None:
    results, chat = FakeNotifier(), RecordingSns()
    note = notification()
    broken = Notification(note.subject, {**note.document, "mode": ""}, note.text, note.attributes)
    with pytest.raises(InvalidChatMessage):
        WithChat(results, ChatbotNotifier(cast("SNSClient", chat), CHAT), FakeMetrics()).publish(broken)
    assert (results.published, chat.calls) == ([], [])
