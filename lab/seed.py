"""Render a host's pristine files: the overlay's upper layer, at the real absolute paths.

The seed directory mirrors ``/``: ``seed/etc/relayhosts`` becomes ``/etc/relayhosts`` inside the
host. The namespace init copies it onto a fresh tmpfs at every start, so a restart is a reset.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from lab import maildomains
from lab.exim import EXIM_CONF, TLS_DIR, EximSite, render_exim_conf
from lab.sim.simlib import eximrejects_text
from lab.spec import NONROOT_UID, NONROOT_USER, VERSIONS, HostSpec, Login

SIM_SOURCE = Path(__file__).parent / "sim"
MAINIP = "/var/cpanel/mainip"
SIM_DIR = "/opt/cpanel-sim"

MODERN_DRIVERS = ("ChkServd", "Cpbandwd", "Eximstats", "JailManager", "ModSecLog", "RecentAuthedMailIpTracker")
LEGACY_DRIVERS = ("ChkServd", "Cpbandwd", "Eximstats", "Antirelayd")

ROOT_TOOLS = {
    "whmapi1": "usr/local/cpanel/bin/whmapi1",
    "restartsrv_exim": "usr/local/cpanel/scripts/restartsrv_exim",
    "restartsrv_tailwatchd": "usr/local/cpanel/scripts/restartsrv_tailwatchd",
    "update_exim_rejects": "usr/local/cpanel/scripts/update_exim_rejects",
}
USER_TOOLS = {"smtpmailgidonly": "usr/local/cpanel/scripts/smtpmailgidonly"}

@dataclass(frozen=True)
class Identity:
    """Where a host lives and how it is reached: fixed by the lab, not by the scenario."""

    name: str
    address: str
    domain: str
    journal_socket: str
    host_key: Path  # private key file; ``.pub`` beside it
    client_public_key: str
    tls_dir: Path

    @property
    def hostname(self) -> str:
        return f"{self.name}.lab.test"


class _Tree:
    def __init__(self, root: Path) -> None:
        self.root = root

    def write(self, rel: str, text: str, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.write_text(text)
        os.chown(path, *owner)
        os.chmod(path, mode)

    def mkdir(self, rel: str, mode: int = 0o755, owner: tuple[int, int] = (0, 0)) -> None:
        path = self.root / rel
        path.mkdir(parents=True, exist_ok=True, mode=0o755)
        os.chown(path, *owner)
        os.chmod(path, mode)

    def symlink(self, rel: str, target: str) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        path.symlink_to(target)

    def whiteout(self, rel: str) -> None:
        """Hide a file of the machine's root inside the host (an overlayfs whiteout)."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def default_logins(net: int, domain: str) -> tuple[Login, ...]:
    """One loopback source a test client can bind to, plus two documentation-range addresses."""
    return (
        Login(f"127.{net}.250.10", (f"alice@{domain}",)),
        Login("203.0.113.7", (f"bob@{domain}",)),
        Login("198.51.100.23", (f"carol@{domain}", f"dave@{domain}")),
    )


def _ip_of(entry: str) -> str:
    return entry.replace("=", ":").split(":", 1)[0].strip()


def _tool_script(tool: str) -> str:
    return (
        "#!/usr/bin/python3 -IS\n"
        f'import sys; sys.path.insert(0, "{SIM_DIR}"); import simlib; sys.exit(simlib.main("{tool}"))\n'
    )


def _cpanel_config(spec: HostSpec) -> str:
    on = spec.exposed or spec.popbeforesmtp_drift
    keys = {
        "popbeforesmtp": "1" if (on and spec.generation == "modern") else "0",
        "popbeforesmtpsenders": "0",
        "skiptailwatchd": "1" if "tailwatchd_globally_disabled" in spec.switches else "0",
        "maxemailsperhour": "",
        "smtpmailgidonly": "1",
        "email_outbound_spam_detect_enable": "1",
        "email_outbound_spam_detect_threshold": "500",
    }
    if spec.generation == "modern":
        keys["skiprecentauthedmailiptracker"] = "0"
    else:
        keys["skipantirelayd"] = "0" if spec.exposed else "1"
    return "".join(f"{k}={v}\n" for k, v in keys.items())


def render_seed(seed: Path, spec: HostSpec, ident: Identity, net: int) -> None:
    """Write the host's pristine upper layer into ``seed`` (which must not exist yet)."""
    tree = _Tree(seed)
    seed.mkdir(mode=0o755)
    exim_uid = pwd.getpwnam("Debian-exim").pw_uid
    exim_gid = grp.getgrnam("Debian-exim").gr_gid
    logins = spec.logins if spec.logins is not None else default_logins(net, ident.domain)
    cpanel = spec.profile != "not-cpanel"

    _write_sim(tree, spec, ident, logins)
    _write_logins(tree, spec, ident)
    _write_exim(tree, spec, ident, exim_uid, exim_gid)
    if cpanel:
        _write_cpanel(tree, spec, ident, logins)
        _write_mail(tree, spec, net)
    if "no_timeout" in spec.switches:
        tree.whiteout("usr/bin/timeout")


