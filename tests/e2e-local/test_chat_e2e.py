"""Chat-ready notifications through the stack: with ChatNotifications=chatbot, a subscriber of the chat
topic (where AWS Chatbot would be; here an SQS queue on moto) receives every notification of a sweep as a
schema-valid Chatbot custom notification, while the results topic keeps its own messages."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import TYPE_CHECKING

import jsonschema
import pytest
from relayguard import bootstrap
from relayguard.domain.chat import CHAT_SCHEMA

from harness import invoke
from harness.aws import MotoServer, Stack, aws_environment, deploy
from harness.e2e import entry, notifications, scheduled_event
from harness.sqs_source import Poller
from lab import Lab

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration


@pytest.fixture
def chat_stack(moto_server: MotoServer, lab: Lab) -> Iterator[Stack]:
    """The stack deployed with ChatNotifications=chatbot (conftest's ``stack``, one parameter changed)."""
    moto_server.reset()
    with aws_environment(moto_server):
        bootstrap.reset_caches()
        invoke.reset()
        deployed = deploy(moto_server.endpoint, parameters={"ChatNotifications": "chatbot"})
        lab.prepare()
        deployed.put_ssh_key(lab.client_key.read_text())
        yield deployed
        bootstrap.reset_caches()


def test_a_chatbot_subscriber_gets_every_notification_of_a_sweep_schema_valid(
        chat_stack: Stack, lab: Lab, make_host: HostFactory) -> None:
    # GIVEN an exposed server and one whose Exim cannot restart; a queue where AWS Chatbot would subscribe
    exposed = make_host(profile="modern")
    broken = make_host(profile="modern", switches={"exim_restart_fail": ""})
    chat_stack.put_inventory({"servers": [entry(exposed), entry(broken)]})
    assert chat_stack.environment_of("WorkerFunction")["RG_CHAT_TOPIC_ARN"] == chat_stack.resolve["ChatTopic"]
    chatbot = chat_stack.subscribe_queue(topic="ChatTopic", name="chatbot")
    results = chat_stack.subscribe_queue(name="results")

    # WHEN a fix sweep runs through the planner, the work queue and the worker
    planned = chat_stack.invoke("PlannerFunction", scheduled_event({"mode": "fix"}))
    Poller(chat_stack, "WorkerFunction", "WorkQueue").drain()

    # THEN the chat subscriber got one Chatbot custom notification per results message, each schema-valid
    validator = jsonschema.Draft202012Validator(CHAT_SCHEMA)
    chat = notifications(chat_stack, chatbot)
    sent = notifications(chat_stack, results)
    assert len(chat) == len(sent) == 3  # two server results and the digest
    for message in chat:
        assert list(validator.iter_errors(message["doc"])) == []
        assert message["doc"]["metadata"]["threadId"] == f"relayguard-run-{planned['run_id']}"
    by_event = {(m["doc"]["metadata"]["eventType"], m["doc"]["metadata"]["additionalContext"].get("server")): m
                for m in chat}
    failure = by_event[("server-result", broken.name)]["doc"]["content"]
    assert failure["title"].startswith(f":rotating_light: RelayGuard: {broken.name} failed (failed, ")
    assert "*Exim restarted:* no" in failure["description"]
    fixed = by_event[("server-result", exposed.name)]["doc"]["content"]
    assert fixed["title"] == f":large_green_circle: RelayGuard: {exposed.name} remediated (remediated)"
    digest = by_event[("run-digest", None)]["doc"]["content"]
    assert digest["title"].endswith(f"run {planned['run_id']}: failed, 2 servers, 1 failed")
    # AND the chat copy carries the results message's attributes, so a Chatbot subscription can filter too
    assert {json.dumps(m["attributes"], sort_keys=True) for m in chat} == {
        json.dumps(m["attributes"], sort_keys=True) for m in sent}
