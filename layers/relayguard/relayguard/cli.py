"""``relayguard``: audit or fix POP-before-SMTP relaying on cPanel servers from an operator's laptop.

    relayguard check HOST[:PORT]...            audit, change nothing
    relayguard fix HOST[:PORT]...              close the gate, restart Exim once, prove refusal
    relayguard scan --inventory FILE [--fix]   every server of an inventory, concurrently
        fix limits: --max-errors N|P%  --max-changes N  --canary K  --window SPEC
    relayguard revert HOST[:PORT]...           undo the last fix: POP-before-SMTP relaying on again
    relayguard inventory add HOST[:PORT]       fetch, confirm and pin a server's host keys
    relayguard redrive --queue work|urgent --stack NAME [--copy]   dead-lettered jobs back to their queue
    relayguard report --from DIR|--run RUN_ID --html FILE [--bucket B]   a run's fleet report page

Exit codes: 0 every host compliant, remediated, not cPanel or (revert) reverted; 1 exposed hosts were left as they are
(audit, skipped by a fix limit, excluded); 2 a host failed or could not be reached (2 wins over 1).
The SSH private key comes from ``--identity FILE`` or, as text, from the RELAYGUARD_SSH_KEY
environment variable; it is never printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from relayguard.adapters.ssh_keys import fetch_host_keys, host_keys_from_known_hosts
from relayguard.bootstrap import (
    bucket_run_reports,
    build_engine,
    build_operator_connector,
    dead_letter_queues,
    directory_record_store,
    directory_run_records,
    html_file,
)
from relayguard.domain.bounds import bounded_result
from relayguard.domain.collect import resolver_setting
from relayguard.domain.entry import ENTRY_PATH, ENTRY_PROGRAM, sudoers_text
from relayguard.domain.evidence import record_document
from relayguard.domain.mailreport import summary_text
from relayguard.domain.models import FAILURE_OUTCOMES, Mode, Outcome, Policy
from relayguard.domain.redrive import QUEUES, copied_text, moved_text, plan_redrive
from relayguard.domain.revert import before_from_results
from relayguard.domain.rollout import ErrorBudget, MaintenanceWindow, Rollout, excluded
from relayguard.domain.server import Server
from relayguard.domain.signals import signal_metrics, signals_text
from relayguard.engine import Engine, ServerResult
from relayguard.enroll import AddRequest, add_server
from relayguard.errors import InvalidInput, RelayGuardError
from relayguard.fleet import LocalGate
from relayguard.fleet_key import EnrollRequest, enroll
from relayguard.inventory import load_inventory
from relayguard.ports import DeadLetterQueues

ENV_SSH_KEY = "RELAYGUARD_SSH_KEY"  # private key text (e.g. from a secret store); default: unset
#: SSH jobs at once, for scan, check and fix alike: a long host list must not open a connection per host.
DEFAULT_CONCURRENCY = 10
#: Added to every result of a fix run that the maintenance window turned into an audit.
OUTSIDE_WINDOW = "outside-maintenance-window"
REVERT_WARNING = ("WARNING: revert turns POP-before-SMTP back on. After it, anyone who shares an address with a "
                  "POP/IMAP user (NAT, hotspot, VPN exit) can relay mail through the server WITHOUT SMTP AUTH. "
                  "The next fix sweep or alert closes it again unless the server is excluded from fixing.")


@dataclass(frozen=True)
class Options:
    command: str
    hosts: tuple[str, ...]
    inventory: str | None
    fix: bool
    concurrency: int
    user: str
    identity: str | None
    known_hosts: str
    sudo: bool
    json: bool
    timeout: float
    disable_tracker: bool
    max_errors: ErrorBudget | None = None
    max_changes: int | None = None
    canary: int = 0
    window: MaintenanceWindow | None = None
    resolver: str = ""

    @property
    def policy(self) -> Policy:
        mode = Mode.FIX if self.command == "fix" or (self.command == "scan" and self.fix) else Mode.AUDIT
        return Policy(mode=mode, disable_tracker=self.disable_tracker)

    @property
    def rollout(self) -> Rollout:
        return Rollout(max_changes=self.max_changes, max_errors=self.max_errors, canary=self.canary)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--user", default="root", help="SSH login (default: %(default)s)")
    common.add_argument("--identity", metavar="FILE", help=f"private key file (or set {ENV_SSH_KEY})")
    common.add_argument("--known-hosts", metavar="FILE", default=str(Path.home() / ".ssh" / "known_hosts"),
                        help="pinned host keys (default: %(default)s); unknown hosts are refused")
    common.add_argument("--sudo", action="store_true", help="log in as a non-root user and run via 'sudo -n'")
    common.add_argument("--json", action="store_true", help="one JSON object per host per line")
    common.add_argument("--timeout", type=float, default=60.0, help="per-command deadline, seconds")
    common.add_argument("--resolver", type=_resolver, default="", metavar="IP[:PORT]|off",
                        help="DNS resolver that judges the servers' mail domains (SPF, DKIM, DMARC, PTR); "
                             "'off' records the domains unjudged (default: this machine's resolver)")
    common.add_argument("--disable-tracker", action="store_true",
                        help="modern cPanel: also disable RecentAuthedMailIpTracker (see docs)")
    common.add_argument("--record-dir", metavar="DIR",
                        help="write each host's whole record to DIR/<run>/<host>/<time>-<job>.json, once, never "
                             "overwritten (--json lines and the table are bounded; the record is not)")
    parser = argparse.ArgumentParser(prog="relayguard", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.splitlines()[2:]))
    common.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, metavar="N",
                        help="servers worked on at once (default: %(default)s)")
    limits = argparse.ArgumentParser(add_help=False)
    group = limits.add_argument_group("fix limits (docs/operations.md, Rolling out fix mode)")
    group.add_argument("--max-errors", type=_budget, metavar="N|P%",
                       help="start no fix after N failed fixes (or P%% of the servers); the rest are skipped")
    group.add_argument("--max-changes", type=_count, metavar="N", help="change at most N servers; the rest are skipped")
    group.add_argument("--canary", type=_count, default=0, metavar="K",
                       help="fix and verify the first K exposed servers before any other; one failure stops the run")
    group.add_argument("--window", type=_window, metavar="SPEC",
                       help="maintenance window, e.g. 'sat,sun 01:00-05:00 Europe/Berlin'; outside it, only audit")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", parents=[common], help="audit hosts, change nothing")
    p.add_argument("hosts", nargs="+", metavar="HOST[:PORT]")
    p = sub.add_parser("fix", parents=[common, limits], help="remediate hosts")
    p.add_argument("hosts", nargs="+", metavar="HOST[:PORT]")
    revert = sub.add_parser("revert", parents=[common], help="undo the last fix: relaying without AUTH again",
                            description=REVERT_WARNING)
    revert.add_argument("hosts", nargs="+", metavar="HOST[:PORT]")
    revert.add_argument("--record", metavar="FILE",
                        help="saved --json result lines of the fix (default: the record the fix left on the server)")
    scan = sub.add_parser("scan", parents=[common, limits], help="audit (or --fix) every server of an inventory")
    scan.add_argument("--inventory", required=True, metavar="FILE")
    scan.add_argument("--fix", action="store_true")
    inventory = sub.add_parser("inventory", help="edit an inventory file")
    inventory_sub = inventory.add_subparsers(dest="action", required=True)
    add = inventory_sub.add_parser(
        "add", help="fetch a server's host keys, confirm their fingerprints, pin them in the inventory",
        description="Fetch the host keys HOST offers (key exchange only, no login), show their SHA256 "
                    "fingerprints and pin them once confirmed: by --fingerprint, or by answering on a terminal. "
                    "Without a terminal and without --fingerprint nothing is written.")
    add.add_argument("host", metavar="HOST[:PORT]")
    add.add_argument("--fingerprint", action="append", default=[], metavar="SHA256:...",
                     help="the fingerprint verified out of band (repeatable); only matching keys are pinned")
    add.add_argument("--inventory", default="inventory.json", metavar="FILE",
                     help="inventory to create or update, JSON or YAML (default: %(default)s)")
    add.add_argument("--name", help="entry name (default: an entry with the same host, else HOST)")
    add.add_argument("--user", default=None, help="SSH login for this server (default: leave as is)")
    add.add_argument("--alias", action="append", default=[], metavar="NAME",
                     help="another name, public IP or instance id alerts may use (repeatable)")
    add.add_argument("--tag", action="append", default=[], metavar="TAG", help="a tag (repeatable)")
    add.add_argument("--timeout", type=float, default=15.0, help="connect and key exchange deadline, seconds")
    redrive = sub.add_parser(
        "redrive", help="move dead-lettered jobs back to their queue, once their cause is fixed",
        description="Move the jobs of a job queue's dead-letter queue back to that queue with SQS's message "
                    "move task (or --copy: receive, send, delete), finding both queues in the stack's outputs. "
                    "AWS region and credentials come from the usual AWS environment and profile.")
    redrive.add_argument("--queue", required=True, choices=sorted(QUEUES), help="which job queue")
    redrive.add_argument("--stack", required=True, metavar="NAME", help="the RelayGuard stack's name")
    redrive.add_argument("--copy", action="store_true",
                         help="copy message by message instead of StartMessageMoveTask (an SQS without it)")
    redrive.add_argument("--max-messages", type=_count, metavar="N", help="--copy only: copy at most N jobs")
    _report_parser(sub)
    _enroll_parser(sub)
    return parser


def fleet_report(ns: argparse.Namespace) -> int:
    """``relayguard report``: 0 when the page is written, 2 when the records could not be read or it not written."""
    if bool(ns.source) == bool(ns.bucket) or (ns.bucket and not ns.run):
        print("relayguard report: give --from DIR, or --run RUN_ID with --bucket BUCKET", file=sys.stderr)
        return 2
    from relayguard.services import write_report  # noqa: PLC0415 - deferred: pydantic, only for this command

    try:
        records = directory_run_records(ns.source) if ns.source else bucket_run_reports(ns.bucket)
        where = write_report(records, html_file(ns.html), ns.run,
                             generated_at=datetime.now(UTC).isoformat(timespec="seconds"), title=ns.title)
    except RelayGuardError as exc:
        print(f"relayguard report: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:  # boto3 is not among the CLI's own dependencies
        print(f"relayguard report: --bucket needs {exc.name} (pip install boto3)", file=sys.stderr)
        return 2
    print(where)
    return 0


def _report_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report", help="render a run's fleet report page (HTML) from its records",
        description="Render one self-contained HTML page of a run's job records: summary counts, a chart of "
                    "outcomes, every server's outcome, failures first, filterable and sortable in the browser. "
                    "Records come from a --record-dir (--from DIR, all of it or one --run of it) or from the "
                    "stack's records bucket (--run RUN_ID --bucket BUCKET, read with your AWS credentials).")
    report.add_argument("--from", dest="source", metavar="DIR", help="a --record-dir, or one run's folder of it")
    report.add_argument("--run", metavar="RUN_ID", help="the run to report (required with --bucket)")
    report.add_argument("--bucket", metavar="BUCKET", help="the stack's records bucket (output RecordsBucketName)")
    report.add_argument("--html", required=True, metavar="FILE", help="the page to write (replaced if it exists)")
    report.add_argument("--title", default="", help="the page's title (default: names the run)")


def _enroll_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    enroll_p = sub.add_parser(
        "enroll", help="install the entry program and the restricted fleet key on servers (docs/security.md)",
        description="With the operator's own key (--identity), install on each server the entry program "
                    f"({ENTRY_PATH}), with --sudo a sudoers drop-in allowing only it, and the fleet key's "
                    "authorized_keys line restrict,command=...,from=...; --revoke removes the fleet key instead. "
                    "Changes only what differs; a second run says nothing changed.")
    enroll_p.add_argument("hosts", nargs="*", metavar="HOST[:PORT]")
    enroll_p.add_argument("--identity", metavar="FILE", help="the operator's private key file (not the fleet key)")
    enroll_p.add_argument("--known-hosts", metavar="FILE", default=str(Path.home() / ".ssh" / "known_hosts"),
                          help="pinned host keys (default: %(default)s); unknown hosts are refused")
    enroll_p.add_argument("--fleet-key", required=True, metavar="PUBKEY_FILE", help="the fleet key's public key file")
    enroll_p.add_argument("--user", default="root", help="the login of the operator and the fleet key (default: root)")
    enroll_p.add_argument("--sudo", action="store_true",
                          help="non-root login: run through 'sudo -n', and let the user run only the entry program")
    enroll_p.add_argument("--from", dest="cidrs", action="append", default=[], metavar="CIDR",
                          help="the only source addresses the fleet key may log in from (repeatable)")
    enroll_p.add_argument("--revoke", action="store_true", help="remove the fleet key's line instead")
    enroll_p.add_argument("--dry-run", action="store_true", help="report what would change, write nothing")
    enroll_p.add_argument("--print", dest="print_what", choices=("line", "program", "sudoers"),
                          help="print the authorized_keys line, the program or the sudoers drop-in; connect nowhere")
    enroll_p.add_argument("--timeout", type=float, default=60.0, help="per-server deadline, seconds")


def _budget(text: str) -> ErrorBudget:
    try:
        return ErrorBudget.parse(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _window(text: str) -> MaintenanceWindow:
    try:
        return MaintenanceWindow.parse(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _resolver(text: str) -> str:
    try:
        return resolver_setting(text)
    except InvalidInput as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 0 or more")
    return int(text)


def parse_options(argv: Sequence[str] | None) -> Options:
    parser = _parser()
    ns = parser.parse_args(argv)
    if getattr(ns, "concurrency", 1) < 1:
        parser.error("--concurrency must be at least 1")
    limited = [flag for flag, value in (("--max-errors", getattr(ns, "max_errors", None)),
                                        ("--max-changes", getattr(ns, "max_changes", None)),
                                        ("--canary", getattr(ns, "canary", 0) or None),
                                        ("--window", getattr(ns, "window", None))) if value is not None]
    if ns.command == "scan" and not ns.fix and limited:
        # An operator who adds limits means to fix; auditing instead would look like a fix that did nothing.
        parser.error(f"{', '.join(limited)} limit fixing: add --fix")
    return Options(
        command=ns.command,
        hosts=tuple(getattr(ns, "hosts", ()) or ()),
        inventory=getattr(ns, "inventory", None),
        fix=getattr(ns, "fix", False),
        concurrency=getattr(ns, "concurrency", DEFAULT_CONCURRENCY),
        user=ns.user,
        identity=ns.identity,
        known_hosts=ns.known_hosts,
        sudo=ns.sudo,
        json=ns.json,
        timeout=ns.timeout,
        disable_tracker=ns.disable_tracker,
        max_errors=getattr(ns, "max_errors", None),
        max_changes=getattr(ns, "max_changes", None),
        canary=getattr(ns, "canary", 0),
        window=getattr(ns, "window", None),
        resolver=getattr(ns, "resolver", ""),
    )


def split_host(spec: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address."""
    if spec.startswith("["):
        host, _, rest = spec[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 22
    if spec.count(":") == 1:
        host, port = spec.split(":")
        return host, int(port)
    return spec, 22


def targets_from(opts: Options) -> list[Server]:
    known_hosts = Path(opts.known_hosts)

    def pinned(host: str, port: int) -> tuple[str, ...]:
        return host_keys_from_known_hosts(str(known_hosts), host, port) if known_hosts.exists() else ()

    if opts.inventory:
        # An inventory entry's own user, port and pinned keys override the command-line defaults.
        inv = load_inventory(opts.inventory, fallback={"user": opts.user})
        return [replace(s, host_keys=s.host_keys or pinned(s.host, s.port)) for s in inv.servers]
    targets = []
    for spec in opts.hosts:
        host, port = split_host(spec)
        targets.append(Server(name=spec, host=host, port=port, user=opts.user, host_keys=pinned(host, port)))
    return targets


def policy_at(opts: Options, now: datetime) -> tuple[Policy, str]:
    """The run's policy at ``now``, and the warning for every result when the maintenance window turned
    a fix into an audit ("" otherwise)."""
    policy = opts.policy
    if policy.mode == Mode.FIX and opts.window is not None and not opts.window.open_at(now):
        return replace(policy, mode=Mode.AUDIT), OUTSIDE_WINDOW
    return policy, ""


def run_fleet(engine: Engine, targets: Iterable[Server], policy: Policy, concurrency: int, *,
              progress: TextIO | None = None, gate: LocalGate | None = None) -> list[ServerResult]:
    """Run every target, ``concurrency`` at a time; one server's failure never hides another's result.

    A target whose inventory tags exclude it is probed and reported, never changed. ``gate`` holds
    the run's fix limits; jobs are started in the given order, which the canary relies on."""
    targets = list(targets)
    results: list[ServerResult] = []

    def job(target: Server) -> ServerResult:
        try:
            return engine.run(target, replace(policy, excluded=excluded(target.tags)), gate=gate)
        finally:
            if gate is not None:
                gate.job_ended(target)

    # The pool takes jobs first in, first out, so every server before a waiting one has a thread.
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(targets) or 1))) as pool:
        futures = {pool.submit(job, t): t for t in targets}
        for done, fut in enumerate(as_completed(futures), 1):
            target = futures[fut]
            try:
                res = fut.result()
            except Exception as exc:
                res = ServerResult(name=target.name, address=target.host, mode=str(policy.mode),
                                   outcome=Outcome.FAILED, reason=f"internal error: {exc.__class__.__name__}")
            results.append(res)
            if progress is not None and len(targets) > 1:
                print(f"[{done}/{len(targets)}] {res.name}: {res.outcome}", file=progress, flush=True)
    order = {t.name: i for i, t in enumerate(targets)}
    return sorted(results, key=lambda r: order.get(r.name, 0))