def _write_sim(tree: _Tree, spec: HostSpec, ident: Identity, logins: tuple[Login, ...]) -> None:
    host = {
        "name": ident.name,
        "address": ident.address,
        "profile": spec.profile,
        "journal_socket": ident.journal_socket,
        "version": VERSIONS.get(spec.profile, ""),
    }
    tree.write("etc/sim/host.json", json.dumps(host, indent=1) + "\n")
    tree.write("etc/sim/seed_ips", "".join(_login_line(lg) for lg in logins))
    tree.mkdir("etc/sim/fail")
    switches = dict(spec.switches)
    if spec.tracker_repopulates and spec.profile != "not-cpanel":
        switches.setdefault("stale_repopulate", "")
    for name, value in switches.items():
        tree.write(f"etc/sim/fail/{name}", value)
    tree.mkdir("var/lib/cpanel-sim")
    tree.mkdir(SIM_DIR.lstrip("/") + "/bin")
    for source in sorted(SIM_SOURCE.glob("*.py")):
        tree.write(f"{SIM_DIR.lstrip('/')}/{source.name}", source.read_text())
    tree.symlink(SIM_DIR.lstrip("/") + "/bin/tailwatchd", "/bin/sleep")
    # The real Exim stays at /usr/sbin/exim4; /usr/sbin/exim (cPanel's path) journals, then execs it.
    tree.write("usr/sbin/exim", _tool_script("exim"), mode=0o755)


def _login_line(login: Login) -> str:
    return f"{login.ip}: {', '.join(login.users)}\n" if login.users else f"{login.ip}\n"


def _write_logins(tree: _Tree, spec: HostSpec, ident: Identity) -> None:
    pub = ident.host_key.with_suffix(".pub")
    tree.write("etc/ssh/ssh_host_ed25519_key", ident.host_key.read_text(), mode=0o600)
    tree.write("etc/ssh/ssh_host_ed25519_key.pub", pub.read_text())
    tree.write(
        "etc/ssh/sshd_config",
        f"""# RelayGuard lab host {ident.name}
ListenAddress {ident.address}:22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
PrintMotd no
MaxStartups 200:30:400
LogLevel VERBOSE
""",
    )
    # Root gets its own home: the machine's ~/.bashrc would run pyenv on every SSH command.
    tree.mkdir("root", mode=0o700)
    tree.write("root/.bashrc", "")
    tree.write("root/.profile", "")
    tree.write("root/.ssh/authorized_keys", ident.client_public_key, mode=0o600)
    uid = NONROOT_UID
    tree.mkdir(f"home/{NONROOT_USER}", mode=0o755, owner=(uid, uid))
    tree.mkdir(f"home/{NONROOT_USER}/.ssh", mode=0o700, owner=(uid, uid))
    tree.write(f"home/{NONROOT_USER}/.ssh/authorized_keys", ident.client_public_key, 0o600, (uid, uid))
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    shadow = Path("/etc/shadow").read_text()
    tree.write("etc/passwd", passwd + f"{NONROOT_USER}:x:{uid}:{uid}::/home/{NONROOT_USER}:/bin/bash\n")
    tree.write("etc/group", group + f"{NONROOT_USER}:x:{uid}:\n")
    shadow_gid = grp.getgrnam("shadow").gr_gid
    # A '!' password field means "locked" to sshd without PAM; '*' means "no password, keys only".
    tree.write("etc/shadow", shadow + f"{NONROOT_USER}:*:20000:0:99999:7:::\n", 0o640, (0, shadow_gid))
    if spec.sudo:
        tree.write(f"etc/sudoers.d/{NONROOT_USER}", f"{NONROOT_USER} ALL=(ALL) NOPASSWD: ALL\n", mode=0o440)


def _write_exim(tree: _Tree, spec: HostSpec, ident: Identity, exim_uid: int, exim_gid: int) -> None:
    site = EximSite(ident.hostname, ident.address, ident.domain, spec.generation)
    tree.write(EXIM_CONF.lstrip("/"), render_exim_conf(site))
    # Debian's exim4 reads /etc/exim4/exim4.conf first: point it at cPanel's path.
    tree.symlink("etc/exim4/exim4.conf", EXIM_CONF)
    tree.write(f"{TLS_DIR.lstrip('/')}/cert.pem", (ident.tls_dir / "cert.pem").read_text())
    tree.write(f"{TLS_DIR.lstrip('/')}/key.pem", (ident.tls_dir / "key.pem").read_text(), 0o640, (0, exim_gid))
    tree.write("etc/localdomains", f"{ident.domain}\n")
    tree.mkdir("var/spool/exim", mode=0o750, owner=(exim_uid, exim_gid))
    mainlog = "".join(f"{line}\n" for line in spec.mainlog_lines)
    for log, text in (("mainlog", mainlog), ("rejectlog", ""), ("paniclog", "")):
        tree.write(f"var/log/exim_{log}", text, 0o640, (exim_uid, exim_gid))
    maillog = "".join(f"{line}\n" for line in spec.maillog_lines)
    tree.write("var/log/maillog", maillog)


