"""``./scripts/demo``: RelayGuard's main job, end to end, on a small local fleet. Needs root (the lab).

A scheduled sweep in fix mode runs through the real handlers of template.yaml (local invoker), real
SQS, DynamoDB, Secrets Manager, S3 and SNS (moto server on 127.0.0.1) and real SSH and Exim (lab
hosts on 127.78.0.0/16), with a fleet key enrolled to run RelayGuard's operations and nothing else.
The same sweep judges web1's mail domains (SPF, DKIM, DMARC, reverse DNS) against the lab's real DNS
(nsd behind unbound on 127.78.252.x). Then someone turns POP-before-SMTP back on for one server, a CSF
relay alert arrives, and the alert path fixes it. Before and after each fix a real SMTP client tries
to relay from a POP user's address. Everything started is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from relayguard.domain.mailreport import digest_text as mail_digest_text
from relayguard.domain.mailreport import summary_text

from harness.aws import MotoServer, Stack, aws_environment, deploy
from harness.e2e import alert_detail, entry, scheduled_event, spam_alert_event
from harness.sqs_source import Poller
from lab import HostSpec, Lab, maildomains
from lab.dns import LabDns
from lab.remote import ssh
from lab.smtp import relay_attempt

NET = 78
PUBLIC_IP = "203.0.113.10"
#: web1's mail domains (lab/maildomains.py): two that pass, four that each break a receiver rule.
MAIL_CASES = ("good", "dmarc-none", "dmarc-missing", "dkim-mismatch", "spf-not-covering", "ptr-missing")
FLEET = {
    "web1": HostSpec(profile="modern", mail_cases=MAIL_CASES),
    "web2": HostSpec(profile="legacy"),
    "web3": HostSpec(profile="modern", exposed=False),
    "web4": HostSpec(profile="not-cpanel"),
}
#: What the sweep's digest must count: the fleet above plus web5, where nothing listens.
EXPECTED_COUNTS = {"remediated": 2, "compliant": 1, "not-cpanel": 1, "unreachable": 1}
#: The cases above that break a receiver rule, as lab/maildomains.py's table says.
EXPECTED_FAILING_DOMAINS = sum(1 for name in MAIL_CASES if maildomains.case(name).rules_broken)
WIDTH = 100


def say(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    say()
    say(f"== {text} " + "=" * max(0, WIDTH - len(text) - 4))


def show_relay(lab: Lab, name: str, address: str) -> int:
    reply = relay_attempt(address, lab.client_source())
    verdict = "ACCEPTED: relays without AUTH" if reply.code == 250 else "refused"
    text = " ".join(reply.text.split())
    text = text if len(text) <= 48 else text[:47] + "…"
    say(f"  {name:5} RCPT TO:<victim@example.net> from {lab.client_source()} -> {reply.code} {text:48} [{verdict}]")
    return reply.code


@contextlib.contextmanager
def handler_output(log: TextIO) -> Iterator[None]:
    """The handlers' JSON logs and EMF metrics go to the log file, as CloudWatch would keep them."""
    with contextlib.redirect_stdout(log):
        yield


def show_messages(stack: Stack, queue_url: str) -> list[dict[str, Any]]:
    received = []
    for envelope in stack.received(queue_url):
        doc = json.loads(envelope["Message"])
        attrs = {k: v["Value"] for k, v in (envelope.get("MessageAttributes") or {}).items()}
        received.append(doc)
        say(f"  SNS message  Subject: {envelope.get('Subject')}")
        say(f"    attributes: {json.dumps(attrs, sort_keys=True)}")
        keep = ("event", "change", "server", "outcome", "reason", "generation", "exposed_before", "exposed_after",
                "restarted", "affected_mailboxes", "relay_probe", "warnings", "total", "counts", "failed")
        body = {k: doc[k] for k in keep if k in doc and doc[k] not in ("", [], None)}
        for line in textwrap.wrap(json.dumps(body), WIDTH - 6):
            say(f"    {line}")
    return received


def show_digest(doc: dict[str, Any]) -> None:
    say(f"  Run {doc['run_id']} ({doc['trigger']}, mode {doc['mode']}): {doc['total']} servers, "
        f"outcome {doc['outcome']}, severity {doc['severity']}")
    for outcome, n in doc["counts"].items():
        say(f"    {outcome:18} {n}")


