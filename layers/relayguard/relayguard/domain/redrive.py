"""Redrive: putting dead-lettered jobs back on their queue once the cause is fixed (``relayguard redrive``).

A job lands in a dead-letter queue after ``MaxReceiveCount`` deliveries (docs/operations.md, Redriving
dead-lettered jobs). The stack's outputs name each job queue and its dead-letter queue; the move itself
is SQS's ``StartMessageMoveTask``, or, with ``--copy``, a receive, send, delete loop for an SQS that lacks
it (moto, some emulators). Pure: which queues, which entries to send, what to tell the operator.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relayguard.errors import InvalidInput

#: ``--queue`` → (the stack output of its dead-letter queue's URL, the stack output of the queue's URL).
QUEUES: dict[str, tuple[str, str]] = {
    "work": ("WorkDLQUrl", "WorkQueueUrl"),
    "urgent": ("UrgentDLQUrl", "UrgentQueueUrl"),
}
#: SQS sends at most ten messages per batch.
BATCH = 10


@dataclass(frozen=True)
class RedrivePlan:
    queue: str
    dead_letter_url: str
    destination_url: str


def plan_redrive(queue: str, outputs: Mapping[str, str]) -> RedrivePlan:
    """Which dead-letter queue to empty into which queue, from the stack's outputs."""
    if queue not in QUEUES:
        raise InvalidInput(f"--queue must be one of {', '.join(QUEUES)}, not {queue!r}")
    dlq_key, queue_key = QUEUES[queue]
    missing = [key for key in (dlq_key, queue_key) if not outputs.get(key)]
    if missing:
        raise InvalidInput(f"the stack has no output {', '.join(missing)}: is it a RelayGuard stack?")
    return RedrivePlan(queue, outputs[dlq_key], outputs[queue_key])


def copy_entries(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """``SendMessageBatch`` entries that re-send received messages as they were: body and message attributes.

    The entry ``Id`` is the message's index in ``messages``, so a failed entry names the message to keep.
    SQS's own attributes (receive count, sent time) are not copied: a copied job is a new message, with
    all its deliveries before it again."""
    if len(messages) > BATCH:
        raise ValueError(f"at most {BATCH} messages per batch")
    entries = []
    for index, message in enumerate(messages):
        entry: dict[str, Any] = {"Id": str(index), "MessageBody": message["Body"]}
        attributes = {name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
                      for name, value in (message.get("MessageAttributes") or {}).items()}
        if attributes:
            entry["MessageAttributes"] = attributes
        entries.append(entry)
    return entries


def moved_text(plan: RedrivePlan, *, waiting: int, task: str, source_arn: str) -> str:
    """What the operator reads after a move task started: what moves where, and how to follow it."""
    return (f"Moving the {waiting} job(s) waiting in the {plan.queue} dead-letter queue back to the {plan.queue} "
            f"queue (SQS message move task {task}).\n"
            f"Progress: aws sqs list-message-move-tasks --source-arn {source_arn}\n")


def copied_text(plan: RedrivePlan, *, copied: int) -> str:
    """What the operator reads after ``--copy``."""
    return f"Copied {copied} job(s) from the {plan.queue} dead-letter queue back to the {plan.queue} queue.\n"