def _write_cpanel(tree: _Tree, spec: HostSpec, ident: Identity, logins: tuple[Login, ...]) -> None:
    modern_paths = spec.generation == "modern"
    tree.write("usr/local/cpanel/version", VERSIONS[spec.profile] + "\n")
    tree.symlink("scripts", "/usr/local/cpanel/scripts")
    for driver in MODERN_DRIVERS if modern_paths else LEGACY_DRIVERS:
        tree.write(f"usr/local/cpanel/Cpanel/TailWatch/{driver}.pm", "1;\n")
    tree.write("usr/local/cpanel/Cpanel/TailWatch/Utils/EnableDisable.pm", "1;\n")
    if "no_tailwatchd" not in spec.switches:
        path = "usr/local/cpanel/libexec/tailwatchd" if modern_paths else "usr/local/cpanel/bin/tailwatchd"
        tree.write(path, _tool_script("tailwatchd"), mode=0o700)
    for tool, path in ROOT_TOOLS.items():
        tree.write(path, _tool_script(tool), mode=0o700)
    for tool, path in USER_TOOLS.items():
        tree.write(path, _tool_script(tool), mode=0o755)
    tree.mkdir("usr/local/cpanel/logs")
    tree.write("usr/local/cpanel/logs/tailwatchd_log", "")

    tree.write("var/cpanel/cpanel.config", _cpanel_config(spec))
    tree.write("var/cpanel/smtpgidonlytweak", "")
    gate_open = spec.exposed and modern_paths
    if gate_open:
        tree.write("etc/popbeforesmtp", "")
    tree.write("etc/eximrejects", eximrejects_text(spec.exposed or spec.popbeforesmtp_drift))
    tree.write("etc/exim.conf.localopts", "require_secure_auth=1\nsmarthost_routelist=\n")
    tree.write("etc/chkserv.d/chkservd.conf", "exim:1\ntailwatchd:1\n")
    tree.write("etc/alwaysrelay", "".join(f"{e}\n" for e in spec.alwaysrelay))
    tree.write("etc/trustedmailhosts", "".join(f"{e}\n" for e in spec.trustedmailhosts))
    tree.write("etc/skipsmtpcheckhosts", "".join(f"{e}\n" for e in spec.skipsmtpcheckhosts))
    tree.write(
        "etc/antirelayd.conf",
        "expire_host_mins=30\nrecent_authed_mail_ips=1\nrecent_authed_mail_ips_users=1\nalwaysrelay=1\n",
    )

    # What the tracker last wrote: the seeded logins merged with /etc/alwaysrelay (cpanel.md §9).
    tracked = spec.exposed or modern_paths
    ips = [lg.ip for lg in logins] if tracked else []
    ips += [_ip_of(e) for e in spec.alwaysrelay if _ip_of(e) not in ips]
    users = [lg for lg in logins if lg.users] if tracked else []
    if modern_paths:
        tree.write("etc/recent_authed_mail_ips", "".join(f"{ip}\n" for ip in ips))
        tree.write("etc/recent_authed_mail_ips_users", "".join(_login_line(lg) for lg in users))
        # The modern tracker turns the legacy names into symlinks on its first write.
        tree.symlink("etc/relayhosts", "/etc/recent_authed_mail_ips")
        tree.symlink("etc/relayhostsusers", "/etc/recent_authed_mail_ips_users")
    else:
        tree.write("etc/relayhosts", "".join(f"{ip}\n" for ip in ips))
        tree.write("etc/relayhostsusers", "".join(f"{lg.ip} {u}\n" for lg in users for u in lg.users))
    maillog = "".join(
        f"Nov 25 09:00:00 {ident.hostname} dovecot: imap-login: Login: user=<{u}>, method=PLAIN, "
        f"rip={lg.ip}, lip={ident.address}, mpid=4242, session=<lab>\n"
        for lg in logins
        for u in lg.users
    )
    tree.write("var/log/maillog", maillog + "".join(f"{line}\n" for line in spec.maillog_lines))


#: The Exim Configuration Manager options the collector reads (cPanel's touch files under /var/cpanel).
MAIL_OPTIONS = ("per_domain_mailips", "custom_mailips", "custom_mailhelo", "use_rdns_for_helo")


def _write_mail(tree: _Tree, spec: HostSpec, net: int) -> None:
    """The deliverability files of ``spec.mail_cases`` at cPanel's paths, from lab.maildomains' one table."""
    if not spec.mail_cases:
        return
    files = maildomains.host_files(net, tuple(maildomains.case(name) for name in spec.mail_cases))
    files[MAINIP] = maildomains.sending_ip(net, maildomains.IP_MAIN) + "\n"
    if spec.mail_options is not None:
        files = {p: t for p, t in files.items() if p.rsplit("/", 1)[-1] not in MAIL_OPTIONS}
        files.update({f"/var/cpanel/{option}": "" for option in spec.mail_options})
    for path, text in files.items():
        # /etc/userdomains is root's alone on cPanel (0640 root:mail); the public keys are world-readable.
        tree.write(path.lstrip("/"), text, mode=0o640 if path == "/etc/userdomains" else 0o644)


def remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
