"""The stack of ``template.yaml`` on a moto server, and the SQS poller Lambda would be, for local runs.

``deploy()`` creates the template's stateful resources (SQS queues with their redrive policies, DynamoDB
tables with their keys and TTLs, SNS topics, the S3 bucket) in moto *from the template's own
properties*, so a queue's visibility timeout or a table's key in the test is the one the template
declares. It returns a :class:`Stack` whose ``resolve`` map feeds :func:`tests.support.local_invoke.invoke`.

:class:`Poller` plays an SQS event source mapping: it receives up to the mapping's ``BatchSize``
messages (read from the function's ``Events`` in the template), hands them to the function as an
SQS event, deletes the ones the function did not report in ``batchItemFailures`` and leaves the
rest to SQS (moto applies the redrive policy on later receives, as SQS does).

Used by ``tests/e2e-local``, the demo and the benchmarks. Needs boto3 and moto's server extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3

from tests.support import local_invoke
from tests.support.local_invoke import _Resolver, load_template

REGION = local_invoke.DEFAULT_REGION
ACCOUNT = local_invoke.DEFAULT_ACCOUNT
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
_STATEFUL = ("AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::SNS::Topic", "AWS::S3::Bucket")


class MotoServer:
    """moto's threaded server on 127.0.0.1 (never its default 0.0.0.0), on a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")  # noqa: S310 - loopback
        with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - loopback
            pass

    def environment(self) -> dict[str, str]:
        """What a process needs to talk to this server through boto3 and Powertools."""
        return {**FAKE_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def stop(self) -> None:
        self._server.stop()


@contextmanager
def aws_environment(server: MotoServer) -> Iterator[None]:
    """Point this process's AWS clients at ``server`` (and nothing at a real account) for a while."""
    wanted: dict[str, str | None] = {**server.environment(), "AWS_PROFILE": None}
    saved = {k: os.environ.get(k) for k in wanted}
    for k, v in wanted.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, old in saved.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


def client(service: str, endpoint: str) -> Any:
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION,  # type: ignore[call-overload]
                        aws_access_key_id="testing", aws_secret_access_key="testing", aws_session_token="testing")


@dataclass
class Stack:
    """The deployed resources: names by logical id, and the map the local invoker resolves with."""

    endpoint: str
    template: str
    parameters: dict[str, Any]
    resolve: dict[str, Any] = field(default_factory=dict)
    #: Environment applied over the template's for every invocation (e.g. a shorter lock retry delay).
    env_overrides: dict[str, str | None] = field(default_factory=dict)

    def client(self, service: str) -> Any:
        return client(service, self.endpoint)

    def queue_url(self, logical_id: str) -> str:
        return str(self.resolve[logical_id])

    def queue_arn(self, logical_id: str) -> str:
        return str(self.resolve[f"{logical_id}.Arn"])

    def invoke(self, function: str, event: Any, **kwargs: Any) -> Any:
        """Invoke ``function`` through the local invoker with this stack's names and parameters."""
        overrides = {**self.env_overrides, **kwargs.pop("env_overrides", {})}
        return local_invoke.invoke(function, event, resolve={**self.parameters, **self.resolve},
                                   template=self.template, env_overrides=overrides, **kwargs)

    def environment_of(self, function: str) -> dict[str, str]:
        return local_invoke.resolved_environment(function, {**self.parameters, **self.resolve}, self.template)

    # -- operator actions ---------------------------------------------------------------------
    def put_inventory(self, inventory: Mapping[str, Any] | str) -> None:
        body = inventory if isinstance(inventory, str) else json.dumps(inventory)
        key = str(self.parameters.get("InventoryKey") or _default_param(self.template, "InventoryKey"))
        self.client("s3").put_object(Bucket=self.resolve["InventoryBucket"], Key=key, Body=body.encode())

    def put_ssh_key(self, key_text: str) -> None:
        name = str(self.parameters.get("SshKeySecretName") or _default_param(self.template, "SshKeySecretName"))
        self.client("secretsmanager").create_secret(Name=name, SecretString=key_text)

    def subscribe_queue(self, topic: str = "ResultsTopic", filter_policy: Mapping[str, Any] | None = None,
                        name: str | None = None) -> str:
        """A queue subscribed to ``topic`` (as a subscriber's would be); returns its URL."""
        sqs, sns = self.client("sqs"), self.client("sns")
        name = name or f"subscriber-{hashlib.sha1(json.dumps(filter_policy).encode()).hexdigest()[:8]}"  # noqa: S324
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
        sns.subscribe(TopicArn=self.resolve[topic], Protocol="sqs", Endpoint=arn, Attributes=attributes)
        return str(url)

    def received(self, queue_url: str) -> list[dict[str, Any]]:
        """Every SNS envelope waiting in a subscriber queue (consumed)."""
        return [json.loads(m["Body"]) for m in drain_messages(self.client("sqs"), queue_url)]

    def send_jobs(self, queue: str, bodies: list[str]) -> None:
        sqs = self.client("sqs")
        for start in range(0, len(bodies), 10):
            entries = [{"Id": str(i), "MessageBody": b} for i, b in enumerate(bodies[start : start + 10])]
            sqs.send_message_batch(QueueUrl=self.queue_url(queue), Entries=entries)

    def table_items(self, logical_id: str) -> list[dict[str, Any]]:
        ddb = self.client("dynamodb")
        return list(ddb.scan(TableName=self.resolve[logical_id], ConsistentRead=True)["Items"])

    def queue_depth(self, logical_id: str) -> int:
        attrs = self.client("sqs").get_queue_attributes(
            QueueUrl=self.queue_url(logical_id),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def drain_messages(sqs: Any, queue_url: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        batch = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0,
                                    MessageAttributeNames=["All"], AttributeNames=["All"]).get("Messages", [])
        if not batch:
            return out
        out += batch
        sqs.delete_message_batch(QueueUrl=queue_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)])


