"""The shipped CSF RT_ACTION script, run as lfd runs it, against the stack on a moto server.

The script is started as a subprocess with CSF's five arguments and the real AWS CLI (pinned in the
test venv) pointed at moto by ``AWS_ENDPOINT_URL``. An EventBridge rule with the template's own
spam-alert pattern, on a bus of its own (so the script's bus setting is what routes it), copies the
event to an SQS queue; the event found there is validated with the alert intake's models, then handed to the alert
intake through the local invoker, and in one test on through the urgent queue to the worker, which
fixes a lab host.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.parser import parse
from aws_lambda_powertools.utilities.parser.models import EventBridgeModel
from relayguard.events import ALERT_DETAIL_TYPE, ALERT_EVENT_SOURCE, Job, SpamAlert

from harness.aws import FAKE_CREDENTIALS, Stack, drain_messages
from harness.e2e import entry
from harness.intrinsics import DEFAULT_ACCOUNT, DEFAULT_REGION
from harness.sqs_source import Poller
from harness.template import load_template
from lab import Host, Lab
from lab.smtp import relay_attempt

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "contrib" / "csf" / "relayguard-rt-action"
VENV_BIN = Path(sys.executable).parent
REGION = DEFAULT_REGION
BUS = "relayguard-alerts"
PUBLIC_IP = "203.0.113.10"
CLIENT_IP = "198.51.100.23"
# Credentials only: the script must get its region from its own settings.
CREDENTIALS = {k: v for k, v in FAKE_CREDENTIALS.items() if not k.endswith("REGION")}
# What lfd passes as $5: mail content, i.e. whatever a spammer wrote.
HOSTILE = (b"From: \"x\" <a@b>\nSubject: $(touch /tmp/relayguard-pwned) `id` '; rm -rf / #\n"
           b"\"quotes\" \\backslashes\\ {\"json\": [1]} \x01\x1b[31m\n") + b"\xff\xfe broken utf-8 \xc3"


@dataclass
class Moto:
    """The stack, plus a queue that receives every event the template's spam-alert rule matches."""

    stack: Stack
    queue_url: str

    @property
    def endpoint(self) -> str:
        return self.stack.endpoint

    def client(self, service: str) -> Any:
        return self.stack.client(service)

    def events(self) -> list[dict[str, Any]]:
        events = [json.loads(m["Body"]) for m in drain_messages(self.client("sqs"), self.queue_url)]
        for event in events:
            # moto's SQS target leaves out the envelope's "account", which EventBridge always sets.
            event.setdefault("account", DEFAULT_ACCOUNT)
        return events


@pytest.fixture
def moto(stack: Stack) -> Moto:
    """The e2e stack, plus a rule with the template's spam-alert pattern on our bus, copying events to a queue."""
    sqs, events = stack.client("sqs"), stack.client("events")
    url = sqs.create_queue(QueueName="captured-alerts")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    rule = load_template()["Resources"]["AlertIntakeFunction"]["Properties"]["Events"]["SpamAlert"]
    events.create_event_bus(Name=BUS)
    events.put_rule(Name="spam-alerts", EventBusName=BUS, EventPattern=json.dumps(rule["Properties"]["Pattern"]))
    events.put_targets(Rule="spam-alerts", EventBusName=BUS, Targets=[{"Id": "capture", "Arn": arn}])
    return Moto(stack, url)


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


def test_lfds_arguments_become_an_event_the_alert_intake_accepts(moto: Moto, tmp_path: Path) -> None:
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


def test_a_long_sample_is_cut_and_marked(moto: Moto, tmp_path: Path) -> None:
    sample = "Received: from spammer\n" * 1000
    proc = run_script(moto, tmp_path, *csf_argv(sample))
    assert proc.returncode == 0, proc.stderr
    (event,) = moto.events()
    alert = SpamAlert.model_validate(event["detail"])
    assert alert.evidence["sample"] == sample[:4000]
    assert alert.evidence["sample_truncated"] is True


def test_a_client_that_is_not_an_ip_and_an_odd_count_still_make_a_valid_alert(moto: Moto, tmp_path: Path) -> None:
    proc = run_script(moto, tmp_path, "cpaneluser", "LOCALRELAY", "blocked", "many", "")
    assert proc.returncode == 0, proc.stderr
    (event,) = moto.events()
    alert = SpamAlert.model_validate(event["detail"])
    assert alert.subject == {"ips": [], "client": "cpaneluser", "relay_type": "LOCALRELAY"}
    assert alert.metrics == {"count": None}
    assert alert.severity == "warning"


