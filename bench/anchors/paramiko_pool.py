"""Anchor: the minimal paramiko script an operator would write (thread pool, TCP_NODELAY, pinned keys).

``--threads 1`` is the naive sequential loop (and ``--nodelay 0`` leaves Nagle on, as paramiko does).
The script goes on stdin to ``sh -s``, as RelayGuard sends it.
"""

from __future__ import annotations

import socket
import sys
from concurrent.futures import ThreadPoolExecutor

import paramiko

from bench.anchors import parse_args


def main() -> int:
    args = parse_args(nodelay=True)
    with open(args.hosts) as fh:
        hosts = fh.read().split()
    with open(args.script, "rb") as fh:
        script = fh.read()
    key = paramiko.Ed25519Key.from_private_key_file(args.key)
    known = paramiko.HostKeys(args.known_hosts)

    def one(host: str) -> tuple[str, int, bool]:
        sock = socket.create_connection((host, 22), timeout=30)
        if args.nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client = paramiko.SSHClient()
        for ktype, hkey in (known.lookup(host) or {}).items():
            client.get_host_keys().add(host, ktype, hkey)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(host, username="root", pkey=key, sock=sock, look_for_keys=False, allow_agent=False)
            stdin, out, err = client.exec_command("sh -s", timeout=60)
            stdin.write(script)
            stdin.channel.shutdown_write()
            text = out.read()
            err.read()
            return host, out.channel.recv_exit_status(), b"\nscan.end=1\n" in text
        except Exception as exc:
            print(f"{host}: {exc!r}", file=sys.stderr)
            return host, -1, False
        finally:
            client.close()

    ok = 0
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        for host, rc, complete in pool.map(one, hosts):
            ok += complete
            print(f"{host}\t{rc}\t{int(complete)}")
    return 0 if ok == len(hosts) else 1


if __name__ == "__main__":
    sys.exit(main())
