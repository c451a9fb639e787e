"""The lab's real DNS: Debian's nsd (authoritative) behind unbound (the resolver a judge is pointed at).

Three processes on the lab's loopback range, each started here and stopped by its PID:

- **nsd** on ``127.<net>.252.2:53`` serves every zone of :func:`lab.maildomains.zones`: the forward
  zones of the lab mail domains, the hosts their PTRs name, the provider's ``include:`` zone and the
  ``in-addr.arpa`` zone of the sending IPs.
  ``test.`` itself, whose delegations name every lab zone.
- **a silent peer** on ``127.<net>.252.3:53`` (UDP and TCP) reads queries and never answers; ``test.``
  delegates :data:`lab.maildomains.TIMEOUT_ZONE` to it alone, so lookups there time out for real.
- **unbound** on ``127.<net>.252.1:53`` resolves for clients, with stub zones for ``test.`` and the
  reverse zone pointing at nsd. A judge needs one resolver address (like production's), and only a
  recursive resolver follows a delegation to a peer that never answers: nsd alone can only answer.

Configuration and logs live under ``workdir``; nothing of the machine's /etc is read or changed
(both daemons get ``-c`` with our file, ``username: ""`` and ``chroot: ""``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from lab.maildomains import authoritative_address, dns_address, reverse_zone, silent_address, zones

NSD = "/usr/sbin/nsd"
UNBOUND = "/usr/sbin/unbound"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0

#: The silent peer: bound before it reports ready, then reads and drops everything until killed.
SILENT_PEER = r"""
import selectors, socket, sys
host, port = sys.argv[1], int(sys.argv[2])
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind((host, port))
tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); tcp.bind((host, port)); tcp.listen(16)
sel = selectors.DefaultSelector(); sel.register(udp, selectors.EVENT_READ); sel.register(tcp, selectors.EVENT_READ)
held = []
print("ready", flush=True)
while True:
    for key, _ in sel.select():
        if key.fileobj is udp:
            udp.recvfrom(4096)
        elif key.fileobj is tcp:
            held.append(tcp.accept()[0])  # keep the connection open, never answer
        else:
            if not key.fileobj.recv(4096):
                sel.unregister(key.fileobj); key.fileobj.close()
        for conn in held:
            sel.register(conn, selectors.EVENT_READ)
        held.clear()