def _default_param(template: str, name: str) -> Any:
    return (load_template(template).get("Parameters") or {})[name].get("Default")


def deploy(endpoint: str, template: str = "template.yaml", parameters: Mapping[str, Any] | None = None,
           prefix: str = "relayguard") -> Stack:
    """Create the template's queues, tables, topics and bucket in moto, dependencies first."""
    doc = load_template(template)
    stack = Stack(endpoint=endpoint, template=template, parameters=dict(parameters or {}))
    resources = {k: v for k, v in (doc.get("Resources") or {}).items() if v.get("Type") in _STATEFUL}
    pending = dict(resources)
    while pending:
        progressed = False
        for logical_id, resource in list(pending.items()):
            resolver = _Resolver(doc, {**stack.parameters, **stack.resolve})
            try:
                props = resolver.value(resource.get("Properties") or {})
            except KeyError:
                continue  # refers to a resource not created yet
            _create(stack, logical_id, resource["Type"], props, f"{prefix}-{logical_id}")
            del pending[logical_id]
            progressed = True
        if not progressed:
            raise KeyError(f"cannot resolve the properties of {sorted(pending)}")
    return stack


def _create(stack: Stack, logical_id: str, kind: str, props: dict[str, Any], name: str) -> None:
    arn_base = f"{REGION}:{ACCOUNT}"
    if kind == "AWS::SQS::Queue":
        attributes = {k: str(props[k]) for k in ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds",
                                                 "ReceiveMessageWaitTimeSeconds") if k in props}
        if "RedrivePolicy" in props:
            attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        url = stack.client("sqs").create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        stack.resolve.update({logical_id: url, f"{logical_id}.Arn": f"arn:aws:sqs:{arn_base}:{name}",
                              f"{logical_id}.QueueName": name, f"{logical_id}.QueueUrl": url})
    elif kind == "AWS::DynamoDB::Table":
        ddb = stack.client("dynamodb")
        ddb.create_table(TableName=name, AttributeDefinitions=props["AttributeDefinitions"],
                         KeySchema=props["KeySchema"], BillingMode=props.get("BillingMode", "PAY_PER_REQUEST"))
        ttl = props.get("TimeToLiveSpecification")
        if ttl:
            ddb.update_time_to_live(TableName=name, TimeToLiveSpecification=ttl)
        stack.resolve.update({logical_id: name, f"{logical_id}.Arn": f"arn:aws:dynamodb:{arn_base}:table/{name}"})
    elif kind == "AWS::SNS::Topic":
        attributes = {"KmsMasterKeyId": props["KmsMasterKeyId"]} if "KmsMasterKeyId" in props else {}
        arn = stack.client("sns").create_topic(Name=name, Attributes=attributes)["TopicArn"]
        stack.resolve.update({logical_id: arn, f"{logical_id}.TopicName": name, f"{logical_id}.TopicArn": arn})
    elif kind == "AWS::S3::Bucket":
        bucket = name.lower()
        stack.client("s3").create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        stack.resolve.update({logical_id: bucket, f"{logical_id}.Arn": f"arn:aws:s3:::{bucket}"})


# -- the SQS event source mapping -------------------------------------------------------------


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
