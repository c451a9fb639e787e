"""Notifications on SNS: ``MessageStructure=json`` with text for email and JSON for machines."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

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
        document = json.dumps(notification.document, sort_keys=True)
        message = {"default": document, "email": notification.text, "email-json": document, "sqs": document,
                   "lambda": document, "https": document}
        self.client.publish(
            TopicArn=self.topic_arn,
            Subject=notification.subject[:100],
            MessageStructure="json",
            Message=json.dumps(message),
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in notification.attributes.items()},
        )
