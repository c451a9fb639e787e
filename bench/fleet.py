"""Fleet scan comparison: ``relayguard scan`` against the anchors, same fleet, same probe, same run.

    sudo .venv/bin/python -m bench.fleet                          # 50 loopback hosts, 5 repetitions
    sudo .venv/bin/python -m bench.fleet --wan --hosts 200        # 50 ms RTT through the delaying relay

Every approach runs the identical probe text (RelayGuard's own ``PROBE_SCRIPT``) on every host, with
host keys checked against the lab's known_hosts where the tool allows, and is timed as a whole process
from exec to exit. Repetitions rotate the order of the approaches. Prints min/median/max wall time,
the median client CPU time, and each median's ratio to RelayGuard's; then the issue-6 targets.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import BENCH_VENV, REPO, VENV, Run, fleet, log, machine, need_root, python, run_timed, summary

ALL = ("relayguard", "paramiko-pool", "asyncssh", "parallel-ssh", "openssh", "ansible-raw", "ansible-command",
       "paramiko-sequential")
WAN_DEFAULT = ("relayguard", "paramiko-pool", "asyncssh", "parallel-ssh", "openssh", "ansible-raw",
               "ansible-command")
_RG_ROW = re.compile(r"^\S+\s+(noncompliant|compliant)\s", re.M)


@dataclass
class Approach:
    name: str
    argv: list[str]
    #: How many hosts the run's output shows as probed completely.
    count: Callable[[Run], int]
    env: dict[str, str] | None = None
    #: Clean-up after each run, outside the timing (e.g. Ansible's ControlPersist masters).
    after: Callable[[], None] | None = None
    runs: list[Run] = field(default_factory=list)


def _tsv_ok(run: Run) -> int:
    return sum(1 for line in run.stdout.splitlines() if line.endswith("\t1"))


def precompile(*trees: Path) -> None:
    """Bytecode for code that runs from a source tree (relayguard is installed editable, the anchors
    are scripts): an installed package has it, and with PYTHONDONTWRITEBYTECODE set (as on the bench
    machine) nothing would write it, so every timed run would compile these modules again."""
    subprocess.run([python(VENV), "-m", "compileall", "-q", *map(str, trees)], check=True, stdout=subprocess.DEVNULL)


def package_at(rev: str, work: Path) -> dict[str, str]:
    """The environment that runs ``relayguard`` as of ``rev`` (its package extracted with ``git archive``
    and precompiled) on the current venv, to measure a product change in the same run as the current code."""
    dest = work / f"baseline-{rev}"
    dest.mkdir()
    archive = subprocess.run(["git", "archive", rev, "layers/relayguard"], cwd=REPO, check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    precompile(dest)
    return {**os.environ, "PYTHONPATH": str(dest / "layers" / "relayguard")}


def _baseline(rev: str, lab: Any, work: Path, concurrency: int) -> Approach:
    """``relayguard scan`` from an older commit."""
    env = package_at(rev, work)
    argv = [python(VENV), "-m", "relayguard.cli", "scan", "--inventory", str(lab.inventory), "--identity",
            str(lab.client_key), "--concurrency", str(concurrency)]
    return Approach(f"relayguard@{rev}", argv, lambda r: len(_RG_ROW.findall(r.stdout)), env=env)


def installed(names: list[str], explicit: bool) -> list[str]:
    """The approaches this machine can run. Without .venv-bench only the paramiko anchors (on .venv's
    paramiko) and the OpenSSH client remain; an approach asked for by name must be there."""
    have_bench = (BENCH_VENV / "bin" / "python").exists()
    missing = {n for n in names if not have_bench and n in ("asyncssh", "parallel-ssh", "ansible-raw",
                                                               "ansible-command")}
    if "openssh" in names and shutil.which("ssh") is None:
        missing.add("openssh")
    if missing and explicit:
        raise SystemExit(f"not installed: {', '.join(sorted(missing))} (run bench/bootstrap)")
    if missing:
        log(f"  skipped, not installed (run bench/bootstrap): {', '.join(sorted(missing))}")
    return [n for n in names if n not in missing]


def _approaches(names: list[str], lab: Any, work: Path, concurrency: int) -> list[Approach]:
    from relayguard.domain.probe import PROBE_SCRIPT  # noqa: PLC0415 - the product's own renderer

    script = work / "probe.sh"
    script.write_text(PROBE_SCRIPT)
    hosts = work / "hosts.txt"
    hosts.write_text("".join(f"{h.address}\n" for h in lab))
    key, known = str(lab.client_key), str(lab.known_hosts)
    anchor = [python(BENCH_VENV if (BENCH_VENV / "bin" / "python").exists() else VENV), "-m"]
    common = ["--hosts", str(hosts), "--key", key, "--known-hosts", known, "--script", str(script)]
    made: dict[str, Approach] = {
        "relayguard": Approach("relayguard", [str(VENV / "bin" / "relayguard"), "scan", "--inventory",
                                              str(lab.inventory), "--identity", key, "--concurrency",
                                              str(concurrency)],
                               lambda r: len(_RG_ROW.findall(r.stdout))),
        "paramiko-pool": Approach("paramiko-pool", [*anchor, "bench.anchors.paramiko_pool", *common,
                                                    "--concurrency", str(concurrency)], _tsv_ok),
        "paramiko-sequential": Approach("paramiko-sequential", [*anchor, "bench.anchors.paramiko_pool", *common,
                                                                "--concurrency", "1", "--nodelay", "0"], _tsv_ok),
        "asyncssh": Approach("asyncssh", [*anchor, "bench.anchors.asyncssh_run", *common,
                                          "--concurrency", str(concurrency)], _tsv_ok),
        "parallel-ssh": Approach("parallel-ssh", [*anchor, "bench.anchors.pssh_run", *common,
                                                  "--concurrency", str(concurrency)], _tsv_ok),
        "openssh": Approach("openssh", [str(REPO / "bench" / "anchors" / "openssh_xargs.sh"), str(hosts), key, known,
                                        str(script), str(concurrency)], _tsv_ok),
    }
    for module in ("raw", "command"):
        made[f"ansible-{module}"] = _ansible(module, lab, work, concurrency, PROBE_SCRIPT)
    missing = [n for n in names if n not in made]
    if missing:
        raise SystemExit(f"unknown approach(es): {', '.join(missing)}; choose from {', '.join(ALL)}")
    return [made[n] for n in names]


def _ansible(module: str, lab: Any, work: Path, concurrency: int, probe: str) -> Approach:
    """Ansible ad-hoc with its defaults, except: strict host keys from the lab's known_hosts, the
    interpreter named (no discovery round trip), files piped (the lab's sshd has no sftp subsystem, so
    the default would try sftp and scp first), and its own state and ControlPath directories."""
    home = work / f"ansible-{module}"
    (home / "cp").mkdir(parents=True, exist_ok=True)
    inventory = home / "inventory.ini"
    inventory.write_text("[fleet]\n" + "".join(f"{h.address}\n" for h in lab))
    env = {
        **os.environ,
        "ANSIBLE_HOME": str(home), "ANSIBLE_LOCAL_TEMP": str(home / "tmp"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(home / "cp"), "ANSIBLE_CONFIG": str(home / "none.cfg"),
        "ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_PRIVATE_KEY_FILE": str(lab.client_key),
        "ANSIBLE_REMOTE_USER": "root", "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3",
        "ANSIBLE_SSH_TRANSFER_METHOD": "piped", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_RETRY_FILES_ENABLED": "False",
        "ANSIBLE_SSH_ARGS": ("-C -o ControlMaster=auto -o ControlPersist=60s -F /dev/null -o IdentitiesOnly=yes "
                             f"-o UserKnownHostsFile={lab.known_hosts} -o GlobalKnownHostsFile=/dev/null "
                             "-o StrictHostKeyChecking=yes"),
    }

    def close_masters() -> None:
        # The ControlPersist masters outlive ansible; closing them keeps the next run from reusing them.
        for sock in (home / "cp").iterdir():
            subprocess.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "unused"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=30)

    argv = [str(BENCH_VENV / "bin" / "ansible"), "all", "-i", str(inventory), "-m", module,
            "-a", "sh -c " + shlex.quote(probe), "-f", str(concurrency)]
    return Approach(f"ansible-{module}", argv,
                    lambda r: sum(1 for line in r.stdout.splitlines() if line == "scan.end=1"),
                    env=env, after=close_masters)


@contextlib.contextmanager
def wan(addresses: list[str], rtt_ms: float) -> Iterator[str]:
    """A network namespace whose only way to the fleet is the delaying relay; yields its path."""
    name = f"rg-bench-{os.getpid()}"
    path = f"/run/netns/{name}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    relay = None
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        relay = subprocess.Popen([python(VENV), "-m", "bench.relay", "--netns", path, "--delay-ms",
                                  str(rtt_ms / 2), *addresses], stdout=subprocess.PIPE, cwd=REPO)
        assert relay.stdout is not None
        if relay.stdout.readline().strip() != b"ready":
            raise SystemExit("the delaying relay did not start")
        yield path
    finally:
        if relay is not None:
            relay.terminate()
            try:
                relay.wait(timeout=10)
            except subprocess.TimeoutExpired:
                relay.kill()
                relay.wait()
        subprocess.run(["ip", "netns", "del", name], check=False)


def measure(approaches: list[Approach], hosts: int, repeat: int, netns: str | None, timeout: float) -> None:
    # A fresh host's first session pays for cold caches (its overlay, Exim's and the tools' first runs):
    # one untimed pass keeps that off whichever approach happens to go first.
    warm = approaches[0]
    run = run_timed(warm.argv, env=warm.env, netns=netns, timeout=timeout)
    if warm.after:
        warm.after()
    log(f"  warm-up ({warm.name}) {run.wall:7.2f} s")
    for rep in range(repeat):
        order = approaches[rep % len(approaches):] + approaches[: rep % len(approaches)]
        for a in order:
            run = run_timed(a.argv, env=a.env, netns=netns, timeout=timeout)
            if a.after:
                a.after()
            a.runs.append(run)
            ok = a.count(run)
            flag = "" if ok == hosts else f"  INCOMPLETE {ok}/{hosts} rc={run.rc}: {run.stderr.strip()[-300:]}"
            log(f"  rep {rep + 1}/{repeat} {a.name:20} {run.wall:7.2f} s  cpu {run.cpu:6.2f} s{flag}")


def job_times(lab: Any, concurrency: int, netns: str | None) -> dict[str, float]:
    """Per-server job time as RelayGuard records it (``duration`` of ``scan --json``), one untimed run:
    the scale model in docs/scaling.md builds on it."""
    run = run_timed([str(VENV / "bin" / "relayguard"), "scan", "--json", "--inventory", str(lab.inventory),
                     "--identity", str(lab.client_key), "--concurrency", str(concurrency)], netns=netns)
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    durations = sorted(json.loads(line)["duration"] for line in lines)
    if not durations:
        return {}
    return {"median": statistics.median(durations), "p90": durations[math.ceil(0.9 * len(durations)) - 1],
            "max": durations[-1], "record_bytes": statistics.median(len(line.encode()) for line in lines)}


def round_trips(lab: Any, work: Path, rtt_ms: float, repeat: int = 7) -> dict[str, float]:
    """One server alone through the relay at two round-trip times: the scale model's T(RTT) = T0 + k * RTT.

    The probe's own run time on a shared machine varies more than a few round trips, so each RTT
    takes the fastest of ``repeat`` jobs, and the two RTTs are far apart (RTT and 5 x RTT).
    """
    one = work / "one-server.json"
    data = json.loads(Path(lab.inventory).read_text())
    one.write_text(json.dumps({"servers": data["servers"][:1]}))
    argv = [str(VENV / "bin" / "relayguard"), "scan", "--json", "--inventory", str(one),
            "--identity", str(lab.client_key)]
    fastest = {}
    for rtt in (rtt_ms, 5 * rtt_ms):
        with wan([data["servers"][0]["host"]], rtt) as ns:
            durations = []
            for _ in range(repeat):
                run = run_timed(argv, netns=ns)
                durations += [json.loads(line)["duration"] for line in run.stdout.splitlines() if line.startswith("{")]
            fastest[rtt] = min(durations)
    k = (fastest[5 * rtt_ms] - fastest[rtt_ms]) / (4 * rtt_ms / 1000)
    return {"t_rtt": fastest[rtt_ms], "t_5rtt": fastest[5 * rtt_ms], "round_trips": k,
            "t0": fastest[rtt_ms] - k * rtt_ms / 1000}


def report(approaches: list[Approach], hosts: int, *, title: str, rg_within: float,
           command_factor: float | None) -> dict[str, Any]:
    rows = []
    for a in approaches:
        good = [r for r in a.runs if a.count(r) == hosts]
        if not good:
            rows.append({"approach": a.name, "ok": False, "runs": len(a.runs)})
            continue
        lo, med, hi = summary([r.wall for r in good])
        rows.append({"approach": a.name, "ok": len(good) == len(a.runs), "runs": len(a.runs), "complete": len(good),
                     "min": lo, "median": med, "max": hi, "cpu": summary([r.cpu for r in good])[1]})
    rg = next((r for r in rows if r["approach"] == "relayguard" and "median" in r), None)
    print(f"\n### {title}\n")
    print("| approach | min s | median s | max s | client CPU s (median) | median / RelayGuard |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        if "median" not in r:
            print(f"| {r['approach']} | failed | failed | failed | - | - |")
            continue
        ratio = f"{r['median'] / rg['median']:.2f}" if rg else "-"
        note = "" if r["ok"] else f" ({r['complete']}/{r['runs']} runs complete)"
        print(f"| {r['approach']}{note} | {r['min']:.2f} | {r['median']:.2f} | {r['max']:.2f} | {r['cpu']:.2f} "
              f"| {ratio} |")
    verdicts = []
    timed = [r for r in rows if "median" in r]
    if rg and timed:
        fastest = min(timed, key=lambda r: r["median"])
        within = rg["median"] / fastest["median"]
        verdicts.append((f"RelayGuard within {rg_within}x of the fastest ({fastest['approach']})",
                         f"{within:.2f}x", within <= rg_within))
        cmd = next((r for r in timed if r["approach"] == "ansible-command"), None)
        if command_factor and cmd:
            factor = cmd["median"] / rg["median"]
            verdicts.append((f"RelayGuard >= {command_factor:g}x faster than Ansible's command module",
                             f"{factor:.1f}x", factor >= command_factor))
    print()
    for text, value, ok in verdicts:
        print(f"- {text}: {value} -> {'meets' if ok else 'MISSES'}")
    return {"title": title, "rows": rows, "targets": [{"target": t, "value": v, "met": ok} for t, v, ok in verdicts]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=None, help="fleet size (50; 200 with --wan)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=None, help="for every approach (10; 50 with --wan)")
    parser.add_argument("--wan", action="store_true", help="through the delaying relay in a network namespace")
    parser.add_argument("--rtt-ms", type=float, default=50.0)
    parser.add_argument("--approaches", default=None, help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--net", type=int, default=251, help="lab address block 127.NET.0.0/16 (%(default)s)")
    parser.add_argument("--timeout", type=float, default=600.0, help="per-run deadline, seconds")
    parser.add_argument("--alone-repeat", type=int, default=7,
                        help="--wan: jobs per RTT of the one-server round-trip model (%(default)s)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--baseline", action="append", default=[], metavar="REV",
                        help="also time relayguard as of this git revision (repeatable)")
    args = parser.parse_args(argv)
    need_root()
    hosts = args.hosts or (200 if args.wan else 50)
    concurrency = args.concurrency or (50 if args.wan else 10)
    names = installed(args.approaches.split(",") if args.approaches else list(WAN_DEFAULT if args.wan else ALL),
                      explicit=bool(args.approaches))
    mode = f"WAN {args.rtt_ms:g} ms RTT" if args.wan else "loopback"
    title = f"{hosts} hosts, {mode}, concurrency {concurrency}, {args.repeat} repetitions"
    log(f"bench.fleet: {title}\n  machine: {machine()}")
    precompile(REPO / "layers" / "relayguard", REPO / "bench")
    with tempfile.TemporaryDirectory(prefix="rg-bench-fleet-") as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        with fleet(work / "lab", args.net, hosts) as lab:
            log(f"  fleet of {hosts} up in {time.perf_counter() - started:.1f} s")
            approaches = _approaches(names, lab, work, concurrency)
            approaches += [_baseline(rev, lab, work, concurrency) for rev in args.baseline]
            addresses = [h.address for h in lab]
            with contextlib.ExitStack() as stack:
                netns = stack.enter_context(wan(addresses, args.rtt_ms)) if args.wan else None
                measure(approaches, hosts, args.repeat, netns, args.timeout)
                per_server = job_times(lab, concurrency, netns)
            alone = round_trips(lab, work, args.rtt_ms, args.alone_repeat) if args.wan else {}
        result = report(approaches, hosts, title=title, rg_within=1.2 if args.wan else 1.15,
                        command_factor=None if args.wan else 10.0)
        if per_server:
            print(f"- per-server job time (relayguard scan --json, one untimed run): median "
                  f"{per_server['median']:.2f} s, p90 {per_server['p90']:.2f} s, max {per_server['max']:.2f} s; "
                  f"result record {per_server['record_bytes'] / 1024:.1f} KiB (median)")
            result["per_server"] = per_server
        if alone:
            print(f"- one server alone (fastest of {args.alone_repeat} jobs): {alone['t_rtt']:.2f} s at "
                  f"{args.rtt_ms:g} ms RTT, {alone['t_5rtt']:.2f} s at {5 * args.rtt_ms:g} ms: "
                  f"{alone['round_trips']:.1f} round trips per scan job, {alone['t0']:.2f} s of work "
                  "(T = T0 + k x RTT)")
            result["alone"] = alone
    print(f"\nMachine: {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), **result}, indent=1) + "\n")
    return 0 if all(r.get("ok") for r in result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