def exit_code(results: Iterable[ServerResult]) -> int:
    code = 0
    for r in results:
        if r.outcome in (Outcome.NONCOMPLIANT, Outcome.SKIPPED) or (r.outcome == Outcome.EXCLUDED and r.exposed_after):
            code = max(code, 1)  # exposure found and left as it is
        elif r.outcome in FAILURE_OUTCOMES:
            code = 2
    return code


def run_summary(gate: LocalGate, results: Iterable[ServerResult]) -> str:
    """One line for stderr when fix limits left exposed servers unfixed, else ""."""
    skipped = sum(1 for r in results if r.outcome == Outcome.SKIPPED)
    if not skipped:
        return ""
    tally, rollout = gate.tally, gate.rollout
    changed = f"{tally.started} changed, {tally.failed} failed, {skipped} skipped"
    reason = gate.stop_reason()
    if reason == "error-budget" and rollout.max_errors is not None:
        return f"relayguard: run stopped: --max-errors {rollout.max_errors} reached ({changed})"
    if reason == "canary-failed":
        return f"relayguard: run stopped: a canary fix failed (--canary {rollout.canary}; {changed})"
    return f"relayguard: --max-changes {rollout.max_changes} reached ({changed})"


def render_table(results: list[ServerResult]) -> str:
    rows = [("HOST", "OUTCOME", "GEN", "EXPOSED", "RESTARTED", "DETAIL")]
    for r in results:
        exposed = "-" if r.exposed_before is None else (
            f"{'yes' if r.exposed_before else 'no'}→{'yes' if r.exposed_after else 'no'}"
            if r.exposed_after is not None else ("yes" if r.exposed_before else "no"))
        detail = r.reason or ", ".join(r.warnings)
        if r.affected_mailboxes:
            detail = (detail + "; " if detail else "") + f"mailboxes: {', '.join(r.affected_mailboxes)}"
        rows.append((r.name, str(r.outcome), r.generation or "-", exposed,
                     "yes" if r.restarted else "no", detail))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5] for row in rows]
    # The plan and the spam signals go on indented lines under their host: a column would not fit.
    out = lines[:1]
    for r, line in zip(results, lines[1:], strict=True):
        out.append(line)
        if r.plan:
            out.append(f"  plan: {'; '.join(r.plan)}")
        if r.signals and signal_metrics(r.signals):
            out.append(f"  signals: {signals_text(r.signals)}")
        if r.deliverability:
            out.append(f"  mail: {summary_text(r.deliverability['summary'])}")
    return "\n".join(out)


