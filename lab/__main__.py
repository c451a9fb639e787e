"""``python -m lab up|status|down``: the test lab by hand.

    sudo .venv/bin/python -m lab up --hosts 3 --profile modern
    .venv/bin/python -m lab status
    .venv/bin/python -m lab down
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime
from pathlib import Path

from lab.fleet import Lab, LabError
from lab.spam import spam_lines
from lab.spec import PROFILES, SWITCHES, HostSpec

DEFAULT_DIR = Path(os.environ.get("RELAYGUARD_LAB_DIR", "/tmp/relayguard-lab"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="lab work directory (%(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start hosts (idempotent)")
    up.add_argument("--hosts", type=int, default=1)
    up.add_argument("--profile", choices=PROFILES, default="modern")
    up.add_argument("--compliant", action="store_true", help="start with the relay gate closed")
    up.add_argument("--switch", action="append", default=[], metavar="NAME[=VALUE]",
                    help=f"failure switch ({', '.join(sorted(SWITCHES))}, slow_<tool>=SECONDS)")
    up.add_argument("--net", type=int, default=77, help="second octet of the 127.x.0.0/16 range (%(default)s)")
    up.add_argument("--prefix", default="h", help="host name prefix (%(default)s)")
    up.add_argument("--spam", type=int, default=0, metavar="N",
                    help="seed N queued messages, N send-limit hits and N relay rejects 5 minutes before now")
    sub.add_parser("status", help="list hosts as JSON")
    sub.add_parser("down", help="stop every host and remove the work directory (idempotent)")
    args = parser.parse_args(argv)

    if args.command in ("up", "down") and os.geteuid() != 0:
        print("the lab needs root (mount and PID namespaces)", file=sys.stderr)
        return 1
    try:
        if args.command == "up":
            lab = Lab(args.dir, net=args.net)
            switches = dict(s.split("=", 1) if "=" in s else (s, "") for s in args.switch)
            spam = spam_lines(datetime.now(), send_limit_hits=args.spam, relay_rejects=args.spam) if args.spam else ()
            spec = HostSpec(profile=args.profile, exposed=not args.compliant, switches=switches,
                            queue_size=args.spam, mainlog_lines=spam)
            hosts = lab.up({f"{args.prefix}{i + 1:02d}": spec for i in range(args.hosts)})
            for h in hosts:
                print(f"{h.name}\t{h.address}\t{h.spec.profile}\t{'exposed' if h.spec.exposed else 'compliant'}")
            print(f"client key: {lab.client_key}\nknown_hosts: {lab.known_hosts}\ninventory: {lab.inventory}")
        elif args.command == "status":
            if not (args.dir / "lab.json").exists():
                print("[]")
                return 0
            print(json.dumps(Lab(args.dir).status(), indent=1))
        else:
            Lab(args.dir).down()
    except (LabError, ValueError) as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
