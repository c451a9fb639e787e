"""Every sample event in events/ goes through its function via the local invoker: accepted, or rejected precisely."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from pydantic import ValidationError

from harness.aws import MotoServer, Stack
from harness.e2e import entry
from lab import Host

if TYPE_CHECKING:
    from tests.conftest import HostFactory

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events"
FUNCTIONS = {"planner": "PlannerFunction", "worker": "WorkerFunction", "alert_intake": "AlertIntakeFunction"}
#: What the rejection of each malformed sample must say (a new malformed sample needs a line here).
REJECTIONS = {
    "planner/malformed_bad_mode.json": "mode",
    "alert_intake/malformed_no_host.json": "host needs at least one of hostname, public_ip, instance_id",
    "alert_intake/malformed_bad_ip.json": "does not appear to be an IPv4 or IPv6 address",
    "alert_intake/malformed_alarm_without_server.json": "names no server (dimension Server, Hostname or InstanceId)",
    "alert_intake/malformed_revert_not_manual.json": "a revert_request comes only from an operator (source manual)",
}
SAMPLES = sorted(str(p.relative_to(EVENTS)) for p in EVENTS.glob("*/*.json"))
ACCEPTED = [s for s in SAMPLES if not Path(s).name.startswith("malformed_")]


def test_every_function_has_samples_and_every_malformed_sample_an_expected_rejection() -> None:
    assert {Path(s).parts[0] for s in SAMPLES} == set(FUNCTIONS)
    assert {s for s in SAMPLES if s not in ACCEPTED} == set(REJECTIONS)


#: The samples' web1 and web2 as lab hosts, and as inventory entries.
Fleet = tuple[dict[str, Host], dict[str, dict[str, Any]]]


@pytest.fixture
def fleet(stack: Stack, make_host: HostFactory) -> Fleet:
    """web1 and web2 of the samples, played by lab hosts (web1 compliant, web2 not cPanel)."""
    web1, web2 = make_host(profile="modern", exposed=False), make_host(profile="not-cpanel")
    servers = {"web1": entry(web1, name="web1", aliases=("web1.example.com", "203.0.113.10")),
               "web2": entry(web2, name="web2", aliases=("web2.example.com", "203.0.113.20"))}
    stack.put_inventory({"servers": list(servers.values())})
    return {"web1": web1, "web2": web2}, servers


def _point_at_stack(event: dict[str, Any], stack: Stack, servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A sample SQS batch as the stack's own queue would deliver it, its servers played by the lab."""
    for record in event["Records"]:
        queue = "UrgentQueue" if "UrgentQueue" in record["eventSourceARN"] else "WorkQueue"
        record["eventSourceARN"] = stack.queue_arn(queue)
        try:
            job = json.loads(record["body"])
        except ValueError:
            continue
        if isinstance(job.get("server"), dict) and job["server"].get("name") in servers:
            s = servers[job["server"]["name"]]
            job["server"].update(host=s["host"], port=s["port"], user=s["user"], host_keys=s["host_keys"])
            record["body"] = json.dumps(job)
    return event


@pytest.mark.parametrize("sample", ACCEPTED)
def test_sample_event_is_accepted_by_its_function(sample: str, stack: Stack, fleet: Fleet) -> None:
    hosts, servers = fleet
    event = json.loads((EVENTS / sample).read_text())
    function = FUNCTIONS[Path(sample).parts[0]]
    if function == "WorkerFunction":
        event = _point_at_stack(event, stack, servers)

    answer = stack.invoke(function, event)

    name = Path(sample).stem
    if function == "PlannerFunction":
        assert answer["servers"] == 2
        assert stack.queue_depth("WorkQueue") == 2
    elif function == "WorkerFunction":
        bodies = {r["messageId"]: r["body"] for r in event["Records"]}
        failed = [bodies[f["itemIdentifier"]] for f in answer["batchItemFailures"]]
        assert all(not json.loads(b).get("run_id") for b in failed)  # only the poison record, if any
        assert len(failed) == (1 if name == "good_and_poison" else 0)
        assert hosts["web1"].accepted_logins() >= 1
    else:
        statuses = [a["status"] for a in answer["alerts"]]
        expected = {"unknown_server": ["unknown-server"], "cloudwatch_alarm_ok": []}.get(name, ["enqueued"])
        assert statuses == expected
        assert stack.queue_depth("UrgentQueue") == expected.count("enqueued")


@pytest.mark.parametrize("sample", sorted(REJECTIONS))
def test_malformed_sample_is_rejected_with_a_precise_message(sample: str, stack: Stack, fleet: Fleet) -> None:
    event = json.loads((EVENTS / sample).read_text())
    with pytest.raises((ValueError, ValidationError), match=re.escape(REJECTIONS[sample])):
        stack.invoke(FUNCTIONS[Path(sample).parts[0]], event)
    assert stack.queue_depth("WorkQueue") == 0
    assert stack.queue_depth("UrgentQueue") == 0


def test_local_invoke_command_runs_a_sample_against_the_stack_it_is_pointed_at(
        stack: Stack, fleet: Fleet, moto_server: MotoServer, tmp_path: Path, repo_root: Path) -> None:
    env_vars = tmp_path / "env.json"
    env_vars.write_text(json.dumps({"Parameters": moto_server.environment(),
                                    "PlannerFunction": stack.environment_of("PlannerFunction")}))
    done = subprocess.run(["./scripts/local-invoke", "PlannerFunction", "-e", "events/planner/manual_fix_sweep.json",
                           "--env-vars", str(env_vars)], cwd=repo_root, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout[done.stdout.index("{\n"):])
    assert (answer["servers"], answer["mode"]) == (2, "fix")
    assert stack.queue_depth("WorkQueue") == 2