"""


class DnsError(RuntimeError):
    pass


def nsd_conf(workdir: Path, net: int, zone_names: list[str]) -> str:
    lines = [
        "server:",
        f"  ip-address: {authoritative_address(net)}",
        "  port: 53",
        "  do-ip6: no",
        '  username: ""',
        '  chroot: ""',
        f'  zonesdir: "{workdir}/zones"',
        f'  pidfile: "{workdir}/nsd.pid"',
        '  database: ""',
        f'  zonelistfile: "{workdir}/zone.list"',
        f'  xfrdfile: "{workdir}/xfrd.state"',
        f'  xfrdir: "{workdir}"',
        f'  logfile: "{workdir}/nsd.log"',
        "  server-count: 1",
        "  hide-version: yes",
        "  verbosity: 1",
        "remote-control:",
        "  control-enable: no",
    ]
    for name in zone_names:
        lines += ["zone:", f"  name: {name}", f"  zonefile: {name}.zone"]
    return "\n".join(lines) + "\n"


def unbound_conf(workdir: Path, net: int) -> str:
    lines = [
        "server:",
        f"  interface: {dns_address(net)}",
        "  port: 53",
        "  do-ip6: no",
        '  username: ""',
        '  chroot: ""',
        f'  directory: "{workdir}"',
        f'  pidfile: "{workdir}/unbound.pid"',
        f'  logfile: "{workdir}/unbound.log"',
        "  use-syslog: no",
        "  verbosity: 1",
        # One line per client query: tests count them to prove the judge asks each name once per job.
        "  log-queries: yes",
        "  num-threads: 1",
        "  so-reuseport: no",
        "  access-control: 127.0.0.0/8 allow",
        # The stubs are on loopback, which unbound refuses to query unless told.
        "  do-not-query-localhost: no",
        # No DNSSEC: the lab's zones are unsigned and there is no trust anchor to fetch.
        '  module-config: "iterator"',
        # unbound answers these itself by default (RFC 6761 names, loopback reverse); the lab's
        # zones live under them.
        '  local-zone: "test." nodefault',
        '  local-zone: "127.in-addr.arpa." nodefault',
        # Our zones are tiny and change only with a restart; keep answers for the job.
        "  cache-min-ttl: 0",
        # With QNAME minimisation, about one query in ten stalled 50 to 700 ms (unbound 1.17 asking nsd
        # 4.6 on loopback); the lab is there to measure the judge, not that.
        "  qname-minimisation: no",
    ]
    # Two entry points into the lab's namespace; test.'s delegations lead to every other zone.
    for name in ("test", reverse_zone(net)):
        lines += ["stub-zone:", f'  name: "{name}"', f"  stub-addr: {authoritative_address(net)}@53"]
    lines += ["remote-control:", "  control-enable: no"]
    return "\n".join(lines) + "\n"


def _answers(address: str, port: int = 53) -> bool:
    """Whether something at ``address`` answers a DNS query over UDP (any rcode will do)."""
    query = bytes.fromhex("abcd01000001000000000000") + b"\x04test\x00\x00\x06\x00\x01"  # SOA test.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(query, (address, port))
            return sock.recv(512)[:2] == query[:2]
        except OSError:
            return False


class LabDns:
    """nsd + unbound + silent peer for the lab's mail domains on ``127.<net>.252.x``."""

    def __init__(self, workdir: Path | str, net: int, bulk: int = 0) -> None:
        self.workdir = Path(workdir)
        self.net = net
        #: Well-configured domains to serve beside the cases (``maildomains.bulk_collected``), for load.
        self.bulk = bulk
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def resolver(self) -> str:
        """The address to give a judge (its resolver setting)."""
        return dns_address(self.net)

    def start(self) -> LabDns:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        zdir = self.workdir / "zones"
        zdir.mkdir(parents=True, exist_ok=True)
        served = zones(self.net, self.bulk)
        for name, text in served.items():
            (zdir / f"{name}.zone").write_text(text)
        names = sorted(served)
        (self.workdir / "nsd.conf").write_text(nsd_conf(self.workdir, self.net, names))
        (self.workdir / "unbound.conf").write_text(unbound_conf(self.workdir, self.net))
        check = subprocess.run(["/usr/sbin/nsd-checkconf", str(self.workdir / "nsd.conf")],
                               capture_output=True, text=True, timeout=10, check=False)
        if check.returncode != 0:
            raise DnsError(f"nsd-checkconf: {check.stderr.strip()}")
        log = (self.workdir / "daemons.log").open("ab")
        with log:
            self.procs["silent"] = subprocess.Popen(
                [sys.executable, "-c", SILENT_PEER, silent_address(self.net), "53"],
                stdout=subprocess.PIPE, stderr=log,
            )
            # -d: stay in the foreground, so the PID we hold is the daemon's main process.
            self.procs["nsd"] = subprocess.Popen([NSD, "-d", "-c", str(self.workdir / "nsd.conf")],
                                                 stdout=log, stderr=log)
            self.procs["unbound"] = subprocess.Popen([UNBOUND, "-d", "-c", str(self.workdir / "unbound.conf")],
                                                     stdout=log, stderr=log)
        ready = self.procs["silent"].stdout
        if ready is None or ready.readline().strip() != b"ready":
            raise DnsError(f"silent peer did not start: {self._log_tail()}")
        deadline = time.monotonic() + START_TIMEOUT
        for name, address in (("nsd", authoritative_address(self.net)), ("unbound", self.resolver)):
            while not _answers(address):
                if self.procs[name].poll() is not None or time.monotonic() > deadline:
                    raise DnsError(f"{name} did not start on {address}:53: {self._log_tail()}")
                time.sleep(0.05)

    def _log_tail(self) -> str:
        parts = []
        for name in ("daemons.log", "nsd.log", "unbound.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(f"{name}: {path.read_text(errors='replace')[-800:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """SIGTERM each daemon by PID, wait, SIGKILL what is left; reap them all."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()
        # nsd's server children leave with their parent; its pidfile is the last trace.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.workdir / "nsd.pid")

    def __enter__(self) -> LabDns:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
