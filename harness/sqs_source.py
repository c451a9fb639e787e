"""An SQS event source mapping, played by hand or by threads against the moto stack.

:class:`Poller` receives up to the mapping's ``BatchSize`` messages (read from the function's
``Events`` in the template, or an ``AWS::Lambda::EventSourceMapping``), hands them to the function
as an SQS event, deletes the ones the function did not report in ``batchItemFailures`` and leaves
the rest to SQS (moto applies the redrive policy on later receives, as SQS does).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from harness.aws import REGION, Stack
from harness.template import load_template


def _mapping(template: str, function: str, queue: str) -> dict[str, Any]:
    """The SQS event source mapping of ``function`` on ``queue``: an ``AWS::Lambda::EventSourceMapping``
    resource or an ``SQS`` event of the function itself."""
    resources = load_template(template)["Resources"]
    arn = {"Fn::GetAtt": [queue, "Arn"]}
    for resource in resources.values():
        props = resource.get("Properties") or {}
        if (resource.get("Type") == "AWS::Lambda::EventSourceMapping" and props.get("EventSourceArn") == arn
                and props.get("FunctionName") == {"Ref": function}):
            return dict(props)
    for event in ((resources[function].get("Properties") or {}).get("Events") or {}).values():
        if event.get("Type") == "SQS" and (event.get("Properties") or {}).get("Queue") == arn:
            return dict(event["Properties"])
    raise KeyError(f"{function} has no SQS event source on {queue}")


def sqs_event(records: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS poller hands a function for ``records`` (ReceiveMessage output)."""
    return {"Records": [{
        "messageId": m["MessageId"],
        "receiptHandle": m["ReceiptHandle"],
        "body": m["Body"],
        "attributes": {k: v for k, v in (m.get("Attributes") or {}).items() if k in (
            "ApproximateReceiveCount", "SentTimestamp", "SenderId", "ApproximateFirstReceiveTimestamp")},
        "messageAttributes": {},
        "md5OfBody": m["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    } for m in records]}


@dataclass
class Poller:
    """One SQS event source mapping of ``function`` on ``queue``, driven by hand or by a thread."""

    stack: Stack
    function: str
    queue: str
    invocations: list[dict[str, Any]] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        mapping = _mapping(self.stack.template, self.function, self.queue)
        self.batch_size = int(mapping.get("BatchSize", 10))
        self.reports_failures = "ReportBatchItemFailures" in (mapping.get("FunctionResponseTypes") or [])

    def poll_once(self, remaining_ms: int | None = None) -> dict[str, Any] | None:
        """Receive one batch and invoke the function with it; ``None`` when the queue is empty."""
        sqs = self.stack.client("sqs")
        url = self.stack.queue_url(self.queue)
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=self.batch_size, WaitTimeSeconds=0,
                                       AttributeNames=["All"]).get("Messages", [])
        if not messages:
            return None
        event = sqs_event(messages, self.stack.queue_arn(self.queue))
        try:
            answer = self.stack.invoke(self.function, event, remaining_ms=remaining_ms) or {}
        except Exception:
            # A failed invocation returns the whole batch to the queue (after the visibility timeout).
            answer = {"batchItemFailures": [{"itemIdentifier": m["MessageId"]} for m in messages]}
        failed = {f["itemIdentifier"] for f in answer.get("batchItemFailures", [])} if self.reports_failures else set()
        done = [m for m in messages if m["MessageId"] not in failed]
        self.in_flight += [m["ReceiptHandle"] for m in messages if m["MessageId"] in failed]
        if done:
            sqs.delete_message_batch(QueueUrl=url, Entries=[
                {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done)])
        record = {"at": time.monotonic(), "messages": [m["MessageId"] for m in messages], "failed": sorted(failed),
                  "bodies": [json.loads(m["Body"]) if m["Body"].startswith("{") else m["Body"] for m in messages]}
        self.invocations.append(record)
        return answer

    def redeliver_now(self) -> int:
        """Pretend the visibility timeout of the failed items has passed: they are visible again now."""
        sqs = self.stack.client("sqs")
        url = self.stack.queue_url(self.queue)
        handles, self.in_flight = self.in_flight, []
        for handle in handles:
            sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
        return len(handles)

    def drain(self, max_batches: int = 100, redeliver: bool = True, timeout: float = 120.0) -> int:
        """Poll until the queue is empty, delayed messages included; with ``redeliver``, failed items come
        back at once instead of after the visibility timeout. Returns the number of batches."""
        batches = 0
        deadline = time.monotonic() + timeout
        while batches < max_batches and time.monotonic() < deadline:
            if self.poll_once() is not None:
                batches += 1
                continue
            if redeliver and self.redeliver_now():
                continue
            if self.waiting() == 0:
                return batches
            time.sleep(0.1)
        raise AssertionError(f"{self.queue} not empty after {batches} batches")

    def waiting(self) -> int:
        """Messages visible now or delayed (a delay can expire between a receive and this call)."""
        attrs = self.stack.client("sqs").get_queue_attributes(
            QueueUrl=self.stack.queue_url(self.queue),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesDelayed"])

    @contextmanager
    def running(self, concurrency: int = 1, idle_sleep: float = 0.05) -> Iterator[None]:
        """Poll in ``concurrency`` background threads (each one invocation at a time) while the block runs."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                if self.poll_once() is None:
                    stop.wait(idle_sleep)

        threads = [threading.Thread(target=loop, daemon=True) for _ in range(concurrency)]
        for t in threads:
            t.start()
        try:
            yield
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=120)
