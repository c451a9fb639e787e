"""Notifications on SNS: ``MessageStructure=json`` with text for email and JSON for machines."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relayguard.domain.notify import sns_payload
from relayguard.ports import Notification

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
else:
    SNSClient = Any


class SnsNotifier:
    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        self.client = client
        self.topic_arn = topic_arn

    def publish(self, notification: Notification) -> None:
        # The body is built by the pure core, which also bounds server results to fit SNS's limit.
        self.client.publish(
            TopicArn=self.topic_arn,
            Subject=notification.subject[:100],
            MessageStructure="json",
            Message=sns_payload(notification.document, notification.text),
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in notification.attributes.items()},
        )
