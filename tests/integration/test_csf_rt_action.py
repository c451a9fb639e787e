"""The shipped CSF RT_ACTION script, run as lfd runs it, against EventBridge and SQS on a moto server.

The script is started as a subprocess with CSF's five arguments and the real AWS CLI (pinned in the
test venv) pointed at moto by ``AWS_ENDPOINT_URL``. An EventBridge rule with the template's pattern
copies the event to an SQS queue; the event found there is validated with the alert intake's own
models and then handed to the alert intake handler through the local invoker, which must resolve
the server and enqueue an urgent job.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from relayguard import bootstrap
from relayguard.events import ALERT_DETAIL_TYPE, ALERT_EVENT_SOURCE, Job, SpamAlert

from lab import Host
from lab.remote import ssh
from tests.support import local_invoke

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "contrib" / "csf" / "relayguard-rt-action"
VENV_BIN = Path(sys.executable).parent
REGION = local_invoke.DEFAULT_REGION
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
BUS = "relayguard-alerts"
PUBLIC_IP = "203.0.113.10"
CLIENT_IP = "198.51.100.23"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"
# What lfd passes as $5: mail content, i.e. whatever a spammer wrote.
HOSTILE = (b"From: \"x\" <a@b>\nSubject: $(touch /tmp/relayguard-pwned) `id` '; rm -rf / #\n"
           b"\"quotes\" \\backslashes\\ {\"json\": [1]} \x01\x1b[31m\n") + b"\xff\xfe broken utf-8 \xc3"


@dataclass
class Moto:
    endpoint: str
    queue_url: str

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.endpoint, region_name=REGION,  # type: ignore[call-overload]
                            **{k.lower(): v for k, v in CREDENTIALS.items()})

    def events(self) -> list[dict[str, Any]]:
        sqs = self.client("sqs")
        got = sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=m["ReceiptHandle"])
        events = [json.loads(m["Body"]) for m in got.get("Messages", [])]
        for event in events:
            # moto's SQS target leaves out the envelope's "account", which EventBridge always sets.
            event.setdefault("account", local_invoke.DEFAULT_ACCOUNT)
        return events


@pytest.fixture(scope="module")
def moto() -> Iterator[Moto]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        probe = Moto(endpoint, "")
        sqs, events = probe.client("sqs"), probe.client("events")
        url = sqs.create_queue(QueueName="captured-alerts")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        events.create_event_bus(Name=BUS)
        # The pattern of the template's SpamAlert rule.
        events.put_rule(Name="spam-alerts", EventBusName=BUS, EventPattern=json.dumps(
            {"source": [ALERT_EVENT_SOURCE], "detail-type": [ALERT_DETAIL_TYPE]}))
        events.put_targets(Rule="spam-alerts", EventBusName=BUS, Targets=[{"Id": "capture", "Arn": arn}])
        yield Moto(endpoint, url)
    finally:
        server.stop()


def run_script(moto_or_endpoint: Moto | str, tmp_path: Path, *argv: str | bytes, conf: str | None = None,
               **env: str) -> subprocess.CompletedProcess[str]:
    endpoint = moto_or_endpoint.endpoint if isinstance(moto_or_endpoint, Moto) else moto_or_endpoint
    conf_path = tmp_path / "rt-action.conf"
    conf_path.write_text(conf if conf is not None else f"# as an operator writes it\nRELAYGUARD_EVENT_BUS={BUS}\n"
                         f"RELAYGUARD_PUBLIC_IP=\"{PUBLIC_IP}\"\nAWS_REGION={REGION}\n")
    # lfd's environment is small; give the script only what it needs.
    environment = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": str(tmp_path), "RELAYGUARD_RT_CONF": str(conf_path),
                   "AWS_ENDPOINT_URL": endpoint, **CREDENTIALS, **env}
    return subprocess.run([str(SCRIPT), *argv], env=environment, capture_output=True, text=True, timeout=120,
                          check=False)


def own_hostname() -> str:
    return subprocess.run(["hostname", "-f"], capture_output=True, text=True, check=True).stdout.strip().lower()


def csf_argv(sample: str | bytes = HOSTILE) -> list[str | bytes]:
    return [CLIENT_IP, "POPRELAY", "(POPRELAY) Email relay limit exceeded: 150 emails in the last hour", "150",
            sample]


def test_lfds_arguments_become_an_event_the_alert_intake_accepts(moto, tmp_path):
    proc = run_script(moto, tmp_path, *csf_argv())
    assert proc.returncode == 0, proc.stderr
    (event,) = moto.events()
    envelope = parse(event=event, model=EventBridgeModel)
    assert (envelope.source, envelope.detail_type) == (ALERT_EVENT_SOURCE, ALERT_DETAIL_TYPE)
    alert = SpamAlert.model_validate(envelope.detail)
    assert (alert.source, alert.kind, alert.severity) == ("csf_rt", "relay_tracking", "critical")
    # The server is this machine, not lfd's first argument (the relaying client).
    assert alert.host.hostname == own_hostname()
    assert alert.host.public_ip == PUBLIC_IP
    assert alert.subject == {"ips": [CLIENT_IP], "relay_type": "POPRELAY"}
    assert alert.metrics == {"count": 150}
    assert alert.evidence["message"].startswith("(POPRELAY) Email relay limit exceeded")
    assert alert.evidence["sample"] == HOSTILE.decode("utf-8", errors="replace")
    assert not Path("/tmp/relayguard-pwned").exists()


def test_a_long_sample_is_cut_and_marked(moto, tmp_path):
    sample = "Received: from spammer\n" * 1000
    proc = run_script(moto, tmp_path, *csf_argv(sample))
    assert proc.returncode == 0, proc.stderr
    (event,) = moto.events()
    alert = SpamAlert.model_validate(event["detail"])
    assert alert.evidence["sample"] == sample[:4000]
    assert alert.evidence["sample_truncated"] is True


def test_a_client_that_is_not_an_ip_and_an_odd_count_still_make_a_valid_alert(moto, tmp_path):
    proc = run_script(moto, tmp_path, "cpaneluser", "LOCALRELAY", "blocked", "many", "")
    assert proc.returncode == 0, proc.stderr
    (event,) = moto.events()
    alert = SpamAlert.model_validate(event["detail"])
    assert alert.subject == {"ips": [], "client": "cpaneluser", "relay_type": "LOCALRELAY"}
    assert alert.metrics == {"count": None}
    assert alert.severity == "warning"


def test_without_arguments_it_sends_nothing(moto, tmp_path):
    proc = run_script(moto, tmp_path)
    assert proc.returncode == 64
    assert "usage" in proc.stderr
    assert moto.events() == []


def test_a_bad_public_ip_setting_is_refused_before_anything_is_sent(moto, tmp_path):
    proc = run_script(moto, tmp_path, *csf_argv(), RELAYGUARD_PUBLIC_IP="not-an-ip")
    assert proc.returncode == 78
    assert "RELAYGUARD_PUBLIC_IP 'not-an-ip' is not an IP address" in proc.stderr
    assert moto.events() == []


def test_an_unreachable_endpoint_is_a_failure_not_a_silent_success(tmp_path):
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    proc = run_script(dead, tmp_path, *csf_argv(), AWS_MAX_ATTEMPTS="1")
    assert proc.returncode == 1
    assert "aws events put-events failed" in proc.stderr


@pytest.mark.parametrize(("files", "expected"), [
    ({"/var/cpanel/mainip": "10.0.0.5\n", "/var/cpanel/cpnat": "10.0.0.9 203.0.113.9\n10.0.0.5 203.0.113.77\n"},
     "203.0.113.77"),
    ({"/var/cpanel/mainip": "198.51.100.99\n"}, "198.51.100.99"),
    ({"/var/cpanel/mainip": "10.0.0.5\n"}, None),
], ids=["behind-nat", "public-main-ip", "private-main-ip"])
def test_on_a_cpanel_server_it_names_the_public_ip_cpanel_knows(moto, modern: Host, files, expected):
    for path, content in files.items():
        modern.path(path).write_text(content)
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": "/root", "RELAYGUARD_RT_CONF": "/nonexistent",
           "RELAYGUARD_EVENT_BUS": BUS, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": moto.endpoint, **CREDENTIALS}
    argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(SCRIPT), CLIENT_IP, "POPRELAY", "blocked",
            "120", "Subject: hello"]
    result = ssh(modern, shlex.join(argv), timeout=120)
    assert result.rc == 0, result.err
    (event,) = moto.events()
    alert = SpamAlert.model_validate(event["detail"])
    assert alert.host.public_ip == expected
    assert alert.host.hostname == own_hostname()


# -- the whole alert intake -------------------------------------------------------------------


def stack(moto: Moto, inventory: dict[str, Any]) -> dict[str, str]:
    """The alert intake's resources on moto: the inventory object, the urgent queue and its two tables."""
    s3, sqs, ddb = moto.client("s3"), moto.client("sqs"), moto.client("dynamodb")
    bucket = f"inventory-{os.getpid()}-{len(s3.list_buckets()['Buckets'])}"
    s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket=bucket, Key="inventory.json", Body=json.dumps(inventory).encode())
    urgent = sqs.create_queue(QueueName=f"urgent-{bucket}")["QueueUrl"]
    tables = {}
    for logical_id, key in (("IdempotencyTable", "id"), ("RunsTable", "run_id")):
        name = f"{logical_id}-{bucket}"
        ddb.create_table(TableName=name, AttributeDefinitions=[{"AttributeName": key, "AttributeType": "S"}],
                         KeySchema=[{"AttributeName": key, "KeyType": "HASH"}], BillingMode="PAY_PER_REQUEST")
        tables[logical_id] = name
    # Resources the alert intake never touches still need a value for the template's Refs.
    return {"InventoryBucket": bucket, "UrgentQueue": urgent, "WorkQueue": f"{urgent}-unused",
            "StateTable": "unused", "LocksTable": "unused", "ResultsTopic": f"arn:aws:sns:{REGION}:123456789012:unused",
            **tables}


