"""Simulated cPanel command-line tools for RelayGuard's lab hosts (cpanel.md §2, §3, §4 and §9).

Runs only inside a lab host: a mount+PID namespace chrooted onto an overlay of ``/``. Every path
below is the real absolute path inside that host. ``main`` and ``boot`` refuse to run (exit 70)
unless ``/etc/sim/host.json`` exists, so the tools can never touch the machine's own root.

Entry points (the launcher installs one tiny script per tool that calls ``main("<tool>")``):

* ``tailwatchd`` (``libexec/tailwatchd`` modern, ``bin/tailwatchd`` legacy), ``whmapi1``,
  ``restartsrv_exim``, ``restartsrv_tailwatchd``, ``update_exim_rejects``, ``smtpmailgidonly``,
  ``exim`` (``/usr/sbin/exim``: journals, then execs the real ``/usr/sbin/exim4``).
* ``boot()`` runs once per host start (not journaled): starts the dummy tailwatchd daemon, takes
  the driver snapshot and runs the repopulation hook.
* ``eximrejects_text(on)`` is the ``/etc/eximrejects`` text, for seeding.

Journal protocol. Each invocation connects an ``AF_UNIX``/``SOCK_STREAM`` socket to the abstract
address ``"\\0" + host.json["journal_socket"]``, sends ONE JSON object terminated by ``\\n`` and
waits up to 2 s for the reply line ``ok\\n``; one connection per record. Record keys: ``tool``,
``path`` (``sys.argv[0]``), ``argv`` (full, path included), ``uid``, ``euid``, ``pid``, ``rc`` (int or
null), ``start`` (epoch float), ``end`` (epoch float or null) and ``phase``:
``"start"`` (only before a ``slow_*``/``hang`` sleep; rc and end null), ``"end"`` (the command
finished; rc set, 128+signum when killed by SIGTERM/SIGHUP/SIGINT) or ``"exec"`` (the ``exim``
wrapper, just before ``execv``; rc and end null). ``pid`` pairs a start record with its end.
An unreachable socket only prints a warning on stderr.

Failure switches: flag files ``/etc/sim/fail/<name>`` (content is an optional value).

* ``slow_<tool>`` (seconds, float; empty means 30) / ``hang`` (3600 s, every tool but ``exim``):
  sleep before doing the work, after journaling a start record.
* ``stale_repopulate``: enables the tracker repopulation hook (below).
* ``whmapi_fail``: ``set_tweaksetting`` answers ``result=0`` and changes nothing.
* ``exim_restart_fail_once`` / ``exim_restart_fail``: the first restart ever (remembered in
  ``/var/lib/cpanel-sim/exim_restart_failed_once``) / every restart stops Exim, does not start it,
  and exits 1 with the "failed to restart" text. ``--start`` is not affected.
* ``tailwatchd_globally_disabled``: treated like ``skiptailwatchd=1``.
* ``tailwatchd_not_running``: ``boot()`` does not start the daemon.
* ``exim_bad_config``: ``exim ... -bV`` prints a configuration error and exits 1 (no exec).
* ``tweak_breaks_auth``: the gate change (``set_tweaksetting key=popbeforesmtp``, or tailwatchd
  ``--disable`` of Antirelayd on legacy) also rewrites ``/etc/exim.conf`` the way a configuration
  rebuild that lost cPanel's authenticators would: AUTH is no longer advertised and the
  ``accept authenticated = *`` ACL line is gone, so authenticated submission breaks.
* ``no_tailwatchd``, ``nonroot``, ``exim_down_at_start``, ``no_timeout``: handled by the launcher.

Repopulation hook (start of every ``main()``, end of ``boot()``; root only). When
``stale_repopulate`` exists, the dummy daemon is running and the tracking driver
(``RecentAuthedMailIpTracker`` if its module exists, else ``Antirelayd``) was active in the
snapshot taken when that daemon started, the list is rebuilt from ``/etc/sim/seed_ips`` (``IP`` or
``IP: user1, user2``) plus the IPs of ``/etc/alwaysrelay``: modern ``/etc/recent_authed_mail_ips``
(+``_users``: ``ip: u1, u2``), legacy ``/etc/relayhosts`` (+``relayhostsusers``: ``ip user``). Users
come from ``seed_ips`` only. A file is rewritten (temp file + rename beside the symlink's target,
0644) only when its content differs.

Files read: ``/etc/sim/host.json``, ``/etc/sim/seed_ips``, ``/etc/sim/fail/*``,
``/var/cpanel/cpanel.config``, ``/usr/local/cpanel/version``, ``/usr/local/cpanel/Cpanel/TailWatch/*.pm``,
``/etc/<driver>{disable,isevil}``, ``/etc/tailwatchd{disable,isevil}``, ``/etc/alwaysrelay``,
``/etc/chkserv.d/chkservd.conf``, ``/etc/eximdisable``, ``/var/spool/exim/exim-daemon.pid``.
Files written: ``/var/cpanel/cpanel.config`` (one key line, temp file + rename), ``/etc/popbeforesmtp``,
``/etc/eximrejects``, ``/etc/recent_authed_mail_ips[_users]``, ``/etc/relayhosts[users]`` (legacy),
``/var/cpanel/smtpgidonlytweak``, ``/var/run/tailwatchd.pid``, ``/opt/cpanel-sim/bin/tailwatchd``
(symlink to ``/bin/sleep``, so the dummy daemon's comm is ``tailwatchd``),
``/var/lib/cpanel-sim/tailwatchd_snapshot.json`` (``{"pid": n|null, "taken": epoch, "active": [names]}``)
and ``/var/lib/cpanel-sim/exim_restart_failed_once``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

HOST_JSON = "/etc/sim/host.json"
FAIL_DIR = "/etc/sim/fail"
SEED_IPS = "/etc/sim/seed_ips"
SIM_DIR = "/opt/cpanel-sim"
STATE_DIR = "/var/lib/cpanel-sim"
SNAPSHOT = f"{STATE_DIR}/tailwatchd_snapshot.json"
EXIM_FAILED_ONCE = f"{STATE_DIR}/exim_restart_failed_once"

CPANEL_CONFIG = "/var/cpanel/cpanel.config"
CPANEL_VERSION = "/usr/local/cpanel/version"
DRIVER_DIR = "/usr/local/cpanel/Cpanel/TailWatch"
DRIVER_PREFIX = "Cpanel::TailWatch::"
TW_PIDFILE = "/var/run/tailwatchd.pid"
TW_BIN = f"{SIM_DIR}/bin/tailwatchd"
TW_LOG = "/usr/local/cpanel/logs/tailwatchd_log"
MODERN_TRACKER = "RecentAuthedMailIpTracker"
LEGACY_TRACKER = "Antirelayd"

POPBEFORESMTP = "/etc/popbeforesmtp"
EXIMREJECTS = "/etc/eximrejects"
ALWAYSRELAY = "/etc/alwaysrelay"
RECENT_IPS = "/etc/recent_authed_mail_ips"
RECENT_USERS = "/etc/recent_authed_mail_ips_users"
RELAYHOSTS = "/etc/relayhosts"
RELAYHOSTSUSERS = "/etc/relayhostsusers"
SMTPGIDONLY = "/var/cpanel/smtpgidonlytweak"
CHKSERVD_CONF = "/etc/chkserv.d/chkservd.conf"

EXIM_REAL = "/usr/sbin/exim4"
EXIM_CONF = "/etc/exim.conf"
EXIM_PIDFILE = "/var/spool/exim/exim-daemon.pid"
EXIM_CMDLINE = "/usr/sbin/exim -bd -q1h"

EX_GUARD = 70
SLOW_DEFAULT = 30.0
HANG_SECONDS = 3600.0
JOURNAL_TIMEOUT = 2.0

REJECT_FIRST = {
    False: "Please turn on SMTP Authentication in your mail client.",
    True: "Please turn on SMTP Authentication in your mail client, or login to the IMAP/POP3 server "
    "before sending your message.",
}


def eximrejects_text(popbeforesmtp_on: bool) -> str:
    """``/etc/eximrejects`` exactly as ``update_exim_rejects`` writes it (cpanel.md §4)."""
    return (
        f"host_accept_relay: {REJECT_FIRST[popbeforesmtp_on]}  $sender_fullhost is not permitted to relay "
        "through this server without authentication.\n"
    )


# --------------------------------------------------------------------------- small helpers


def err(text: str) -> None:
    # A closed stderr (SSH client gone) must not turn a finished command into a traceback.
    with contextlib.suppress(OSError):
        print(text, file=sys.stderr, flush=True)


def out(text: str) -> None:
    with contextlib.suppress(OSError):
        print(text, flush=True)


def read_text(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def switch(name: str) -> str | None:
    """Content of ``/etc/sim/fail/<name>`` (``""`` when empty), ``None`` when the switch is off."""
    if not os.path.isfile(os.path.join(FAIL_DIR, name)):
        return None
    return (read_text(os.path.join(FAIL_DIR, name)) or "").strip()


def load_host() -> dict[str, Any]:
    with open(HOST_JSON, encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime())


def stamped(package: str, text: str) -> str:
    return f"[{os.getpid()}] [{stamp()}] [{package}] {text}"


def atomic_write(path: str, text: str, mode: int = 0o644, like: str | None = None) -> None:
    """Replace ``path`` by temp file + rename in the same directory.

    A symlink is written through to its target, so modern ``/etc/relayhosts`` links survive.
    ``like`` copies mode and owner from an existing file (cpanel.config keeps root:root 0644 or
    whatever the admin chose).
    """
    target = os.path.realpath(path)
    uid = gid = -1
    if like is not None:
        with contextlib.suppress(OSError):
            st = os.stat(like)
            mode, uid, gid = st.st_mode & 0o7777, st.st_uid, st.st_gid
    directory = os.path.dirname(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".build", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, mode)
        if uid != -1:
            os.chown(tmp, uid, gid)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def truncate(path: str) -> None:
    """Empty a file in place; ``open`` follows symlinks, so links are never replaced."""
    if os.path.exists(path):
        with open(path, "r+b") as fh:
            fh.truncate(0)


def touch(path: str) -> None:
    old = os.umask(0o022)
    try:
        with open(path, "a", encoding="utf-8"):
            pass
    finally:
        os.umask(old)


def remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def truthy(value: str | None) -> bool:
    # Perl truthiness, which is what cPanel applies to cpanel.config values.
    return value is not None and value.strip() not in ("", "0")


# --------------------------------------------------------------------------- cpanel.config


def read_config() -> dict[str, str]:
    conf: dict[str, str] = {}
    for line in (read_text(CPANEL_CONFIG) or "").splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, value = line.split("=", 1)
            conf.setdefault(key.strip(), value.strip())
    return conf


def set_config(key: str, value: str) -> None:
    """Change one key line of cpanel.config (append it if absent); other lines stay byte-identical."""
    text = read_text(CPANEL_CONFIG) or ""
    lines = text.splitlines(keepends=True)
    found = False
    for i, line in enumerate(lines):
        if line.split("=", 1)[0].strip() == key and "=" in line:
            lines[i] = f"{key}={value}\n"
            found = True
    if not found:
        if lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        lines.append(f"{key}={value}\n")
    new = "".join(lines)
    if new != text:
        atomic_write(CPANEL_CONFIG, new, like=CPANEL_CONFIG)


# --------------------------------------------------------------------------- processes


def pid_alive(pid: int, comm_prefix: str) -> bool:
    """True if ``pid`` runs and is no zombie (orphans wait for PID 1 to reap them) with that comm."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as fh:
            comm = fh.read().strip()
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"
    return state not in ("Z", "X") and comm.startswith(comm_prefix)