def inventory_add(ns: argparse.Namespace) -> int:
    try:
        host, port = split_host(ns.host)
    except ValueError:
        print(f"relayguard: {ns.host!r} is not HOST or HOST:PORT", file=sys.stderr)
        return 2
    request = AddRequest(host=host, port=port, inventory=Path(ns.inventory), name=ns.name, user=ns.user,
                         aliases=tuple(ns.alias), tags=tuple(ns.tag), fingerprints=tuple(ns.fingerprint),
                         timeout=ns.timeout)
    return add_server(request, fetch_host_keys, sys.stdin, sys.stdout, sys.stderr)


def enroll_hosts(ns: argparse.Namespace) -> int:
    try:
        request = EnrollRequest(fleet_key=Path(ns.fleet_key).read_text(), user=ns.user, sudo=ns.sudo,
                                cidrs=tuple(ns.cidrs), revoke=ns.revoke, dry_run=ns.dry_run, timeout=ns.timeout)
        if ns.print_what:
            texts = {"program": ENTRY_PROGRAM, "sudoers": sudoers_text(ns.user) if ns.print_what == "sudoers" else ""}
            print(request.line() if ns.print_what == "line" else texts[ns.print_what].rstrip("\n"))
            return 0
        if not ns.hosts or not ns.identity:
            print("relayguard: enroll needs HOST[:PORT]... and --identity (or --print)", file=sys.stderr)
            return 2
        request.script()  # every value validated before any connection
        known_hosts = Path(ns.known_hosts)
        targets = []
        for spec in ns.hosts:
            host, port = split_host(spec)
            pins = host_keys_from_known_hosts(str(known_hosts), host, port) if known_hosts.exists() else ()
            targets.append(Server(name=spec, host=host, port=port, user=ns.user, host_keys=pins))
        connector = build_operator_connector(key_path=ns.identity, sudo=ns.sudo, timeout=ns.timeout)
    except (OSError, ValueError, RelayGuardError) as exc:
        print(f"relayguard: {exc}", file=sys.stderr)
        return 2
    if ns.dry_run:
        print(f"relayguard: dry run, nothing is written. The authorized_keys line:\n{request.line()}", file=sys.stderr)
    return enroll(targets, request, connector, sys.stdout, sys.stderr)


