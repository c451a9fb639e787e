"""The read-only probe: one fixed POSIX script, one SSH round trip, parsed into a :class:`Finding`.

The script prints ``key=value`` lines, hex-encodes every blob (``od`` exists everywhere; ``base64``
does not on CentOS 5-era hosts), wraps each tool in ``timeout`` only where ``timeout`` exists, and
brackets its output with ``scan.schema=1`` / ``scan.end=1`` so truncated output is detected.
"""

from __future__ import annotations

import re

from relayguard.domain.collect import collect_lines
from relayguard.domain.cpanel_paths import (
    ANTIRELAYD_MODULE,
    CPANEL_CONFIG,
    EXCEPTIONS,
    EXIM,
    EXIM_CONF,
    EXIM_MAINLOG,
    EXIM_PIDFILES,
    EXIM_SPOOL_INPUT,
    EXIMREJECTS,
    GATE_FILE,
    LEGACY_TAILWATCHD,
    LISTS,
    LOCALDOMAINS,
    MARKERS,
    MODERN_TAILWATCHD,
    RESTARTSRV_EXIM,
    SENDERS_WARNING_FILE,
    SMTPGIDONLY_TWEAK,
    SMTPMAILGIDONLY,
    TAILWATCH_DRIVERS,
    TAILWATCHD_PIDFILE,
    TRACKER_MODULE,
    VERSION,
)
from relayguard.domain.models import SIGNALS_WINDOW_MINUTES, Finding, ListFile, Signals

SCHEMA = "1"
CONFIG_KEYS = (
    "popbeforesmtp",
    "popbeforesmtpsenders",
    "skiprecentauthedmailiptracker",
    "skipantirelayd",
    "skiptailwatchd",
    "smtpmailgidonly",
    "maxemailsperhour",
    "emailsperdaynotify",
    "email_outbound_spam_detect_enable",
    "email_outbound_spam_detect_action",
    "email_outbound_spam_detect_threshold",
)
INDICATORS = {
    "rejected_relay": "Rejected relay attempt:",
    "max_per_hour": "has exceeded the max emails per hour",
    "max_defers": "max defers and failures per hour",
    "suspended": "has an outgoing mail suspension",
    "dovecot_auth": "A=dovecot_",
    "auth_failed": "authenticator failed",
}

#: Lines of the main log read for the signals at most: about an hour of a busy server (a few thousand
#: messages). When the bound ends inside the window the counts are reported as lower bounds (``partial``).
SIGNALS_MAX_LINES = 200000
#: Main-log substrings counted as a send-limit hit (cPanel's hourly limits) and as a refused relay attempt
#: (cPanel's ``log_message``, cPanel's 550 text, stock Exim's text). A line counts once however many match.
SEND_LIMIT_TEXTS = ("has exceeded the max emails per hour", "max defers and failures per hour")
RELAY_REJECT_TEXTS = ("Rejected relay attempt", "is not permitted to relay", "relay not permitted")


def _awk_any(texts: tuple[str, ...]) -> str:
    return " || ".join(f'index($0, "{t}")' for t in texts)


# One pass over the bounded tail. Exim stamps each line "YYYY-MM-DD HH:MM:SS" in the server's local time,
# the clock ``date`` uses, so the window is a string comparison; lines without a stamp are skipped.
_SIGNALS_AWK = (
    "{ t = substr($0, 1, 19); "
    "if (t !~ /^[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9]$/) next; "
    "if (!seen) { seen = 1; first = t } "
    "if (t < s) next; "
    f"if ({_awk_any(SEND_LIMIT_TEXTS)}) l++; "
    f"if ({_awk_any(RELAY_REJECT_TEXTS)}) r++ }} "
    'END { printf "signals.send_limit=%d\\nsignals.relay_reject=%d\\nsignals.partial=%d\\n", '
    "l, r, (NR >= m && seen && first >= s) }"
)

