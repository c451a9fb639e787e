"""``relayguard enroll``: put the restricted fleet key on servers with the operator's own key (issue 21).

On each server one script (domain.entry.render_enroll) installs the entry program, with ``--sudo`` the
sudoers drop-in, and the fleet key's ``authorized_keys`` line ``restrict,command="…",from="…"``; with
``--revoke`` it removes the key instead. It changes only what differs, so a second run reports that
nothing changed; ``--dry-run`` reports what would change and writes nothing. The operator's key uses
the unrestricted path (``sh -s``, or ``sudo -n sh -s``) once; the fleet key never can.

Exit codes: 0 every server enrolled (or already was), 2 any server failed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TextIO

from relayguard.domain.entry import authorized_keys_line, render_enroll
from relayguard.domain.probe import parse_kv
from relayguard.domain.server import Server
from relayguard.errors import RelayGuardError
from relayguard.ports import CommandResult

FAILED = 2
_UNCHANGED = {"unchanged", "absent"}


class ScriptSession(Protocol):
    """An operator's session: runs a whole script with ``sh -s`` (adapters.ssh.ParamikoSession.run_script)."""

    def run_script(self, script: str, timeout: float) -> CommandResult: ...

    def close(self) -> None: ...


class ScriptConnector(Protocol):
    def connect(self, target: Server) -> ScriptSession: ...


@dataclass(frozen=True)
class EnrollRequest:
    fleet_key: str  # the public key line
    user: str = "root"
    sudo: bool = False
    cidrs: tuple[str, ...] = ()
    revoke: bool = False
    dry_run: bool = False
    timeout: float = 60.0

    def line(self) -> str:
        return authorized_keys_line(self.fleet_key, self.cidrs, sudo=self.sudo)

    def script(self) -> str:
        return render_enroll(self.user, self.line(), sudo=self.sudo, revoke=self.revoke, dry_run=self.dry_run)


def enroll(targets: Sequence[Server], request: EnrollRequest, connector: ScriptConnector, out: TextIO,
           err: TextIO) -> int:
    """Enroll (or revoke) each target in turn and print one line per server; 2 if any failed."""
    script = request.script()  # validated once, before any connection
    failed = False
    for target in targets:
        try:
            changes = _enroll_one(target, script, connector, request.timeout)
        except RelayGuardError as exc:
            print(f"{target.name}: failed: {exc}", file=err)
            failed = True
            continue
        changed = {what: how for what, how in changes.items() if how not in _UNCHANGED}
        if not changed:
            print(f"{target.name}: nothing changed ({', '.join(f'{w} {h}' for w, h in changes.items())})", file=out)
        else:
            print(f"{target.name}: {', '.join(f'{w} {h}' for w, h in changes.items())}", file=out)
    return FAILED if failed else 0


def _enroll_one(target: Server, script: str, connector: ScriptConnector, timeout: float) -> dict[str, str]:
    session = connector.connect(target)
    try:
        res = session.run_script(script, timeout)
    finally:
        session.close()
    kv = parse_kv(res.stdout)
    if kv.get("enroll.error"):
        raise RelayGuardError(f"{kv['enroll.error']} (rc={res.rc}) {res.stderr.strip()[:200]}".strip())
    if res.rc != 0 or kv.get("enroll.end") != "1":
        raise RelayGuardError(f"the enrolment script stopped (rc={res.rc}) {res.stderr.strip()[:200]}".strip())
    return {what: kv[f"enroll.{what}"] for what in ("program", "sudoers", "key") if f"enroll.{what}" in kv}