@pytest.fixture
def aws_env(moto) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update({**CREDENTIALS, "AWS_ENDPOINT_URL": moto.endpoint, "AWS_DEFAULT_REGION": REGION,
                       "AWS_REGION": REGION, "POWERTOOLS_TRACE_DISABLED": "true"})
    os.environ.pop("AWS_PROFILE", None)
    bootstrap.reset_caches()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        bootstrap.reset_caches()


@pytest.mark.parametrize("known_as", ["public_ip", "hostname"])
def test_the_alert_intake_resolves_the_server_and_enqueues_an_urgent_job(moto, tmp_path, aws_env, known_as):
    alias = PUBLIC_IP if known_as == "public_ip" else own_hostname()
    resolve = stack(moto, {"servers": [{"name": "web1", "host": "192.0.2.10", "aliases": [alias],
                                        "host_keys": [KEY]}]})
    # Without a public IP setting the script can only name the server by its hostname.
    conf = f"RELAYGUARD_EVENT_BUS={BUS}\n" + (f"RELAYGUARD_PUBLIC_IP={PUBLIC_IP}\n" if known_as == "public_ip" else "")
    proc = run_script(moto, tmp_path, *csf_argv(), conf=conf, AWS_REGION=REGION)
    assert proc.returncode == 0, proc.stderr
    (event,) = moto.events()
    answer = local_invoke.invoke("AlertIntakeFunction", event, resolve=resolve)
    (result,) = answer["alerts"]
    assert (result["status"], result["server"]) == ("enqueued", "web1")
    sqs = moto.client("sqs")
    (message,) = sqs.receive_message(QueueUrl=resolve["UrgentQueue"], MaxNumberOfMessages=10)["Messages"]
    job = Job.model_validate_json(message["Body"])
    assert (job.trigger, job.server.name, job.alert_id) == ("alert", "web1", event["detail"]["alert_id"])
