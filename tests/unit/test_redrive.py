"""``relayguard redrive`` against boto3's real SQS and CloudFormation clients with botocore's Stubber:
moto has no StartMessageMoveTask, so the calls and their parameters are checked here; the ``--copy``
fallback runs end to end on moto (tests/e2e-local/test_redrive_e2e.py)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber
from relayguard import cli
from relayguard.adapters.sqs_redrive import RedriveError, SqsDeadLetterQueues

REGION = "eu-west-1"
PREFIX = f"https://sqs.{REGION}.amazonaws.com/123456789012/relayguard-"
ARN = f"arn:aws:sqs:{REGION}:123456789012:relayguard-"
OUTPUTS = [{"OutputKey": "WorkQueueUrl", "OutputValue": PREFIX + "WorkQueue"},
           {"OutputKey": "WorkDLQUrl", "OutputValue": PREFIX + "WorkDLQ"},
           {"OutputKey": "UrgentQueueUrl", "OutputValue": PREFIX + "UrgentQueue"},
           {"OutputKey": "UrgentDLQUrl", "OutputValue": PREFIX + "UrgentDLQ"}]


def _client(service: str) -> Any:
    return boto3.client(service, region_name=REGION, aws_access_key_id="testing",  # type: ignore[call-overload]
                        aws_secret_access_key="testing")


@pytest.fixture
def stubs() -> Iterator[tuple[Stubber, Stubber, SqsDeadLetterQueues]]:
    sqs, cfn = _client("sqs"), _client("cloudformation")
    with Stubber(sqs) as sqs_stub, Stubber(cfn) as cfn_stub:
        yield sqs_stub, cfn_stub, SqsDeadLetterQueues(sqs, cfn)
        sqs_stub.assert_no_pending_responses()
        cfn_stub.assert_no_pending_responses()


def _outputs(cfn: Stubber) -> None:
    cfn.add_response("describe_stacks", {"Stacks": [{
        "StackName": "relayguard", "CreationTime": "2026-12-01T00:00:00Z", "StackStatus": "CREATE_COMPLETE",
        "Outputs": OUTPUTS}]}, {"StackName": "relayguard"})


def _arn(sqs: Stubber, name: str) -> None:
    sqs.add_response("get_queue_attributes", {"Attributes": {"QueueArn": ARN + name}},
                     {"QueueUrl": PREFIX + name, "AttributeNames": ["QueueArn"]})


def ns(queue: str, *, copy: bool = False, max_messages: int | None = None) -> argparse.Namespace:
    return argparse.Namespace(queue=queue, stack="relayguard", copy=copy, max_messages=max_messages)


def test_redrive_starts_an_sqs_move_task_from_the_dead_letter_queue_to_its_own_queue(
        stubs: tuple[Stubber, Stubber, SqsDeadLetterQueues], capsys: pytest.CaptureFixture[str]) -> None:
    sqs, cfn, queues = stubs
    _outputs(cfn)
    sqs.add_response("get_queue_attributes", {"Attributes": {"ApproximateNumberOfMessages": "3"}},
                     {"QueueUrl": PREFIX + "UrgentDLQ", "AttributeNames": ["ApproximateNumberOfMessages"]})
    _arn(sqs, "UrgentDLQ")
    _arn(sqs, "UrgentQueue")
    sqs.add_response("start_message_move_task", {"TaskHandle": "task-1"},
                     {"SourceArn": ARN + "UrgentDLQ", "DestinationArn": ARN + "UrgentQueue"})
    assert cli.redrive(ns("urgent"), queues) == 0
    out = capsys.readouterr().out
    assert "Moving the 3 job(s) waiting in the urgent dead-letter queue back to the urgent queue" in out
    assert f"list-message-move-tasks --source-arn {ARN}UrgentDLQ" in out


def test_an_sqs_that_refuses_the_move_task_exits_2_and_points_to_copy(
        stubs: tuple[Stubber, Stubber, SqsDeadLetterQueues], capsys: pytest.CaptureFixture[str]) -> None:
    sqs, cfn, queues = stubs
    _outputs(cfn)
    sqs.add_response("get_queue_attributes", {"Attributes": {"ApproximateNumberOfMessages": "1"}})
    _arn(sqs, "WorkDLQ")
    _arn(sqs, "WorkQueue")
    sqs.add_client_error("start_message_move_task", "UnsupportedOperation", "not here")
    assert cli.redrive(ns("work"), queues) == 2
    err = capsys.readouterr().err
    assert "UnsupportedOperation: not here" in err
    assert "use --copy" in err


def test_a_stack_that_does_not_exist_exits_2(stubs: tuple[Stubber, Stubber, SqsDeadLetterQueues],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    _, cfn, queues = stubs
    cfn.add_client_error("describe_stacks", "ValidationError", "Stack with id relayguard does not exist")
    assert cli.redrive(ns("work"), queues) == 2
    assert "cannot read the outputs of stack 'relayguard'" in capsys.readouterr().err


def test_copy_deletes_only_what_arrived_and_stops_on_a_refused_send(
        stubs: tuple[Stubber, Stubber, SqsDeadLetterQueues]) -> None:
    sqs, _, queues = stubs
    received = [{"MessageId": f"m{i}", "ReceiptHandle": f"r{i}", "Body": f'{{"job": {i}}}'} for i in range(2)]
    sqs.add_response("receive_message", {"Messages": received}, {
        "QueueUrl": PREFIX + "WorkDLQ", "MaxNumberOfMessages": 10, "WaitTimeSeconds": 1, "VisibilityTimeout": 60,
        "MessageAttributeNames": ["All"]})
    sqs.add_response("send_message_batch", {
        "Successful": [{"Id": "1", "MessageId": "n1", "MD5OfMessageBody": "x"}],
        "Failed": [{"Id": "0", "SenderFault": False, "Code": "InternalError"}]},
        {"QueueUrl": PREFIX + "WorkQueue", "Entries": [{"Id": "0", "MessageBody": '{"job": 0}'},
                                                        {"Id": "1", "MessageBody": '{"job": 1}'}]})
    sqs.add_response("delete_message_batch", {"Successful": [{"Id": "0"}], "Failed": []},
                     {"QueueUrl": PREFIX + "WorkDLQ", "Entries": [{"Id": "0", "ReceiptHandle": "r1"}]})
    with pytest.raises(RedriveError, match=r"after 1 job\(s\): SQS refused 1 \(InternalError\)"):
        queues.copy(PREFIX + "WorkDLQ", PREFIX + "WorkQueue", None)


def test_copy_stops_at_the_limit(stubs: tuple[Stubber, Stubber, SqsDeadLetterQueues]) -> None:
    sqs, _, queues = stubs
    one = [{"MessageId": "m0", "ReceiptHandle": "r0", "Body": "{}"}]
    sqs.add_response("receive_message", {"Messages": one}, {
        "QueueUrl": PREFIX + "WorkDLQ", "MaxNumberOfMessages": 1, "WaitTimeSeconds": 1, "VisibilityTimeout": 60,
        "MessageAttributeNames": ["All"]})
    sqs.add_response("send_message_batch", {"Successful": [{"Id": "0", "MessageId": "n0", "MD5OfMessageBody": "x"}],
                                            "Failed": []})
    sqs.add_response("delete_message_batch", {"Successful": [{"Id": "0"}], "Failed": []})
    assert queues.copy(PREFIX + "WorkDLQ", PREFIX + "WorkQueue", 1) == 1


def test_max_messages_without_copy_is_a_command_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["redrive", "--queue", "work", "--stack", "relayguard", "--max-messages", "3"])
    assert exit_.value.code == 2
    assert "--max-messages limits --copy" in capsys.readouterr().err
