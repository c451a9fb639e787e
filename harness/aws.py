"""The stack of ``template.yaml`` on a moto server, for local runs.

``deploy()`` creates the template's stateful resources (SQS queues with their redrive policies, DynamoDB
tables with their keys and TTLs, SNS topics, the S3 buckets) in moto *from the template's own
properties*, so a queue's visibility timeout or a table's key in the test is the one the template
declares. It returns a :class:`Stack` whose ``resolve`` map feeds :func:`harness.invoke.invoke`.

Used by ``tests/e2e-local``, the demo and the benchmarks. Needs boto3 and moto's server extra.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3

from harness.intrinsics import DEFAULT_ACCOUNT, DEFAULT_REGION, Resolver
from harness.invoke import apply_environ
from harness.invoke import invoke as invoke_locally
from harness.template import load_template, resolved_environment

REGION = DEFAULT_REGION
ACCOUNT = DEFAULT_ACCOUNT
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}
_STATEFUL = ("AWS::KMS::Key", "AWS::SQS::Queue", "AWS::DynamoDB::Table", "AWS::SNS::Topic", "AWS::S3::Bucket")


class MotoServer:
    """moto's threaded server on 127.0.0.1 (never its default 0.0.0.0), on a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer  # noqa: PLC0415 - moto is slow to import; only a server needs it

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
    saved = apply_environ({**server.environment(), "AWS_PROFILE": None})
    try:
        yield
    finally:
        apply_environ(saved)


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
        return invoke_locally(function, event, resolve={**self.parameters, **self.resolve},
                              template=self.template, env_overrides=overrides, **kwargs)

    def environment_of(self, function: str) -> dict[str, str]:
        return resolved_environment(function, {**self.parameters, **self.resolve}, self.template)

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
    conditions = Resolver(doc, stack.parameters)
    # A resource whose Condition is false (e.g. ChatTopic with ChatNotifications=off) is not created.
    resources = {k: v for k, v in (doc.get("Resources") or {}).items()
                 if v.get("Type") in _STATEFUL and ("Condition" not in v or conditions.condition(v["Condition"]))}
    pending = dict(resources)
    while pending:
        progressed = False
        for logical_id, resource in list(pending.items()):
            resolver = Resolver(doc, {**stack.parameters, **stack.resolve})
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
    if kind == "AWS::KMS::Key":
        # The stack's customer-managed key, with its key policy: queues and topics name it as in AWS.
        key = stack.client("kms").create_key(Description=props.get("Description", name),
                                             Policy=json.dumps(props["KeyPolicy"]))["KeyMetadata"]
        stack.resolve.update({logical_id: key["KeyId"], f"{logical_id}.Arn": key["Arn"],
                              f"{logical_id}.KeyId": key["KeyId"]})
    elif kind == "AWS::SQS::Queue":
        names = ("VisibilityTimeout", "MessageRetentionPeriod", "DelaySeconds", "ReceiveMessageWaitTimeSeconds",
                 "KmsMasterKeyId")
        attributes: dict[str, str] = {k: str(props[k]) for k in names if k in props}
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
        topic_attributes = {"KmsMasterKeyId": props["KmsMasterKeyId"]} if "KmsMasterKeyId" in props else {}
        arn = stack.client("sns").create_topic(Name=name, Attributes=topic_attributes)["TopicArn"]
        stack.resolve.update({logical_id: arn, f"{logical_id}.TopicName": name, f"{logical_id}.TopicArn": arn})
    elif kind == "AWS::S3::Bucket":
        bucket = name.lower()
        s3 = stack.client("s3")
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
        if "VersioningConfiguration" in props:  # the records bucket keeps every version, in moto too
            s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=props["VersioningConfiguration"])
        stack.resolve.update({logical_id: bucket, f"{logical_id}.Arn": f"arn:aws:s3:::{bucket}"})
