"""Redrive through the stack on moto: a fix sweep's job that ended in the work dead-letter queue goes back
with ``relayguard redrive --copy`` and the worker then fixes the server. moto has no StartMessageMoveTask
(the move task's calls are checked in tests/unit/test_redrive.py); the command says so and exits 2."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from relayguard import cli

from harness.aws import Stack, drain_messages
from harness.e2e import entry, notifications, scheduled_event
from harness.sqs_source import Poller
from lab import Lab
from lab.smtp import relay_attempt

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration

STACK = "relayguard-e2e"


def cloudformation_outputs(stack: Stack) -> None:
    """A CloudFormation stack on moto whose outputs are the deployed queues', as `sam deploy` would leave them
    (harness.aws.deploy creates the resources directly, without CloudFormation)."""
    outputs = {key: {"Value": stack.queue_url(logical)} for key, logical in (
        ("WorkQueueUrl", "WorkQueue"), ("WorkDLQUrl", "WorkDLQ"), ("UrgentQueueUrl", "UrgentQueue"),
        ("UrgentDLQUrl", "UrgentDLQ"))}
    template = {"Resources": {"Anchor": {"Type": "AWS::SNS::Topic"}}, "Outputs": outputs}
    stack.client("cloudformation").create_stack(StackName=STACK, TemplateBody=json.dumps(template))


def test_a_dead_lettered_job_goes_back_with_redrive_copy_and_then_fixes_its_server(
        stack: Stack, lab: Lab, make_host: HostFactory, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a fix sweep whose one job ended in the work dead-letter queue (its server was broken then)
    host = make_host(profile="modern")
    stack.put_inventory({"servers": [entry(host)]})
    planned = stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    sqs = stack.client("sqs")
    (job,) = drain_messages(sqs, stack.queue_url("WorkQueue"))
    sqs.send_message(QueueUrl=stack.queue_url("WorkDLQ"), MessageBody=job["Body"])
    cloudformation_outputs(stack)
    results = stack.subscribe_queue(name="results")

    # WHEN the operator asks for SQS's move task, which moto lacks
    assert cli.main(["redrive", "--queue", "work", "--stack", STACK]) == 2
    assert "use --copy" in capsys.readouterr().err
    assert stack.queue_depth("WorkDLQ") == 1  # nothing moved, nothing lost

    # AND then copies the job back
    assert cli.main(["redrive", "--queue", "work", "--stack", STACK, "--copy"]) == 0
    assert capsys.readouterr().out == "Copied 1 job(s) from the work dead-letter queue back to the work queue.\n"
    assert (stack.queue_depth("WorkDLQ"), stack.queue_depth("WorkQueue")) == (0, 1)
    (back,) = sqs.receive_message(QueueUrl=stack.queue_url("WorkQueue"), VisibilityTimeout=0)["Messages"]
    assert back["Body"] == job["Body"]

    # THEN the worker runs the job: the server is fixed and the run gets its digest
    Poller(stack, "WorkerFunction", "WorkQueue").drain()
    assert relay_attempt(host.address, lab.client_source()).code == 550
    docs = [n["doc"] for n in notifications(stack, results)]
    assert [(d["event"], d["outcome"]) for d in docs] == [("server-result", "remediated"), ("run-digest", "ok")]
    assert docs[1]["run_id"] == planned["run_id"]
