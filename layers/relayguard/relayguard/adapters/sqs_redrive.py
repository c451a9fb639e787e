"""Dead-letter redrive on SQS: the stack's outputs from CloudFormation, then SQS's own message move task,
or a receive, send, delete copy where SQS lacks it (docs/operations.md, Redriving dead-lettered jobs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from botocore.exceptions import BotoCoreError, ClientError

from relayguard.domain.redrive import BATCH, copy_entries
from relayguard.errors import RelayGuardError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
else:
    SQSClient = Any

#: Seconds a copied message stays invisible to other consumers between its receive and its delete.
COPY_VISIBILITY = 60
#: Long-poll wait of each copy receive: a short poll may answer empty while messages wait on other hosts.
COPY_WAIT = 1


class RedriveError(RelayGuardError):
    """CloudFormation or SQS refused a step of a redrive (the message names the step and the error code)."""


class SqsDeadLetterQueues:
    """:class:`~relayguard.ports.DeadLetterQueues` on SQS and CloudFormation."""

    def __init__(self, sqs: SQSClient, cloudformation: Any) -> None:
        self.sqs = sqs
        self.cloudformation = cloudformation

    def stack_outputs(self, stack: str) -> dict[str, str]:
        try:
            (described,) = self.cloudformation.describe_stacks(StackName=stack)["Stacks"]
        except (BotoCoreError, ClientError) as exc:
            raise RedriveError(f"cannot read the outputs of stack {stack!r}: {_why(exc)}") from exc
        return {o["OutputKey"]: o["OutputValue"] for o in described.get("Outputs") or []}

    def _attribute(self, queue_url: str, name: Literal["ApproximateNumberOfMessages", "QueueArn"]) -> str:
        try:
            attributes = self.sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=[name])
        except (BotoCoreError, ClientError) as exc:
            raise RedriveError(f"cannot read {name} of {queue_url}: {_why(exc)}") from exc
        return attributes["Attributes"][name]

    def waiting(self, queue_url: str) -> int:
        return int(self._attribute(queue_url, "ApproximateNumberOfMessages"))

    def start_move(self, source_url: str, destination_url: str) -> tuple[str, str]:
        source, destination = self._attribute(source_url, "QueueArn"), self._attribute(destination_url, "QueueArn")
        try:
            task = self.sqs.start_message_move_task(SourceArn=source, DestinationArn=destination)
        except (BotoCoreError, ClientError) as exc:
            raise RedriveError(f"SQS did not start the message move task: {_why(exc)} (an SQS without "
                               "StartMessageMoveTask: use --copy)") from exc
        return task["TaskHandle"], source

    def copy(self, source_url: str, destination_url: str, limit: int | None) -> int:
        copied = 0
        while limit is None or copied < limit:
            want = BATCH if limit is None else min(BATCH, limit - copied)
            try:
                batch = self.sqs.receive_message(
                    QueueUrl=source_url, MaxNumberOfMessages=want, WaitTimeSeconds=COPY_WAIT,
                    VisibilityTimeout=COPY_VISIBILITY, MessageAttributeNames=["All"]).get("Messages", [])
                if not batch:
                    return copied
                sent = self.sqs.send_message_batch(QueueUrl=destination_url, Entries=copy_entries(batch))  # type: ignore[arg-type]
                # Only what arrived on the queue leaves the dead-letter queue; a message whose send failed
                # becomes visible there again after COPY_VISIBILITY seconds.
                done = [batch[int(entry["Id"])] for entry in sent.get("Successful", [])]
                if done:
                    self.sqs.delete_message_batch(QueueUrl=source_url, Entries=[
                        {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
            except (BotoCoreError, ClientError) as exc:
                raise RedriveError(f"copy stopped after {copied} job(s): {_why(exc)}") from exc
            copied += len(done)
            if sent.get("Failed"):
                codes = ", ".join(sorted({f["Code"] for f in sent["Failed"]}))
                raise RedriveError(f"copy stopped after {copied} job(s): SQS refused {len(sent['Failed'])} ({codes}); "
                                   "they stay in the dead-letter queue")
        return copied


def _why(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".rstrip(": ")
    return type(exc).__name__
