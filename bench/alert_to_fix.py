"""Alert-to-fix latency on the lab: from the alert_intake invocation to the `remediated` SNS message.

    sudo .venv/bin/python -m bench.alert_to_fix [--repeat 5]

Each repetition resets one modern lab host to exposed (not timed), then times, through the same local
invoker, moto stack and SQS poller the end-to-end tests use:

  intake   alert_intake invocation (parse, resolve in the S3 inventory, idempotency record, enqueue)
  queue    enqueue → the urgent queue's poller has the message (here: one ReceiveMessage)
  worker   the worker invocation, split with the result record's own step durations into
             lock+state  lock, fresher-result check, record, count, notify, unlock (worker - engine)
             ssh         connect, host key check, auth (engine - round trips)
             probe       round trip 1
             disable     round trip 2 (whmapi1 set_tweaksetting)
             restart     restartsrv_exim inside round trip 3
             verify      the rest of round trip 3: status, exim -bV, exim -bh relay probe, re-probe,
                         plus the SMTP banner check
  publish  worker return → the message is in a subscriber's SQS queue

Target (issue 6): median ≤ 10 s, Exim restart included. Prints min/median/max per stage.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from relayguard import bootstrap

from harness.aws import MotoServer, Stack, aws_environment, deploy
from harness.e2e import alert_detail, entry, spam_alert_event
from harness.sqs_source import sqs_event
from lab import Host, HostSpec, Lab
from lab.fleet import reserve_net

TARGET_S = 10.0
PUBLIC_IP = "203.0.113.10"
STAGES = ("intake", "queue", "lock+state", "ssh", "probe", "disable", "restart", "verify", "publish", "total")


def one_run(stack: Stack, host: Host, subscriber: str, n: int) -> dict[str, float]:
    sqs = stack.client("sqs")
    t0 = time.perf_counter()
    answer = stack.invoke("AlertIntakeFunction", spam_alert_event(alert_detail(f"bench-{n}", public_ip=PUBLIC_IP)))
    t1 = time.perf_counter()
    assert answer["alerts"][0]["status"] == "enqueued", answer
    messages = []
    while not messages:
        messages = sqs.receive_message(QueueUrl=stack.queue_url("UrgentQueue"), MaxNumberOfMessages=5,
                                       AttributeNames=["All"]).get("Messages", [])
    t2 = time.perf_counter()
    response = stack.invoke("WorkerFunction", sqs_event(messages, stack.queue_arn("UrgentQueue")))
    t3 = time.perf_counter()
    assert response == {"batchItemFailures": []}, response
    sqs.delete_message_batch(QueueUrl=stack.queue_url("UrgentQueue"), Entries=[
        {"Id": "0", "ReceiptHandle": messages[0]["ReceiptHandle"]}])
    remediated = None
    while remediated is None:
        for m in sqs.receive_message(QueueUrl=subscriber, MaxNumberOfMessages=10).get("Messages", []):
            doc = json.loads(json.loads(m["Body"])["Message"])
            sqs.delete_message(QueueUrl=subscriber, ReceiptHandle=m["ReceiptHandle"])
            if doc.get("event") == "server-result" and doc.get("outcome") == "remediated":
                remediated = doc
    t4 = time.perf_counter()
    item = stack.client("dynamodb").get_item(TableName=stack.resolve["StateTable"],
                                             Key={"server": {"S": host.name}})["Item"]
    record = json.loads(item["result"]["S"])
    steps = {s["name"]: s["duration"] for s in record["steps"]}
    round_trips = steps.get("probe", 0) + steps.get("disable", 0) + steps.get("finish", 0)
    restart = steps.get("restart-exim", 0) + steps.get("restart-exim-hard", 0)
    return {
        "intake": t1 - t0,
        "queue": t2 - t1,
        "lock+state": (t3 - t2) - record["duration"],
        "ssh": record["duration"] - round_trips,
        "probe": steps.get("probe", 0),
        "disable": steps.get("disable", 0),
        "restart": restart,
        "verify": steps.get("finish", 0) - restart,
        "publish": t4 - t3,
        "total": t4 - t0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.alert_to_fix", description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("needs root (the lab)", file=sys.stderr)
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="relayguard-bench-a2f-"))
    reservation = reserve_net(start=100 + os.getpid() % 150)
    lab = Lab(workdir / "lab", net=reservation.net)
    moto = MotoServer()
    # moto's backends are per process: another step of `python -m bench` may have left resources behind.
    moto.reset()
    runs: list[dict[str, float]] = []
    handler_log = io.StringIO()
    try:
        (host,) = lab.up({"a2f": HostSpec(profile="modern")})
        with aws_environment(moto):
            # Clients cached by an earlier step of `python -m bench` point at that step's moto server.
            bootstrap.reset_caches()
            stack = deploy(moto.endpoint)
            stack.put_inventory({"servers": [entry(host, aliases=(PUBLIC_IP,))]})
            stack.put_ssh_key(lab.client_key.read_text())
            subscriber = stack.subscribe_queue(name="bench")
            # The first invocation of each function imports it (a Lambda cold start): warm up untimed.
            with contextlib.redirect_stdout(handler_log):
                one_run(stack, host, subscriber, 0)
            for n in range(1, args.repeat + 1):
                lab.reset(host)
                # Identical alerts within the dedup window start one job: forget the previous one.
                ddb = stack.client("dynamodb")
                for item in stack.table_items("IdempotencyTable"):
                    ddb.delete_item(TableName=stack.resolve["IdempotencyTable"], Key={"id": item["id"]})
                with contextlib.redirect_stdout(handler_log):
                    runs.append(one_run(stack, host, subscriber, n))
    finally:
        moto.stop()
        lab.down()
        reservation.release()
        with contextlib.suppress(OSError):
            workdir.rmdir()
    print(f"alert-to-fix on the lab, {len(runs)} runs (warm functions; Exim restart included)")
    print(f"{'stage':12} {'min':>8} {'median':>8} {'max':>8}")
    for stage in STAGES:
        values = [r[stage] for r in runs]
        print(f"{stage:12} {min(values):8.3f} {statistics.median(values):8.3f} {max(values):8.3f}")
    median = statistics.median(r["total"] for r in runs)
    verdict = "meets" if median <= TARGET_S else "MISSES"
    print(f"median total {median:.2f} s: {verdict} the {TARGET_S:.0f} s target (ratio {median / TARGET_S:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
