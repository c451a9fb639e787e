"""Chat-ready notifications on SNS: AWS Chatbot custom notifications on the stack's chat topic.

AWS Chatbot subscribes to the chat topic and forwards each message to Slack or Microsoft Teams; it
reads the message body as one JSON document and drops anything that is not a custom notification, so
the body is that document alone (no ``MessageStructure=json`` envelope: Chatbot has no protocol key).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from relayguard.domain.chat import chat_message
from relayguard.domain.metrics import CHAT_NOTIFICATIONS_FAILED, count_points
from relayguard.ports import MetricSink, Notification, Notifier

if TYPE_CHECKING:
    from mypy_boto3_sns import SNSClient
else:
    SNSClient = Any

logger = logging.getLogger(__name__)


class ChatbotNotifier:
    """Publishes the chat variant of each notification to one topic."""

    def __init__(self, client: SNSClient, topic_arn: str) -> None:
        self.client = client
        self.topic_arn = topic_arn

    def publish(self, notification: Notification) -> None:
        self.send(chat_message(notification.document), notification.attributes)

    def send(self, message: dict[str, Any], attributes: dict[str, str]) -> None:
        self.client.publish(
            TopicArn=self.topic_arn,
            Message=json.dumps(message, ensure_ascii=False),
            # The results topic's attributes, so a Chatbot subscription can filter too (say, severity).
            MessageAttributes={k: {"DataType": "String", "StringValue": v} for k, v in attributes.items()},
        )


class WithChat:
    """The results topic's notifier, and the chat topic after it.

    The results topic is the contract (email, pagers, queues): its publish failing raises, so the job is
    retried and the change stays owed (services.Publisher). The chat copy is built first, so a message
    that breaks the chat schema stops everything before anything is sent; its publish goes second and
    its failure is logged and counted (``ChatNotificationsFailed``, which an alarm watches), not raised: a
    retry for the chat copy would announce the change twice to everyone else."""

    def __init__(self, results: Notifier, chat: ChatbotNotifier, metrics: MetricSink) -> None:
        self.results = results
        self.chat = chat
        self.metrics = metrics

    def publish(self, notification: Notification) -> None:
        message = chat_message(notification.document)
        self.results.publish(notification)
        try:
            self.chat.send(message, notification.attributes)
        except (BotoCoreError, ClientError) as exc:
            logger.warning("chat notification not published to %s: %s", self.chat.topic_arn, type(exc).__name__)
            self.metrics.emit(count_points(CHAT_NOTIFICATIONS_FAILED, 1))
