"""Load test of the planner and queue path: a 10,000-server inventory on moto, no SSH.

    .venv/bin/python -m bench.scale [--servers 10000] [--threads 1]

What runs: template.yaml's queues, tables, topics and bucket on a moto server (127.0.0.1, free port;
harness/aws.py); the inventory in the bucket; the real planner handler through the local invoker
(its real S3, DynamoDB, SQS and SNS adapters). Then every job is counted the way a worker counts a
finished server (``Publisher.count``, the real DynamoDB run store), from ``--threads`` threads at
once, with a known mix of outcomes; 1% of the jobs are counted twice, as a redelivered message would
be. The jobs are the ones SQS accepted (each SendMessageBatch's ``Successful`` entries), checked
against the queue's depth, not received: moto's ReceiveMessage is quadratic in the queue's depth and
would take most of an hour at 10,000 messages. A queue subscribed to the results topic (filter: the
run digest) receives what subscribers would.

Checks: every SendMessageBatch holds at most 10 entries and at most 256 KiB; one job per server is on
the queue; every SNS message is at most 256 KiB; exactly one digest, whose total and counts equal the
inventory and the outcome mix (redeliveries not counted twice). Prints the call counts and sizes the
scale model in docs/scaling.md uses.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.common import REPO, log, machine

SQS_MAX_ENTRIES = 10
MAX_BYTES = 256 * 1024  # SQS SendMessageBatch payload and SNS Publish message, each
#: The outcome mix a sweep is counted with: by server index modulo 100.
MIX = ((80, "compliant"), (95, "noncompliant"), (98, "remediated"), (99, "not-cpanel"), (100, "failed"))


def outcome_of(index: int) -> str:
    return next(name for bound, name in MIX if index % 100 < bound)


def inventory(count: int) -> dict[str, Any]:
    """``count`` servers in 198.18.0.0/15 (RFC 2544's benchmarking range), one realistic pinned key each."""
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ed25519  # noqa: PLC0415

    servers = []
    for i in range(count):
        raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
        servers.append({"name": f"web{i:05d}", "host": f"198.{18 + i // 65536}.{i // 256 % 256}.{i % 256}",
                        "port": 22, "user": "root", "host_keys": [raw], "tags": ["load"],
                        "aliases": [f"web{i:05d}.example.com",
                                    "i-" + base64.b16encode(os.urandom(8)).decode().lower()]})
    return {"servers": servers}


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0915 - one linear scenario
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--servers", type=int, default=10_000)
    # One thread by default: moto's DynamoDB does not apply concurrent UpdateItem calls atomically (at
    # 2,000 servers and 16 threads it lost one ADD to the run's `completed` counter, so no digest came
    # out), whereas DynamoDB does. More threads test moto, not RelayGuard.
    parser.add_argument("--threads", type=int, default=1, help="workers counting finished servers at once")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    os.chdir(REPO)
    from relayguard import bootstrap  # noqa: PLC0415 - after sys.path
    from relayguard.config import load_settings  # noqa: PLC0415
    from relayguard.events import Job  # noqa: PLC0415

    from harness import invoke  # noqa: PLC0415
    from harness.aws import MotoServer, aws_environment, deploy  # noqa: PLC0415
    from harness.e2e import notifications, scheduled_event  # noqa: PLC0415

    log(f"bench.scale: {args.servers} servers, {args.threads} counting threads\n  machine: {machine()}")
    server = MotoServer()
    try:
        with aws_environment(server):
            bootstrap.reset_caches()
            invoke.reset()
            stack = deploy(server.endpoint)
            digests = stack.subscribe_queue(filter_policy={"event": ["run-digest"]}, name="digest-watch")
            inv = inventory(args.servers)
            body = json.dumps(inv)
            stack.put_inventory(body)

            batches: list[tuple[int, int]] = []
            publishes: list[int] = []
            pending: dict[str, str] = {}
            accepted: list[str] = []

            def on_batch(params: dict[str, Any], **_: Any) -> None:
                entries = params["Entries"]
                batches.append((len(entries), sum(len(e["MessageBody"].encode()) for e in entries)))
                pending.update({e["Id"]: e["MessageBody"] for e in entries})

            def on_batch_done(parsed: dict[str, Any], **_: Any) -> None:
                accepted.extend(pending[ok["Id"]] for ok in parsed.get("Successful", []))
                pending.clear()

            def on_publish(params: dict[str, Any], **_: Any) -> None:
                attributes = params.get("MessageAttributes", {}).items()
                attrs = sum(len(k) + len(v.get("StringValue", "")) for k, v in attributes)
                publishes.append(len(params["Message"].encode()) + len(params.get("Subject", "")) + attrs)

            bootstrap.client("sqs").meta.events.register("provide-client-params.sqs.SendMessageBatch", on_batch)
            bootstrap.client("sqs").meta.events.register("after-call.sqs.SendMessageBatch", on_batch_done)
            bootstrap.client("sns").meta.events.register("provide-client-params.sns.Publish", on_publish)

            started = time.perf_counter()
            answer = stack.invoke("PlannerFunction", scheduled_event())
            planner_s = time.perf_counter() - started
            depth = stack.queue_depth("WorkQueue")
            log(f"  planner: {planner_s:.1f} s, {answer}")

            settings = load_settings(stack.environment_of("WorkerFunction"))
            publisher = bootstrap.publisher(settings)
            seen: Counter[str] = Counter()
            lock = threading.Lock()
            index = {s["name"]: i for i, s in enumerate(inv["servers"])}
            work = iter(accepted)

            def count_jobs() -> None:
                while True:
                    with lock:
                        body = next(work, None)
                    if body is None:
                        return
                    job = Job.model_validate_json(body)
                    i = index[job.server.name]
                    for _ in range(2 if i % 100 == 7 else 1):  # 1% redelivered: must count once
                        publisher.count(job.run_id, job.server.name, outcome_of(i))
                    with lock:
                        seen[job.server.name] += 1

            started = time.perf_counter()
            threads = [threading.Thread(target=count_jobs) for _ in range(args.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            counting_s = time.perf_counter() - started
            got = notifications(stack, digests)
            run = bootstrap.run_store(settings).progress(answer["run_id"])
    finally:
        server.stop()

    expected = Counter(outcome_of(i) for i in range(args.servers))
    digest = got[0]["doc"] if len(got) == 1 else {}
    checks = [
        (f"every SendMessageBatch <= {SQS_MAX_ENTRIES} entries", all(n <= SQS_MAX_ENTRIES for n, _ in batches)),
        ("every SendMessageBatch <= 256 KiB", all(b <= MAX_BYTES for _, b in batches)),
        (f"SendMessageBatch calls = ceil(servers / 10) = {math.ceil(args.servers / 10)}",
         len(batches) == math.ceil(args.servers / 10)),
        ("one job per server on the work queue", depth == args.servers and len(seen) == args.servers
         and set(seen.values()) == {1}),
        ("nothing unsent", answer.get("unsent") == 0 and answer.get("servers") == args.servers),
        ("every SNS message <= 256 KiB", all(p <= MAX_BYTES for p in publishes)),
        ("exactly one digest", len(got) == 1 and len(publishes) == 1),
        ("digest total = servers", digest.get("total") == args.servers),
        ("digest counts = outcome mix (redeliveries counted once)",
         digest.get("counts") == {k: v for k, v in sorted(expected.items())}),
    ]
    if not checks[3][1]:
        log(f"  queue depth {depth}, jobs seen {len(seen)}")
    sizes = [b for _, b in batches]
    per_job = sum(sizes) / max(args.servers, 1)
    print(f"\n### Planner and queue path, {args.servers} servers on moto\n")
    print(f"- inventory object: {len(body.encode()) / 1e6:.2f} MB JSON")
    print(f"- planner (handler through the local invoker, moto): {planner_s:.1f} s; "
          f"SendMessageBatch calls: {len(batches)}, entries max {max(n for n, _ in batches)}, "
          f"payload max {max(sizes) / 1024:.1f} KiB, mean job message {per_job:.0f} bytes")
    print(f"- counting {args.servers} finished servers from {args.threads} threads: {counting_s:.1f} s "
          f"({args.servers / counting_s:.0f}/s on moto)")
    print(f"- run record after counting: completed {run.completed} of {run.total}, counts {run.counts}")
    print(f"- SNS publishes: {len(publishes)} (largest {max(publishes, default=0)} bytes); digest: "
          f"total {digest.get('total')}, counts {digest.get('counts')}")
    print()
    for text, ok in checks:
        print(f"- {text}: {'yes' if ok else 'NO'}")
    print(f"\nMachine: {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "servers": args.servers, "planner_s": planner_s, "batches": len(batches), "max_batch_bytes": max(sizes),
            "mean_job_bytes": per_job, "counting_s": counting_s, "digest": digest,
            "checks": {t: ok for t, ok in checks}}, indent=1))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