# Shell helpers shared by every script RelayGuard sends. Fixed text: nothing is interpolated.
PRELUDE = r"""
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
LC_ALL=C
export LC_ALL
if command -v timeout >/dev/null 2>&1; then RG_T=1; else RG_T=0; fi
RG_TMO=30
t() { case "$RG_T$1" in 1/*) timeout "$RG_TMO" "$@" ;; *) "$@" ;; esac; }
hex() { od -An -v -tx1 | tr -d ' \n'; }
kv() { printf '%s=%s\n' "$1" "$2"; }
flag() { if [ -e "$2" ] || [ -L "$2" ]; then kv "$1" 1; else kv "$1" 0; fi; }
blob() {
  k=$1; shift
  o=$( (t "$@") 2>&1 ); r=$?
  kv "$k.rc" "$r"
  printf '%s.hex=' "$k"; printf '%s' "$o" | dd bs=65536 count=1 2>/dev/null | hex; echo
}
listfile() {
  k=$1; p=$2
  if [ -L "$p" ]; then kv "$k.kind" symlink; kv "$k.target" "$(readlink "$p")"
  elif [ -f "$p" ]; then kv "$k.kind" file
  else kv "$k.kind" missing; return 0; fi
  printf '%s.hex=' "$k"; dd if="$p" bs=65536 count=1 2>/dev/null | hex; echo
}
now() { read -r up _ < /proc/uptime; printf '%s' "$up"; }
"""


# ``tailwatchd --status`` as cpanel.md §3 defines it, from the files it reads, in one awk process instead of
# cPanel's Perl daemon object (which also appends to tailwatchd_log): "enabled" unless skiptailwatchd is
# truthy or /etc/tailwatchddisable or /etc/tailwatchdisevil exists; "Running, PID n" when the PID file names
# a live, non-zombie process whose comm starts with tailwatchd; one driver line per installed module, active
# by the §2 formula. Printed hex-encoded as tailwatchd.status.hex, as the tool's output was.
_TAILWATCHD_STATUS_AWK = (
    "function there(f,   x, r) { r = (getline x < f); close(f); return r >= 0 } "
    "function truthy(v) { gsub(/[ \\t\\r]/, \"\", v); return v != \"\" && v != \"0\" } "
    "function line(s,   i) { for (i = 1; i <= length(s); i++) printf \"%02x\", ord[substr(s, i, 1)]; "
    "printf \"0a\" } "
    "BEGIN { for (i = 1; i < 128; i++) ord[sprintf(\"%c\", i)] = i; "
    "while ((getline l < cfg) > 0) { i = index(l, \"=\"); if (i) conf[substr(l, 1, i - 1)] = substr(l, i + 1) } "
    "close(cfg); "
    "off = truthy(conf[\"skiptailwatchd\"]) || there(\"/etc/tailwatchddisable\") || there(\"/etc/tailwatchdisevil\"); "
    "run = \"\"; if ((getline pid < pf) > 0 && pid ~ /^[0-9]+$/) { st = \"/proc/\" pid \"/stat\"; "
    "if ((getline s < st) > 0 && s ~ /^[0-9]+ \\(tailwatchd[^)]*\\) [^ZX]/) run = pid; close(st) } "
    "printf \"tailwatchd.status.rc=0\\ntailwatchd.status.hex=\"; "
    "line(\"tailwatchd is \" (off ? \"disabled\" : \"enabled\")); "
    "line(run != \"\" ? \"Running, PID \" run : \"Not running\"); "
    "n = split(mods, m, \" \"); for (j = 1; j <= n; j++) { if (m[j] !~ /^[A-Za-z0-9_]+$/) continue; "
    "lc = tolower(m[j]); "
    "a = !(truthy(conf[\"skip\" lc]) || there(\"/etc/\" lc \"disable\") || there(\"/etc/\" lc \"isevil\")); "
    "line(\"  Driver (Active: \" a \") Cpanel::TailWatch::\" m[j]) } "
    "print \"\" }"
)