def show_deliverability(docs: list[dict[str, Any]], digest: dict[str, Any]) -> dict[str, Any]:
    """web1's findings as its server-deliverability message has them, then the digest's fleet line."""
    found = [d for d in docs if d["event"] == "server-deliverability"]
    if not found:
        say("  (no server-deliverability message)")
        return {}
    doc = found[0]
    say(f"  {doc['server']}: {summary_text(doc['summary'])}")
    for d in doc["domains"]:
        bad = ", ".join(f"{check} {status}" for check, status in d["checks"].items() if status != "valid")
        say(f"    {d['domain']:20} {d['sending_ip']:14} breaks {', '.join(d['rules_broken'])}")
        say(f"    {'':20} {'':14} because {bad}")
    mail = digest.get("deliverability") or {}
    if mail:
        say(f"  digest: {mail_digest_text(mail, mail['servers'])}")
    say("  (statuses as WHM's Email Deliverability names them; rules and sources: docs/deliverability.md)")
    return dict(doc["summary"])


RELAYGUARD = str(Path(sys.executable).with_name("relayguard"))


def enroll(lab: Lab, hosts: list[Any], fleet_key: Path) -> subprocess.CompletedProcess[str]:
    """``relayguard enroll`` with the operator's key (the lab's root key): the fleet key may then run
    RelayGuard's operations on these hosts and nothing else, from 127.0.0.1 only."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "relayguard-fleet", "-f", str(fleet_key)],
                   check=True, timeout=30)
    return subprocess.run([RELAYGUARD, "enroll", "--identity", str(lab.client_key), "--known-hosts",
                           str(lab.known_hosts), "--fleet-key", f"{fleet_key}.pub", "--from", "127.0.0.1",
                           *(h.address for h in hosts)], capture_output=True, text=True, timeout=120, check=False)


def run(workdir: Path, log: TextIO) -> int:  # noqa: PLR0915 - a script, read top to bottom
    started = time.monotonic()
    lab = Lab(workdir / "lab", net=NET)
    moto: MotoServer | None = None
    dns: LabDns | None = None
    try:
        heading("1. A small fleet of simulated cPanel servers (real sshd + real Exim on loopback)")
        hosts = {h.name: h for h in lab.up(FLEET)}
        unreachable = lab.address_of(150)
        for name, h in hosts.items():
            state = "exposed" if h.spec.exposed and h.spec.profile in ("modern", "legacy") else "closed"
            profile = {"modern": "cPanel 11.120", "legacy": "cPanel 11.46", "not-cpanel": "not cPanel"}[h.spec.profile]
            say(f"  {name}  {h.address:15} {profile:14} POP-before-SMTP {state if profile != 'not cPanel' else '-'}")
        say(f"  web5  {unreachable:15} (nothing listens: an unreachable server)")
        dns = LabDns(lab.workdir / "dns", NET).start()
        say(f"  DNS   {dns.resolver:15} unbound, resolving from nsd: web1's {len(MAIL_CASES)} mail domains and "
            "their PTRs")
        heading("   The fleet key: enrolled, so it runs RelayGuard's operations and nothing else")
        fleet_key = lab.workdir / "fleet-key"
        enrolled = enroll(lab, [hosts[n] for n in ("web1", "web2", "web3", "web4")], fleet_key)
        for line in enrolled.stdout.splitlines():
            say(f"  {line}")
        # What a thief of the fleet key gets when asking for a command.
        thief = ssh(hosts["web1"], "cat /etc/shadow", key=fleet_key)
        refusal = " ".join(thief.err.split())
        say(f"  ssh -i fleet-key root@web1 'cat /etc/shadow' -> exit {thief.rc}: "
            f"{refusal[:60] + ('…' if len(refusal) > 60 else '')}")

        heading("2. The stack of template.yaml on a local AWS (moto server on 127.0.0.1)")
        moto = MotoServer()
        with aws_environment(moto):
            stack = deploy(moto.endpoint, parameters={"SweepMode": "fix", "DnsResolver": dns.resolver})
            inventory = [entry(hosts["web1"], aliases=(PUBLIC_IP,)),
                         *(entry(hosts[n]) for n in ("web2", "web3", "web4")),
                         {**entry(hosts["web4"], name="web5"), "host": unreachable, "aliases": ["web5.lab.test"]}]
            stack.put_inventory({"servers": inventory})
            stack.put_ssh_key(fleet_key.read_text())
            subscriber = stack.subscribe_queue(name="ops-subscriber")
            say(f"  inventory: s3://{stack.resolve['InventoryBucket']}/inventory.json ({len(inventory)} servers, "
                "host keys pinned)")
            say("  SSH key:   Secrets Manager relayguard/ssh-key (the fleet key)")
            say(f"  results:   SNS {stack.resolve['ResultsTopic']} -> SQS queue ops-subscriber")

            heading("3. Before: a customer logged in by POP3 from the office; now anyone there relays")
            before = {n: show_relay(lab, n, hosts[n].address) for n in ("web1", "web2", "web3")}

            heading("4. The schedule fires: planner -> work queue -> worker (SSH) -> SNS")
            with handler_output(log):
                planned = stack.invoke("PlannerFunction", scheduled_event())
            say(f"  planner: run {planned['run_id']}, mode {planned['mode']}, {planned['servers']} jobs queued")
            worker = Poller(stack, "WorkerFunction", "WorkQueue")
            with handler_output(log):
                worker.drain()
            say(f"  worker: {len(worker.invocations)} invocation(s) of up to {worker.batch_size} jobs")

            heading("5. What a subscriber received")
            docs = show_messages(stack, subscriber)
            digests = [d for d in docs if d["event"] == "run-digest"]
            heading("   The run digest")
            for d in digests:
                show_digest(d)
            heading("   Deliverability: would Gmail and Microsoft accept web1's mail? (read-only, same SSH exec)")
            mail = show_deliverability(docs, digests[0] if digests else {})

            heading("6. After: the same relay attempt from the same address")
            after = {n: show_relay(lab, n, hosts[n].address) for n in ("web1", "web2", "web3")}

            heading("7. Someone turns POP-before-SMTP back on for web1; CSF reports relaying")
            ssh(hosts["web1"], "/usr/local/cpanel/bin/whmapi1 --output=json set_tweaksetting key=popbeforesmtp value=1")
            reopened = show_relay(lab, "web1", hosts["web1"].address)
            alert = alert_detail("csf-demo-1", public_ip=PUBLIC_IP)
            say(f"  alert: source {alert['source']}, kind {alert['kind']}, "
                f"names the server by its public IP {PUBLIC_IP}")
            t0 = time.monotonic()
            with handler_output(log):
                answer = stack.invoke("AlertIntakeFunction", spam_alert_event(alert))
                urgent = Poller(stack, "WorkerFunction", "UrgentQueue")
                urgent.drain()
            say(f"  alert_intake: {answer['alerts'][0]['status']} for {answer['alerts'][0].get('server')}; "
                f"urgent job done in {time.monotonic() - t0:.1f} s")
            show_messages(stack, subscriber)
            refixed = show_relay(lab, "web1", hosts["web1"].address)
    finally:
        heading("8. Stopping everything this demo started")
        if moto is not None:
            moto.stop()
        if dns is not None:
            dns.stop()
        lab.down()
        say(f"  lab hosts, DNS and moto stopped; work directory {workdir} removed")

    ok = (before["web1"] == 250 and before["web2"] == 250 and after["web1"] >= 500 and after["web2"] >= 500
          and reopened == 250 and refixed >= 500 and len(digests) == 1 and digests[0]["counts"] == EXPECTED_COUNTS
          and mail.get("domains") == len(MAIL_CASES) and mail.get("failing") == EXPECTED_FAILING_DOMAINS
          and enrolled.returncode == 0 and thief.rc != 0 and "root:" not in thief.out
          and not any("unrestricted-key" in d.get("warnings", []) for d in docs))
    heading("Result")
    say(f"  {'PASS' if ok else 'FAIL'}: relaying without AUTH was accepted (250) before and refused (5xx) after, "
        f"on both generations and again after the alert; the digest counted every server "
        f"({', '.join(f'{k} {v}' for k, v in EXPECTED_COUNTS.items())}); {EXPECTED_FAILING_DOMAINS} of web1's "
        f"{len(MAIL_CASES)} mail domains break a receiver rule; the enrolled fleet key did every job and got no "
        f"shell. {time.monotonic() - started:.0f} s in all.")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./scripts/demo", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    if os.geteuid() != 0:
        print("the demo needs root: each simulated server runs in its own mount and PID namespace.\n"
              "run: ./scripts/demo (it re-runs itself through sudo)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="relayguard-demo-"))
    log_path = Path(tempfile.gettempdir()) / "relayguard-demo-handlers.log"
    with log_path.open("w") as log:
        code = run(workdir, log)
    with contextlib.suppress(OSError):
        workdir.rmdir()
    say(f"  The handlers' own logs and metrics (JSON, as in CloudWatch): {log_path}")
    return code


if __name__ == "__main__":
    sys.exit(main())