def revert_hosts(engine: Engine, targets: Sequence[Server], record_lines: Sequence[str] | None) -> list[ServerResult]:
    """Revert each target in turn (a deliberate, rare act: no concurrency); a target missing from the
    ``--record`` lines fails rather than falling back to the server's own record."""
    results = []
    for target in targets:
        if record_lines is None:
            results.append(engine.revert(target))
            continue
        before = before_from_results(record_lines, target.name, target.host)
        if before is None:
            results.append(ServerResult(name=target.name, address=target.host, mode="revert",
                                        outcome=Outcome.FAILED, reason="no-revert-record: not in --record"))
        else:
            results.append(engine.revert(target, before))
    return results


def _run(opts: Options, engine: Engine, targets: list[Server]) -> list[ServerResult]:
    """check, fix or scan: the fleet under the run's rollout limits and maintenance window."""
    policy, warning = policy_at(opts, datetime.now(UTC))
    if warning:
        print("relayguard: outside the --window maintenance window: auditing only, nothing is changed",
              file=sys.stderr)
    gate = LocalGate(opts.rollout, targets) if policy.mode == Mode.FIX else None
    results = run_fleet(engine, targets, policy, opts.concurrency, progress=None if opts.json else sys.stderr,
                        gate=gate)
    if warning:
        for r in results:
            r.warnings.append(warning)
    summary = run_summary(gate, results) if gate is not None else ""
    if summary:
        print(summary, file=sys.stderr)
    return results