#: ``exim.status.text`` when the daemon is up (the PID follows) and when it is down.
EXIM_UP_TEXT = "exim is running with PID"
EXIM_DOWN_TEXT = "exim is down: no live exim process in its PID file"


def _exim_lines() -> list[str]:
    """Exim's state at the cost of shell builtins: each part answers what a tool run used to.

    - Up or down: the PID in Exim's PID file names a live, non-zombie process whose ``comm`` starts with
      ``exim``: the check ``restartsrv_exim --status`` makes ("systemd+/proc check method"), without its
      Perl start-up. Only on a cPanel server (where restartsrv_exim exists), as before.
    - Configuration valid: a daemon that started after the configuration last changed parsed it then, so
      ``exim -bV`` runs only when ``/etc/exim.conf`` is newer than the PID file (or Exim is down).
    - Queue: one ``-H`` file per queued message, counted by glob (what ``exim -bpc`` counts), in
      ``input/`` and its split-spool subdirectories.
    """
    pidfiles = " ".join(EXIM_PIDFILES)
    return [
        "rg_pid=; rg_pf=",
        f"for f in {pidfiles}; do if [ -r \"$f\" ]; then rg_pf=$f; read -r rg_pid _ < \"$f\"; break; fi; done",
        "case \"$rg_pid\" in ''|*[!0-9]*) rg_pid= ;; esac",
        "rg_up=0",
        'if [ -n "$rg_pid" ] && [ -r "/proc/$rg_pid/stat" ] && [ -r "/proc/$rg_pid/comm" ]; then',
        '  read -r rg_st < "/proc/$rg_pid/stat"; rg_st=${rg_st##*) }; rg_st=${rg_st%% *}',
        '  read -r rg_comm < "/proc/$rg_pid/comm"',
        '  case "$rg_st:$rg_comm" in Z:*|X:*) ;; *:exim*) rg_up=1 ;; esac',
        "fi",
        f"if [ -e {RESTARTSRV_EXIM} ]; then",
        f'  if [ "$rg_up" = 1 ]; then kv exim.status.rc 0; kv exim.status.text "{EXIM_UP_TEXT} $rg_pid"',
        f'  else kv exim.status.rc 1; kv exim.status.text "{EXIM_DOWN_TEXT}"; fi',
        "else kv exim.status.rc 1; fi",
        f'if [ "$rg_up" = 1 ] && ! [ {EXIM_CONF} -nt "$rg_pf" ]; then kv exim.bv.rc 0; kv exim.bv.by daemon',
        f"else blob exim.bv {EXIM} -bV; fi",
        f"if [ -d {EXIM_SPOOL_INPUT} ]; then",
        "  rg_q=0",
        f"  for f in {EXIM_SPOOL_INPUT}/*-H {EXIM_SPOOL_INPUT}/*/*-H; do",
        '    if [ -f "$f" ]; then rg_q=$((rg_q + 1)); fi; done',
        '  kv exim.queue.count "$rg_q"',
        "fi",
    ]