def read_pidfile(path: str) -> int | None:
    text = (read_text(path) or "").strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def stop_pid(pid: int, comm_prefix: str, grace: float) -> bool:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. True once the process is gone."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if wait_for(lambda: not pid_alive(pid, comm_prefix), grace):
        return True
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    return wait_for(lambda: not pid_alive(pid, comm_prefix), 2.0)


def wait_for(pred: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


# --------------------------------------------------------------------------- drivers and tailwatchd


def installed_drivers() -> list[str]:
    try:
        names = os.listdir(DRIVER_DIR)
    except OSError:
        return []
    return sorted(n[:-3] for n in names if n.endswith(".pm") and os.path.isfile(os.path.join(DRIVER_DIR, n)))


def driver_active(name: str, conf: dict[str, str] | None = None) -> bool:
    """cpanel.md §2: inactive if ``/etc/<lc>disable``, ``/etc/<lc>isevil`` or ``skip<lc>`` is truthy."""
    lc = name.lower()
    conf = read_config() if conf is None else conf
    if os.path.exists(f"/etc/{lc}disable") or os.path.exists(f"/etc/{lc}isevil"):
        return False
    return not truthy(conf.get(f"skip{lc}"))


def active_drivers() -> list[str]:
    conf = read_config()
    return [d for d in installed_drivers() if driver_active(d, conf)]


def tracker_driver() -> str | None:
    drivers = installed_drivers()
    for name in (MODERN_TRACKER, LEGACY_TRACKER):
        if name in drivers:
            return name
    return None


def tailwatchd_disabled() -> bool:
    if switch("tailwatchd_globally_disabled") is not None:
        return True
    if os.path.exists("/etc/tailwatchddisable") or os.path.exists("/etc/tailwatchdisevil"):
        return True
    return truthy(read_config().get("skiptailwatchd"))


def tailwatchd_pid() -> int | None:
    """PID of the running dummy daemon, or None."""
    pid = read_pidfile(TW_PIDFILE)
    return pid if pid is not None and pid_alive(pid, "tailwatchd") else None


def take_snapshot(pid: int | None) -> None:
    os.makedirs(STATE_DIR, exist_ok=True)
    data = {"pid": pid, "taken": time.time(), "active": active_drivers()}
    atomic_write(SNAPSHOT, json.dumps(data) + "\n")


def read_snapshot() -> dict[str, Any]:
    try:
        data = json.loads(read_text(SNAPSHOT) or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def spawn_tailwatchd() -> int:
    """Start the dummy daemon (a ``sleep infinity`` whose comm is ``tailwatchd``) and snapshot drivers."""
    os.makedirs(os.path.dirname(TW_BIN), exist_ok=True)
    if not os.path.islink(TW_BIN):
        os.symlink("/bin/sleep", TW_BIN)
    proc = subprocess.Popen(
        [TW_BIN, "infinity"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=True,
        start_new_session=True,
    )
    # Never waited for: once this tool exits the daemon is reparented to the namespace init.
    atomic_write(TW_PIDFILE, f"{proc.pid}\n")
    take_snapshot(proc.pid)
    return proc.pid


def tw_stop(lines: list[str]) -> bool:
    """Stop the daemon, reporting like Cpanel::TailWatch::Utils::Stop. False if it would not die."""
    pid = tailwatchd_pid()
    if pid is None:
        lines.append(f"No PID in {TW_PIDFILE}")
        remove(TW_PIDFILE)
        return True
    if stop_pid(pid, "tailwatchd", 3.0):
        remove(TW_PIDFILE)
        lines.append(stamped("Cpanel::TailWatch::Utils::Stop", f"Current process '{pid}' stopped"))
        return True
    lines.append(stamped("Cpanel::TailWatch::Utils::Stop", f"Could not stop current process '{pid}'"))
    return False


def tw_start(lines: list[str]) -> int | None:
    if tailwatchd_disabled():
        lines.append("tailwatchd is disabled")
        return None
    lines.append(f"[{stamp()}] Starting tailwatchd daemon")
    lines.append(f"Log is at {TW_LOG}")
    pid = spawn_tailwatchd()
    with contextlib.suppress(OSError), open(TW_LOG, "a", encoding="utf-8") as fh:
        fh.write(f"[{stamp()}] tailwatchd (sim) started with PID {pid}; active drivers: {active_drivers()}\n")
    return pid


def tw_restart(lines: list[str]) -> int:
    if not tw_stop(lines):
        return 1
    tw_start(lines)
    return 0


# --------------------------------------------------------------------------- repopulation hook


def _parse_seed_ips() -> list[tuple[str, list[str]]]:
    entries: list[tuple[str, list[str]]] = []
    for raw in (read_text(SEED_IPS) or "").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        ip, users = _split_entry(line)
        entries.append((ip, users))
    return entries


def _split_entry(line: str) -> tuple[str, list[str]]:
    """Split ``ip``, ``ip: user[, user]`` or ``ip=user``; a bare IPv6 address stays whole."""
    if "=" in line:
        ip, rest = line.split("=", 1)
    elif m := re.match(r"^(\S+?):\s+(.*)$", line):
        ip, rest = m.group(1), m.group(2)
    elif line.count(":") == 1:
        ip, rest = line.split(":", 1)
    else:
        ip, rest = line, ""
    users = [u.strip() for u in rest.split(",") if u.strip()]
    return ip.strip().strip('"'), users


def _alwaysrelay_ips() -> list[str]:
    ips: list[str] = []
    for raw in (read_text(ALWAYSRELAY) or "").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            ips.append(_split_entry(line)[0])
    return ips


def _list_ip(ip: str) -> str:
    # net-iplsearch keys with colons must be quoted, as the real tracker writes IPv6 entries.
    return f'"{ip}"' if ":" in ip else ip


def tracker_lists(generation: str) -> dict[str, str]:
    """The files the tracker would write now: seed logins merged with /etc/alwaysrelay."""
    seed = _parse_seed_ips()
    ips: list[str] = []
    for ip in [ip for ip, _ in seed] + _alwaysrelay_ips():
        if ip not in ips:
            ips.append(ip)
    ip_text = "".join(f"{_list_ip(ip)}\n" for ip in ips)
    if generation == "modern":
        users = "".join(f"{_list_ip(ip)}: {', '.join(u)}\n" for ip, u in seed if u)
        return {RECENT_IPS: ip_text, RECENT_USERS: users}
    users = "".join(f"{ip} {user}\n" for ip, u in seed for user in u)
    return {RELAYHOSTS: ip_text, RELAYHOSTSUSERS: users}


def repopulate_hook() -> None:
    """Play the still-loaded tracker: rewrite the relay list if the snapshot says it is active."""
    if os.geteuid() != 0 or switch("stale_repopulate") is None:
        return
    tracker = tracker_driver()
    pid = tailwatchd_pid()
    if tracker is None or pid is None:
        return
    snap = read_snapshot()
    if snap.get("pid") != pid or tracker not in snap.get("active", []):
        return
    generation = "modern" if tracker == MODERN_TRACKER else "legacy"
    for path, text in tracker_lists(generation).items():
        if read_text(path) != text:
            try:
                atomic_write(path, text)
            except OSError as exc:
                err(f"cpanel-sim: repopulating {path}: {exc}")


# --------------------------------------------------------------------------- journal


class Journal:
    """Sends this invocation's records to the launcher's abstract unix socket."""

    def __init__(self, tool: str, host: dict[str, Any]) -> None:
        self.tool = tool
        self.name = str(host.get("journal_socket", ""))
        self.start_time = time.time()
        self.done = False

    def _record(self, phase: str, rc: int | None) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "path": sys.argv[0] if sys.argv else "",
            "argv": list(sys.argv),
            "uid": os.getuid(),
            "euid": os.geteuid(),
            "pid": os.getpid(),
            "rc": rc,
            "start": self.start_time,
            "end": time.time() if phase == "end" else None,
            "phase": phase,
        }

    def send(self, phase: str, rc: int | None = None) -> None:
        if phase == "end":
            # A signal can arrive while the normal end record is on its way: send only one.
            if self.done:
                return
            self.done = True
        line = (json.dumps(self._record(phase, rc)) + "\n").encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(JOURNAL_TIMEOUT)
                sock.connect("\0" + self.name)
                sock.sendall(line)
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = sock.recv(64)
                    if not chunk:
                        break
                    reply += chunk
            if reply.strip() != b"ok":
                err(f"cpanel-sim: journal answered {reply!r}")
        except OSError as exc:
            err(f"cpanel-sim: warning: journal unreachable ({exc}); carrying on")


# --------------------------------------------------------------------------- tools: tailwatchd

TAILWATCHD_HELP = """Usage: {path} [options]

Simulated tailwatchd control (RelayGuard lab).

  --help               this text (also shown for unknown options)
  --version[=long]     print the version
  --status[=long]      show whether the daemon runs and which drivers are active
  --start              start the daemon
  --stop               stop the daemon
  --restart            stop, then start the daemon
  --enable=NS          enable the driver NS (repeatable; wins over --disable for the same NS)
  --disable=NS         disable the driver NS (repeatable)
  --restart=0          with --enable/--disable: do not restart afterwards
  --verbose            report each enabled or disabled driver
  --systemd --max-fd=n --trace[=n] --debug --perldoc   accepted and ignored
"""

ED_PACKAGE = "Cpanel::TailWatch::Utils::EnableDisable"


def _driver_of(ns: str) -> str | None:
    """Driver name when ``ns`` names an installed driver module, else None (the load would fail)."""
    if not ns.startswith(DRIVER_PREFIX):
        return None
    name = ns[len(DRIVER_PREFIX) :]
    if not re.fullmatch(r"\w+", name) or not os.path.isfile(os.path.join(DRIVER_DIR, f"{name}.pm")):
        return None
    return name


def break_auth_if_switched() -> None:
    """``tweak_breaks_auth``: the change leaves Exim without working authenticated submission."""
    if switch("tweak_breaks_auth") is None:
        return
    text = read_text(EXIM_CONF) or ""
    text = text.replace("  accept authenticated = *\n", "")
    text = re.sub(r"(?m)^(\s*server_advertise_condition = ).*$", r"\1false", text)
    atomic_write(EXIM_CONF, text, like=EXIM_CONF)


def _tw_disable(name: str) -> None:
    set_config(f"skip{name.lower()}", "1")
    if name == LEGACY_TRACKER:
        break_auth_if_switched()
    if name == MODERN_TRACKER:
        truncate(RECENT_IPS)
        truncate(RECENT_USERS)
        write_eximrejects()


def _tw_enable(name: str) -> None:
    lc = name.lower()
    remove(f"/etc/{lc}disable")
    remove(f"/etc/{lc}isevil")
    set_config(f"skip{lc}", "0")


def tool_tailwatchd(args: list[str]) -> int:
    enable: list[str] = []
    disable: list[str] = []
    actions: set[str] = set()
    verbose = False
    restart_after = True
    help_wanted = not args
    it = iter(args)
    for arg in it:
        key, eq, value = arg.partition("=")
        if key in ("--enable", "--disable"):
            if not eq:
                value = next(it, "")
            (enable if key == "--enable" else disable).append(value)
        elif key == "--restart" and eq:
            restart_after = value not in ("0", "")
            if restart_after:
                actions.add("restart")
        elif key in ("--status", "--start", "--stop", "--restart", "--version", "--help"):
            actions.add(key[2:])
        elif arg == "--verbose":
            verbose = True
        elif key in ("--systemd", "--max-fd", "--trace", "--debug", "--perldoc"):
            continue
        else:
            help_wanted = True
    if help_wanted or "help" in actions:
        out(TAILWATCHD_HELP.format(path=sys.argv[0]).rstrip("\n"))
        return 0
    if enable or disable:
        return _tw_enable_disable(enable, disable, verbose, restart_after)
    if "version" in actions:
        out(f"tailwatchd version {(read_text(CPANEL_VERSION) or '').strip() or 'unknown'} (simulated)")
        return 0
    if "status" in actions:
        return _tw_status()
    lines: list[str] = []
    if "restart" in actions:
        rc = tw_restart(lines)
    elif "stop" in actions:
        rc = 0 if tw_stop(lines) else 1
    elif "start" in actions:
        pid = tailwatchd_pid()
        if pid is not None:
            lines.append(f"tailwatchd is already running with PID {pid}")
        else:
            tw_start(lines)
        rc = 0
    else:
        out(TAILWATCHD_HELP.format(path=sys.argv[0]).rstrip("\n"))
        return 0
    for line in lines:
        out(line)
    return rc


def _tw_status() -> int:
    pid = tailwatchd_pid()
    out(f"tailwatchd is {'disabled' if tailwatchd_disabled() else 'enabled'}")
    out(f"Running, PID {pid}" if pid is not None else "Not running")
    conf = read_config()
    for name in installed_drivers():
        out(f"  Driver (Active: {int(driver_active(name, conf))}) {DRIVER_PREFIX}{name}")
    return 0


def _tw_enable_disable(enable: list[str], disable: list[str], verbose: bool, restart_after: bool) -> int:
    # Every named module is loaded before anything changes, so one bad name aborts the whole call.
    for ns in [*enable, *disable]:
        if _driver_of(ns) is None:
            err(f"Failed to load {ns}: No such file or directory at {DRIVER_DIR}/Utils/EnableDisable.pm line 28.")
            return 2
    to_enable = list(dict.fromkeys(enable))
    to_disable = [ns for ns in dict.fromkeys(disable) if ns not in to_enable]
    rc = 0
    for name in installed_drivers():
        ns = f"{DRIVER_PREFIX}{name}"
        if ns not in to_enable and ns not in to_disable:
            out(stamped(ED_PACKAGE, f"{ns} not specified in --enable or --disable, ignoring"))
    for ns in to_disable:
        try:
            _tw_disable(_driver_of(ns) or "")
        except OSError as exc:
            out(stamped(ED_PACKAGE, f"{ns} could not be disabled: {exc}"))
            rc = 1
            continue
        if verbose:
            out(stamped(ED_PACKAGE, f"{ns} was successfully disabled"))
    for ns in to_enable:
        try:
            _tw_enable(_driver_of(ns) or "")
        except OSError as exc:
            out(stamped(ED_PACKAGE, f"{ns} could not be enabled: {exc}"))
            rc = 1
            continue
        if verbose:
            out(stamped(ED_PACKAGE, f"{ns} was successfully enabled"))
    if restart_after:
        lines: list[str] = []
        rc = max(rc, tw_restart(lines))
        for line in lines:
            out(line)
    return rc


# --------------------------------------------------------------------------- tools: whmapi1

UNKNOWN_SERVICE = "Specified service does not exist or was not specified."
SERVICES = {"exim": "Exim Mail Server", "tailwatchd": "TailWatch Daemon"}


def _monitored(service: str) -> int:
    for line in (read_text(CHKSERVD_CONF) or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == service:
            return 1 if value.strip() == "1" else 0
    return 0


def _service_status(service: str) -> dict[str, Any]:
    if service == "exim":
        enabled, running = int(not os.path.exists("/etc/eximdisable")), int(exim_pid() is not None)
    else:
        enabled, running = int(not tailwatchd_disabled()), int(tailwatchd_pid() is not None)
    entry: dict[str, Any] = {
        "name": service,
        "display_name": SERVICES[service],
        "enabled": enabled,
        "installed": 1,
        "monitored": _monitored(service),
    }
    if entry["enabled"] and entry["monitored"]:
        entry["running"] = running
    return entry


def _tweak_value(key: str) -> Any:
    if key == "popbeforesmtp":
        return int(os.path.exists(POPBEFORESMTP))
    return read_config().get(key)


def _whm_call(fn: str, params: dict[str, str]) -> tuple[Any, str | None]:
    """Returns (data, error reason or None)."""
    if fn == "get_tweaksetting":
        key = params.get("key", "")
        if not key:
            return None, "Missing parameter: key"
        return {"tweaksetting": {"key": key, "value": _tweak_value(key)}}, None
    if fn == "set_tweaksetting":
        key, value = params.get("key", ""), params.get("value")
        if not key or value is None:
            return None, "Missing parameter: key and value are required."
        if switch("whmapi_fail") is not None:
            return None, f"Failed to save the Tweak Setting “{key}”: the configuration is locked (simulated)."
        if key == "popbeforesmtp":
            if value not in ("0", "1"):
                return None, f"Invalid value for “{key}”: “{value}”."
            if value == "1":
                touch(POPBEFORESMTP)
            else:
                remove(POPBEFORESMTP)
                break_auth_if_switched()
        set_config(key, value)
        return None, None
    if fn == "servicestatus":
        service = params.get("service")
        if service is None:
            return {"service": [_service_status(s) for s in SERVICES]}, None
        if service not in SERVICES:
            return None, UNKNOWN_SERVICE
        return {"service": [_service_status(service)]}, None
    if fn == "configureservice":
        service = params.get("service", "")
        if service not in SERVICES:
            return None, UNKNOWN_SERVICE
        return {}, None
    return None, f"Unknown app (“{fn}”) requested for this version (1) of the API."


def _yaml(value: Any, indent: int = 0) -> list[str]:
    pad = "  " * indent
    if isinstance(value, dict):
        if not value:
            return [pad + "{}"]
        lines: list[str] = []
        for k, v in value.items():
            if isinstance(v, dict | list) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}{k}: {_yaml_scalar(v)}")
        return lines
    if isinstance(value, list):
        if not value:
            return [pad + "[]"]
        lines = []
        for item in value:
            sub = _yaml(item, indent + 1)
            lines.append(f"{pad}-{sub[0][len(pad) + 1 :]}")
            lines.extend(sub[1:])
        return lines
    return [pad + _yaml_scalar(value)]


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "~"
    if isinstance(value, dict | list):
        return "{}" if isinstance(value, dict) else "[]"
    text = str(value)
    if text == "" or re.search(r"[:#\"'{}\[\],&*!|>%@`]|^\s|\s$", text):
        return json.dumps(text, ensure_ascii=False)
    return text


def tool_whmapi1(args: list[str]) -> int:
    fmt = "yaml"
    fn: str | None = None
    params: dict[str, str] = {}
    for arg in args:
        if arg.startswith("--output="):
            fmt = arg.split("=", 1)[1].lower()
        elif arg.startswith("-"):
            continue
        elif fn is None:
            fn = arg
        elif "=" in arg:
            key, value = arg.split("=", 1)
            params[key] = value
    if fn is None:
        err(f"Usage: {sys.argv[0]} [--output=json|yaml] <function> [key=value ...]")
        return 1
    data, reason = _whm_call(fn, params)
    envelope = {
        "data": data,
        "metadata": {"command": fn, "result": 0 if reason else 1, "reason": reason or "OK", "version": 1},
    }
    if fmt == "json":
        out(json.dumps(envelope, ensure_ascii=False))
    else:
        out("\n".join(["---", *_yaml(envelope)]))
    return 0


# --------------------------------------------------------------------------- tools: Exim

RESTARTSRV_EXIM_HELP = """Usage: {path} [action] [modifiers]

Simulated restartsrv for the “exim” service (RelayGuard lab).

Actions:
  --restart    restart the service (default)
  --hard       hard restart
  --graceful   graceful restart
  --reload     reload (here: a full restart)
  --stop       stop the service
  --start      start the service
  --status     report whether the service is up
  --check      check the service
Modifiers (accepted): --notconfigured-ok --verbose --debug --attempt=N --force
  --help       this text
"""

EXIM_DOWN = "The “exim” service is down."
EXIM_DISABLED = "The “exim” service is disabled."
EXIM_RESTART_FAILED = "The “exim” service failed to restart because the restart script exited with an error: {why}"


def exim_pid() -> int | None:
    pid = read_pidfile(EXIM_PIDFILE)
    return pid if pid is not None and pid_alive(pid, "exim") else None


def _exim_up_text(pid: int) -> str:
    return f"exim ({EXIM_CMDLINE}) is running as root with PID {pid} (systemd+/proc check method)."


def _port_open(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def exim_stop() -> bool:
    pid = exim_pid()
    return True if pid is None else stop_pid(pid, "exim", 5.0)


def exim_start(address: str) -> str | None:
    """Start the real Exim daemon; None on success, else why it failed."""
    old = read_pidfile(EXIM_PIDFILE)
    # stderr goes to a file, not a pipe: the daemonized child would keep a pipe open forever.
    with tempfile.TemporaryFile() as errf:
        proc = subprocess.run(
            [EXIM_REAL, "-bd", "-q1h"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errf,
            check=False,
        )
        errf.seek(0)
        stderr = errf.read().decode(errors="replace").strip()
    if proc.returncode != 0:
        return stderr or f"{EXIM_REAL} exited with status {proc.returncode}"

    def ready() -> bool:
        pid = read_pidfile(EXIM_PIDFILE)
        return pid is not None and pid != old and pid_alive(pid, "exim") and _port_open(address, 25)

    if not wait_for(ready, 5.0):
        return f"exim did not start listening on {address}:25 within 5 seconds"
    return None


def _exim_should_fail() -> str | None:
    if switch("exim_restart_fail") is not None:
        return "simulated failure (exim_restart_fail)"
    if switch("exim_restart_fail_once") is not None and not os.path.exists(EXIM_FAILED_ONCE):
        os.makedirs(STATE_DIR, exist_ok=True)
        touch(EXIM_FAILED_ONCE)
        return "simulated failure (exim_restart_fail_once)"
    return None


def tool_restartsrv_exim(args: list[str], host: dict[str, Any]) -> int:
    action = "restart"
    for arg in args:
        key = arg.split("=", 1)[0]
        if key in ("--restart", "--hard", "--graceful", "--reload", "--stop", "--start", "--status", "--check"):
            action = key[2:]
        elif key == "--help":
            out(RESTARTSRV_EXIM_HELP.format(path=sys.argv[0]).rstrip("\n"))
            return 0
        elif key in ("--notconfigured-ok", "--verbose", "--debug", "--attempt", "--force"):
            continue
        else:
            err(RESTARTSRV_EXIM_HELP.format(path=sys.argv[0]).rstrip("\n"))
            return 1
    address = str(host.get("address", "127.0.0.1"))
    pid = exim_pid()
    if action == "status":
        if pid is None:
            err(EXIM_DOWN)
            return 1
        out(_exim_up_text(pid))
        return 0
    if action == "check":
        if pid is None or not _port_open(address, 25):
            err(EXIM_DOWN)
            return 1
        out(f"The 'exim' service passed the check: {_exim_up_text(pid)}")
        return 0
    if action == "stop":
        return 0 if exim_stop() else 1
    if os.path.exists("/etc/eximdisable"):
        err(EXIM_DISABLED)
        return 1
    if action == "start":
        if pid is not None:
            return 0
        why = exim_start(address)
        if why is not None:
            err(f"The “exim” service failed to start because the start script exited with an error: {why}")
            return 1
        out("exim started successfully.")
        return 0
    if not exim_stop():
        err(EXIM_RESTART_FAILED.format(why=f"could not stop the running daemon (PID {pid})"))
        return 1
    why = _exim_should_fail() or exim_start(address)
    if why is not None:
        err(EXIM_RESTART_FAILED.format(why=why))
        return 1
    out("exim restarted successfully.")
    return 0


def tool_restartsrv_tailwatchd(args: list[str]) -> int:
    if "--status" in args:
        pid = tailwatchd_pid()
        if pid is None:
            err("The “tailwatchd” service is down.")
            return 1
        out(f"tailwatchd ({TW_BIN}) is running as root with PID {pid} (pidfile+/proc check method).")
        return 0
    lines: list[str] = []
    if "--stop" in args:
        tw_stop(lines)
        return 0
    if not tw_stop(lines):
        err("The “tailwatchd” service failed to restart because the restart script exited with an error.")
        return 1
    if tw_start(lines) is None:
        out("The “tailwatchd” service is disabled.")
        return 0
    out("tailwatchd restarted successfully.")
    return 0


def write_eximrejects() -> None:
    on = truthy(read_config().get("popbeforesmtp"))
    old = os.umask(0o022)
    try:
        atomic_write(EXIMREJECTS, eximrejects_text(on), mode=0o644)
    finally:
        os.umask(old)


def tool_update_exim_rejects(args: list[str]) -> int:
    write_eximrejects()
    return 0


def tool_smtpmailgidonly(args: list[str]) -> int:
    verbs = ("on", "off", "status", "refresh", "start", "stop")
    if len(args) != 1 or args[0] not in verbs:
        err(f"Usage: {sys.argv[0]} <{'|'.join(verbs)}>")
        return 1
    verb = args[0]
    try:
        if verb == "on":
            touch(SMTPGIDONLY)
            set_config("smtpmailgidonly", "1")
        elif verb == "off":
            remove(SMTPGIDONLY)
            set_config("smtpmailgidonly", "0")
    except OSError as exc:
        err(f"Could not turn protection {verb}: {exc}")
        return 1
    out(f"Protection is: {'on' if os.path.exists(SMTPGIDONLY) else 'off'}")
    return 0


def run_exim(args: list[str], journal: Journal) -> int:
    """The /usr/sbin/exim wrapper: journal, then become the real Exim."""
    if switch("exim_bad_config") is not None and "-bV" in args:
        err("Exim configuration error in line 1 of /etc/exim.conf:")
        err('  main option "sim_broken_option" unknown')
        journal.send("end", 1)
        return 1
    journal.send("exec")
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(EXIM_REAL, [EXIM_REAL, *args])
    return 127  # not reached: execv raises OSError on failure


# --------------------------------------------------------------------------- entry points

TOOLS = (
    "tailwatchd",
    "whmapi1",
    "restartsrv_exim",
    "restartsrv_tailwatchd",
    "update_exim_rejects",
    "smtpmailgidonly",
    "exim",
)


def _in_lab_host() -> bool:
    if os.path.isfile(HOST_JSON):
        return True
    err(f"cpanel-sim: {HOST_JSON} is missing: this is not a RelayGuard lab host, refusing to run")
    return False


def _delay(tool: str) -> float:
    if tool != "exim" and switch("hang") is not None:
        return HANG_SECONDS
    value = switch(f"slow_{tool}")
    if value is None:
        return 0.0
    try:
        return max(0.0, float(value)) if value else SLOW_DEFAULT
    except ValueError:
        return SLOW_DEFAULT


def _dispatch(tool: str, args: list[str], host: dict[str, Any]) -> int:
    handlers: dict[str, Callable[[], int]] = {
        "tailwatchd": lambda: tool_tailwatchd(args),
        "whmapi1": lambda: tool_whmapi1(args),
        "restartsrv_exim": lambda: tool_restartsrv_exim(args, host),
        "restartsrv_tailwatchd": lambda: tool_restartsrv_tailwatchd(args),
        "update_exim_rejects": lambda: tool_update_exim_rejects(args),
        "smtpmailgidonly": lambda: tool_smtpmailgidonly(args),
    }
    return handlers[tool]()


def _on_signals(signums: Iterable[int], journal: Journal) -> None:
    def handler(signum: int, frame: object) -> NoReturn:
        journal.send("end", 128 + signum)
        os._exit(128 + signum)

    for signum in signums:
        signal.signal(signum, handler)


def main(tool: str) -> int:
    """Run simulated ``tool`` with ``sys.argv``; returns its exit status."""
    if not _in_lab_host():
        return EX_GUARD
    if tool not in TOOLS:
        err(f"cpanel-sim: unknown tool {tool!r}")
        return 2
    try:
        host = load_host()
    except (OSError, ValueError) as exc:
        err(f"cpanel-sim: cannot read {HOST_JSON}: {exc}")
        return EX_GUARD
    journal = Journal(tool, host)
    _on_signals((signal.SIGTERM, signal.SIGHUP, signal.SIGINT), journal)
    args = sys.argv[1:]
    rc = 1
    try:
        delay = _delay(tool)
        if delay > 0:
            journal.send("start")
            time.sleep(delay)
        repopulate_hook()
        if tool == "exim":
            return run_exim(args, journal)
        rc = _dispatch(tool, args, host)
    except OSError as exc:
        err(f"{os.path.basename(sys.argv[0]) if sys.argv else tool}: {exc}")
        rc = 1
    finally:
        journal.send("end", rc)
    return rc


def boot() -> None:
    """Host start: start the dummy tailwatchd, snapshot the drivers, run the repopulation hook."""
    if not _in_lab_host():
        sys.exit(EX_GUARD)
    host = load_host()
    if host.get("profile") == "not-cpanel" or not Path(CPANEL_VERSION).exists():
        return
    os.makedirs(STATE_DIR, exist_ok=True)
    starts = switch("tailwatchd_not_running") is None and not tailwatchd_disabled()
    if starts and tailwatchd_pid() is None:
        spawn_tailwatchd()
    else:
        take_snapshot(tailwatchd_pid())
    repopulate_hook()
