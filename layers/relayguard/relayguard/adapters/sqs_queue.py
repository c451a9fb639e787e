"""Job queues on SQS: ``SendMessageBatch`` in tens (the API's limit)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

if TYPE_CHECKING:
    from mypy_boto3_sqs import SQSClient
else:
    SQSClient = Any

BATCH = 10


class SqsJobQueue:
    def __init__(self, client: SQSClient) -> None:
        self.client = client

    def send(self, queue_url: str, bodies: list[str], delay_seconds: int = 0) -> list[str]:
        failed: list[str] = []
        for start in range(0, len(bodies), BATCH):
            chunk = bodies[start : start + BATCH]
            entries = [{"Id": str(i), "MessageBody": body, "DelaySeconds": delay_seconds}
                       for i, body in enumerate(chunk)]
            response = self.client.send_message_batch(QueueUrl=queue_url, Entries=entries)  # type: ignore[arg-type]
            failed += [chunk[int(f["Id"])] for f in response.get("Failed", [])]
        return failed

    def return_now(self, queue_url: str, receipt_handle: str) -> bool:
        try:
            self.client.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=receipt_handle,
                                                  VisibilityTimeout=0)
        except ClientError:
            return False  # the delivery still fails: SQS redelivers after the visibility timeout
        return True