def test_without_arguments_it_sends_nothing(moto: Moto, tmp_path: Path) -> None:
    proc = run_script(moto, tmp_path)
    assert proc.returncode == 64
    assert "usage" in proc.stderr
    assert moto.events() == []


def test_a_bad_public_ip_setting_is_refused_before_anything_is_sent(moto: Moto, tmp_path: Path) -> None:
    proc = run_script(moto, tmp_path, *csf_argv(), RELAYGUARD_PUBLIC_IP="not-an-ip")
    assert proc.returncode == 78
    assert "RELAYGUARD_PUBLIC_IP 'not-an-ip' is not an IP address" in proc.stderr
    assert moto.events() == []


def test_an_unreachable_endpoint_is_a_failure_not_a_silent_success(tmp_path: Path) -> None:
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
def test_on_a_cpanel_server_it_names_the_public_ip_cpanel_knows(
        moto: Moto, tmp_path: Path, files: dict[str, str], expected: str | None) -> None:
    # cPanel's files at their real paths: the script runs in a mount namespace of its own whose /var is
    # an overlay holding them (the lab's technique; the machine's own /var is never touched).
    upper, work = tmp_path / "var-upper", tmp_path / "var-work"
    for path, content in files.items():
        target = upper / Path(path).relative_to("/var")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
    work.mkdir()
    env = {"PATH": f"{VENV_BIN}:/usr/bin:/bin", "HOME": "/root", "RELAYGUARD_RT_CONF": "/nonexistent",
           "RELAYGUARD_EVENT_BUS": BUS, "AWS_REGION": REGION, "AWS_ENDPOINT_URL": moto.endpoint, **CREDENTIALS}
    argv = ["env", "-i", *(f"{k}={v}" for k, v in env.items()), str(SCRIPT), CLIENT_IP, "POPRELAY", "blocked",
            "120", "Subject: hello"]
    overlay = 'mount -t overlay overlay -o "lowerdir=/var,upperdir=$0,workdir=$1" /var && shift && exec "$@"'
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", overlay,
                             str(upper), str(work), *argv], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    (event,) = moto.events()
    alert = SpamAlert.model_validate(event["detail"])
    assert alert.host.public_ip == expected
    assert alert.host.hostname == own_hostname()


# -- the whole alert intake -------------------------------------------------------------------


@pytest.mark.parametrize("known_as", ["public_ip", "hostname"])
def test_the_alert_intake_resolves_the_server_and_enqueues_an_urgent_job(
        moto: Moto, tmp_path: Path, known_as: str) -> None:
    alias = PUBLIC_IP if known_as == "public_ip" else own_hostname()
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEB"
    moto.stack.put_inventory({"servers": [{"name": "web1", "host": "192.0.2.10", "aliases": [alias],
                                           "host_keys": [key]}]})
    # Without a public IP setting the script can only name the server by its hostname.
    conf = f"RELAYGUARD_EVENT_BUS={BUS}\n" + (f"RELAYGUARD_PUBLIC_IP={PUBLIC_IP}\n" if known_as == "public_ip" else "")
    proc = run_script(moto, tmp_path, *csf_argv(), conf=conf, AWS_REGION=REGION)
    assert proc.returncode == 0, proc.stderr
    (event,) = moto.events()
    (result,) = moto.stack.invoke("AlertIntakeFunction", event)["alerts"]
    assert (result["status"], result["server"]) == ("enqueued", "web1")
    (message,) = drain_messages(moto.client("sqs"), moto.stack.queue_url("UrgentQueue"))
    job = Job.model_validate_json(message["Body"])
    assert (job.trigger, job.server.name, job.alert_id) == ("alert", "web1", event["detail"]["alert_id"])


def test_a_csf_alert_gets_its_server_fixed(moto: Moto, lab: Lab, modern: Host, tmp_path: Path) -> None:
    moto.stack.put_inventory({"servers": [entry(modern, aliases=(PUBLIC_IP,))]})
    source = lab.client_source()
    assert relay_attempt(modern.address, source).code == 250
    assert run_script(moto, tmp_path, *csf_argv()).returncode == 0
    (event,) = moto.events()
    assert moto.stack.invoke("AlertIntakeFunction", event)["alerts"][0]["status"] == "enqueued"
    assert Poller(moto.stack, "WorkerFunction", "UrgentQueue").poll_once() == {"batchItemFailures": []}
    assert relay_attempt(modern.address, source).code == 550