def cli_run_id(now: datetime) -> str:
    """This invocation's run, naming its folder under ``--record-dir``."""
    return f"cli-{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:8]}"


def write_records(record_dir: str, results: Sequence[ServerResult], run_id: str, written: dict[str, str]) -> None:
    """Each result's whole record, one new file per host (``O_EXCL``), noted in ``written`` (host → file)
    as it is written."""
    store = directory_record_store(record_dir)
    for r in results:
        document = record_document(r.to_json(), run_id=run_id, job_id=uuid.uuid4().hex, trigger="cli",
                                   recorded_at=datetime.now(UTC).isoformat(timespec="microseconds"))
        written[r.name] = store.put(document)


def redrive(ns: argparse.Namespace, queues: DeadLetterQueues | None) -> int:
    """``relayguard redrive``: 0 when the move started (or the copy finished), 2 on any error. ``queues``:
    the stack's queues (None: on AWS, through the composition root)."""
    try:
        queues = queues or dead_letter_queues()
        plan = plan_redrive(ns.queue, queues.stack_outputs(ns.stack))
        if ns.copy:
            print(copied_text(plan, copied=queues.copy(plan.dead_letter_url, plan.destination_url, ns.max_messages)),
                  end="")
        else:
            waiting = queues.waiting(plan.dead_letter_url)
            task, source_arn = queues.start_move(plan.dead_letter_url, plan.destination_url)
            print(moved_text(plan, waiting=waiting, task=task, source_arn=source_arn), end="")
    except RelayGuardError as exc:
        print(f"relayguard: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    ns = parser.parse_args(argv)
    commands = {"inventory": inventory_add, "enroll": enroll_hosts, "report": fleet_report}
    if ns.command in commands:
        return commands[ns.command](ns)
    if ns.command == "redrive":
        if ns.max_messages is not None and not ns.copy:
            parser.error("--max-messages limits --copy; a move task moves every job")
        return redrive(ns, None)
    if ns.command == "revert":
        print(REVERT_WARNING, file=sys.stderr)
    opts = parse_options(argv)
    try:
        targets = targets_from(opts)
        engine = build_engine(key_path=opts.identity, key_text=None if opts.identity else os.environ.get(ENV_SSH_KEY),
                              sudo=opts.sudo, timeout=opts.timeout, resolver=opts.resolver)
    except RelayGuardError as exc:
        print(f"relayguard: {exc}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"relayguard: {exc}", file=sys.stderr)
        return 2
    if ns.command == "revert":
        try:
            lines = Path(ns.record).read_text().splitlines() if ns.record else None
            results = revert_hosts(engine, targets, lines)
        except (OSError, RelayGuardError) as exc:
            print(f"relayguard: {exc}", file=sys.stderr)
            return 2
    else:
        results = _run(opts, engine, targets)
    return report(results, as_json=opts.json, record_dir=ns.record_dir)


def report(results: Sequence[ServerResult], *, as_json: bool, record_dir: str | None) -> int:
    """Write each result's record under ``record_dir`` (if given), print the results, and return the exit
    code: 2 if a record could not be written, whatever the results."""
    records: dict[str, str] = {}
    unrecorded = False
    if record_dir:
        try:
            write_records(record_dir, results, cli_run_id(datetime.now(UTC)), records)
        except RelayGuardError as exc:
            # The results are still printed; the missing evidence makes the run fail.
            print(f"relayguard: --record-dir: {exc}", file=sys.stderr)
            unrecorded = True
    if as_json:
        for r in results:
            # The bounded view (domain.bounds): long step output and mailbox lists are cut, marked and counted.
            print(json.dumps(bounded_result(r.to_json(), records.get(r.name))))
    else:
        print(render_table(list(results)))
    return 2 if unrecorded else exit_code(results)


if __name__ == "__main__":
    sys.exit(main())
