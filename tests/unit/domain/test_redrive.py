"""The pure parts of a redrive: which queues, what a copied job carries, what the operator reads."""

from __future__ import annotations

from typing import Any

import pytest
from relayguard.domain.redrive import RedrivePlan, copied_text, copy_entries, moved_text, plan_redrive
from relayguard.errors import InvalidInput

OUTPUTS = {"WorkQueueUrl": "https://sqs/work", "WorkDLQUrl": "https://sqs/work-dlq",
           "UrgentQueueUrl": "https://sqs/urgent", "UrgentDLQUrl": "https://sqs/urgent-dlq", "Other": "x"}


def test_each_queue_is_emptied_from_its_own_dead_letter_queue() -> None:
    assert plan_redrive("work", OUTPUTS) == RedrivePlan("work", "https://sqs/work-dlq", "https://sqs/work")
    assert plan_redrive("urgent", OUTPUTS) == RedrivePlan("urgent", "https://sqs/urgent-dlq", "https://sqs/urgent")


def test_an_unknown_queue_or_a_stack_without_the_outputs_is_refused() -> None:
    with pytest.raises(InvalidInput, match="work, urgent"):
        plan_redrive("alerts", OUTPUTS)
    with pytest.raises(InvalidInput, match="no output UrgentDLQUrl"):
        plan_redrive("urgent", {k: v for k, v in OUTPUTS.items() if k != "UrgentDLQUrl"})


def test_a_copied_job_keeps_its_body_and_attributes_and_nothing_of_its_past_deliveries() -> None:
    received: list[dict[str, Any]] = [
        {"MessageId": "m1", "ReceiptHandle": "r1", "Body": '{"job": 1}', "Attributes": {"ApproximateReceiveCount": "5"},
         "MessageAttributes": {"trigger": {"DataType": "String", "StringValue": "sweep", "StringListValues": []}}},
        {"MessageId": "m2", "ReceiptHandle": "r2", "Body": '{"job": 2}'},
    ]
    assert copy_entries(received) == [
        {"Id": "0", "MessageBody": '{"job": 1}',
         "MessageAttributes": {"trigger": {"DataType": "String", "StringValue": "sweep"}}},
        {"Id": "1", "MessageBody": '{"job": 2}'},
    ]
    with pytest.raises(ValueError, match="at most 10"):
        copy_entries([received[1]] * 11)


def test_the_operator_is_told_what_moves_where_and_how_to_follow_it() -> None:
    plan = plan_redrive("work", OUTPUTS)
    text = moved_text(plan, waiting=3, task="handle-1", source_arn="arn:aws:sqs:eu-west-1:123456789012:work-dlq")
    assert text.splitlines() == [
        "Moving the 3 job(s) waiting in the work dead-letter queue back to the work queue (SQS message move task "
        "handle-1).",
        "Progress: aws sqs list-message-move-tasks --source-arn arn:aws:sqs:eu-west-1:123456789012:work-dlq"]
    assert copied_text(plan, copied=2) == "Copied 2 job(s) from the work dead-letter queue back to the work queue.\n"
