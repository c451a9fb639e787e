"""The anchor clients the fleet benchmark times against ``relayguard scan``; each is a whole process.

Every anchor reads the same arguments (a file of addresses, the lab's client key and known_hosts, the
probe script, the concurrency), runs the identical probe text on every host with host keys checked
against known_hosts, and prints one line per host: ``address<TAB>rc<TAB>complete`` (complete: the
output carried the probe's ``scan.end=1`` marker).
"""

from __future__ import annotations

import argparse


def parse_args(argv: list[str] | None = None, *, nodelay: bool = False) -> argparse.Namespace:
    """The arguments every anchor takes (``--nodelay``: the paramiko anchor's Nagle switch)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--hosts", required=True, help="file: one address per line")
    parser.add_argument("--key", required=True, help="the lab's client key")
    parser.add_argument("--known-hosts", required=True)
    parser.add_argument("--script", required=True, help="the probe text")
    parser.add_argument("--concurrency", type=int, default=10)
    if nodelay:
        parser.add_argument("--nodelay", type=int, default=1)
    return parser.parse_args(argv)