def _probe_body(deliverability: bool = False) -> str:
    """The probe's lines; ``deliverability`` adds the read-only collection of domain/collect.py (the first
    probe of a job only: the probes that end a fix or revert do not need it again)."""
    cfg_re = "|".join(CONFIG_KEYS)
    lines = [
        "kv scan.schema " + SCHEMA,
        'kv id.uid "$(id -u)"',
        'kv id.hostname "$(hostname -f 2>/dev/null || hostname)"',
        'kv has_timeout "$RG_T"',
        f"flag version.present {VERSION}",
        f"printf 'version='; head -n 1 {VERSION} 2>/dev/null | tr -cd '0-9.'; echo",
        f"flag path.libexec_tailwatchd {MODERN_TAILWATCHD}",
        f"flag path.bin_tailwatchd {LEGACY_TAILWATCHD}",
        f"flag module.tracker {TRACKER_MODULE}",
        f"flag module.antirelayd {ANTIRELAYD_MODULE}",
        f"grep -E '^({cfg_re})=' {CPANEL_CONFIG} 2>/dev/null | sed 's/^/cfg./'",
        f"flag file.popbeforesmtp {GATE_FILE}",
        f"flag file.eximpopbeforesmtpwarning {SENDERS_WARNING_FILE}",
    ]
    lines += [f"flag marker.{m.rsplit('/', 1)[1]} {m}" for m in MARKERS]
    lines += [f"listfile list.{k} {p}" for k, p in LISTS.items()]
    lines += [f"listfile exc.{k} {p}" for k, p in EXCEPTIONS.items()]
    lines += [
        f"if [ -x {MODERN_TAILWATCHD} ] || [ -x {LEGACY_TAILWATCHD} ]; then",
        "  rg_mods=",
        f"  for f in {TAILWATCH_DRIVERS}/*.pm; do",
        '    if [ -f "$f" ]; then f=${f##*/}; rg_mods="$rg_mods ${f%.pm}"; fi; done',
        f"  awk -v cfg={CPANEL_CONFIG} -v pf={TAILWATCHD_PIDFILE} -v mods=\"$rg_mods\" '{_TAILWATCHD_STATUS_AWK}'"
        " </dev/null",
        "fi",
    ]
    lines += _exim_lines()
    lines += [
        f"listfile eximrejects {EXIMREJECTS}",
        f"printf 'localdomain='; head -n 1 {LOCALDOMAINS} 2>/dev/null | tr -cd 'A-Za-z0-9.-'; echo",
        # What `smtpmailgidonly status` prints is this file's presence (cpanel.md §2): a test, not a Perl run.
        f"if [ -e {SMTPMAILGIDONLY} ]; then flag smtp.gidonly {SMTPGIDONLY_TWEAK}; fi",
        f"if [ -r {EXIM_MAINLOG} ]; then",
    ]
    # A bounded tail, read once per pattern: the probe writes nothing, not even a temp file.
    lines += [f"  kv indicator.{k} \"$(tail -n 20000 {EXIM_MAINLOG} | grep -c -F '{v}')\""
              for k, v in INDICATORS.items()]
    # GNU date computes the window's start; without it (busybox) the signals are reported unmeasured.
    lines += [
        f"  rg_since=$(date -d '-{SIGNALS_WINDOW_MINUTES} minutes' '+%Y-%m-%d %H:%M:%S' 2>/dev/null)",
        '  if [ -n "$rg_since" ]; then',
        '    kv signals.since "$rg_since"',
        f"    tail -n {SIGNALS_MAX_LINES} {EXIM_MAINLOG} |",
        f"      awk -v s=\"$rg_since\" -v m={SIGNALS_MAX_LINES} '{_SIGNALS_AWK}'",
        "  fi",
    ]
    lines += ["fi"]
    if deliverability:
        lines += collect_lines()
    lines += ["kv scan.end 1"]
    return "\n".join(lines) + "\n"


PROBE_SCRIPT = PRELUDE + _probe_body(deliverability=True)


def _unhex(value: str) -> str:
    try:
        return bytes.fromhex(value).decode("utf-8", errors="replace")
    except ValueError:
        return ""


def parse_kv(output: str) -> dict[str, str]:
    """``key=value`` lines into a dict; later keys win, junk lines (a login banner) are ignored."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep and re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
            out[key] = value
    return out


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _listfile(kv: dict[str, str], key: str, path: str) -> ListFile:
    kind = kv.get(f"{key}.kind", "missing")
    text = _unhex(kv.get(f"{key}.hex", ""))
    return ListFile(path=path, kind=kind, target=kv.get(f"{key}.target", ""), lines=tuple(text.splitlines()))


def _queue(kv: dict[str, str]) -> int | None:
    """The queued messages: the probe's ``-H`` file count, or (older scripts) ``exim -bpc``'s output."""
    if "exim.queue.count" in kv:
        return _int(kv["exim.queue.count"])
    return _int(_unhex(kv.get("exim.queue.hex", "")).strip()) if kv.get("exim.queue.rc") == "0" else None


def _smtp_restrictions(kv: dict[str, str]) -> str:
    """``smtpmailgidonly status``'s answer: from the tweak file's presence, or (older scripts) the tool's output."""
    if "smtp.gidonly" in kv:
        return f"Protection is: {'on' if kv['smtp.gidonly'] == '1' else 'off'}"
    return _unhex(kv.get("smtpmailgidonly.hex", "")).strip()


