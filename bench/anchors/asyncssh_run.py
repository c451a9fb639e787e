"""Anchor: asyncssh, one event loop, at most ``--concurrency`` connections at once, pinned keys."""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncssh

from bench.anchors import parse_args


async def run(args: argparse.Namespace) -> int:
    with open(args.hosts) as fh:
        hosts = fh.read().split()
    with open(args.script) as fh:
        script = fh.read()
    key = asyncssh.read_private_key(args.key)
    known = asyncssh.read_known_hosts(args.known_hosts)
    gate = asyncio.Semaphore(args.concurrency)

    async def one(host: str) -> tuple[str, int, bool]:
        async with gate:
            try:
                async with asyncssh.connect(host, username="root", client_keys=[key], known_hosts=known,
                                            agent_path=None, config=[]) as conn:
                    res = await conn.run("sh -s", input=script, timeout=60)
                    out = res.stdout if isinstance(res.stdout, str) else ""
                    return host, res.exit_status or 0, "\nscan.end=1\n" in out
            except (OSError, asyncssh.Error) as exc:
                print(f"{host}: {exc!r}", file=sys.stderr)
                return host, -1, False

    results = await asyncio.gather(*(one(h) for h in hosts))
    for host, rc, complete in results:
        print(f"{host}\t{rc}\t{int(complete)}")
    return 0 if all(c for _, _, c in results) else 1


def main() -> int:
    return asyncio.run(run(parse_args()))


if __name__ == "__main__":
    sys.exit(main())