def parse_probe(output: str) -> Finding:
    """Parse :data:`PROBE_SCRIPT` output. A missing start or end marker gives ``complete=False``."""
    kv = parse_kv(output)
    complete = kv.get("scan.schema") == SCHEMA and kv.get("scan.end") == "1"
    config = {k[4:]: v for k, v in kv.items() if k.startswith("cfg.")}
    return Finding(
        complete=complete,
        uid=_int(kv.get("id.uid")),
        hostname=kv.get("id.hostname", ""),
        has_timeout=kv.get("has_timeout") == "1",
        version=kv.get("version", ""),
        version_present=kv.get("version.present") == "1",
        libexec_tailwatchd=kv.get("path.libexec_tailwatchd") == "1",
        bin_tailwatchd=kv.get("path.bin_tailwatchd") == "1",
        tracker_module=kv.get("module.tracker") == "1",
        antirelayd_module=kv.get("module.antirelayd") == "1",
        config=config,
        gate_file=kv.get("file.popbeforesmtp") == "1",
        senders_warning_file=kv.get("file.eximpopbeforesmtpwarning") == "1",
        markers=frozenset(m for m in MARKERS if kv.get(f"marker.{m.rsplit('/', 1)[1]}") == "1"),
        lists={k: _listfile(kv, f"list.{k}", p) for k, p in LISTS.items()},
        exceptions={k: _listfile(kv, f"exc.{k}", p) for k, p in EXCEPTIONS.items()},
        tailwatchd_status_rc=_int(kv.get("tailwatchd.status.rc")),
        tailwatchd_status=_unhex(kv.get("tailwatchd.status.hex", "")),
        exim_status_rc=_int(kv.get("exim.status.rc")),
        exim_status=kv.get("exim.status.text") or _unhex(kv.get("exim.status.hex", "")),
        exim_bv_rc=_int(kv.get("exim.bv.rc")),
        queue=_queue(kv),
        reject_text=_unhex(kv.get("eximrejects.hex", "")),
        local_domain=kv.get("localdomain", ""),
        smtp_restrictions=_smtp_restrictions(kv),
        indicators={k: n for k in INDICATORS if (n := _int(kv.get(f"indicator.{k}"))) is not None},
        signals=Signals(since=kv.get("signals.since", ""), send_limit_hits=_int(kv.get("signals.send_limit")),
                        relay_rejects=_int(kv.get("signals.relay_reject")), partial=kv.get("signals.partial") == "1"),
    )


STATUS_DRIVER = re.compile(r"^  Driver \(Active: ([01])\) (Cpanel::TailWatch::\S+)$")


def parse_tailwatchd_status(text: str) -> tuple[bool | None, bool | None, dict[str, bool]]:
    """(daemon enabled, daemon running, {driver: active}) from ``tailwatchd --status``."""
    enabled: bool | None = None
    running: bool | None = None
    drivers: dict[str, bool] = {}
    for line in text.splitlines():
        if line == "tailwatchd is enabled":
            enabled = True
        elif line == "tailwatchd is disabled":
            enabled = False
        elif line.startswith("Running, PID "):
            running = True
        elif line == "Not running":
            running = False
        elif m := STATUS_DRIVER.match(line):
            drivers[m.group(2).rsplit("::", 1)[1]] = m.group(1) == "1"
    return enabled, running, drivers
