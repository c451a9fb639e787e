"""Where cPanel and Exim keep what RelayGuard reads and changes (cpanel.md §1, §5).

Every path a probe, fix or revert script names comes from here: fixed text, never taken from the
server. The lab serves its simulated tools at these same paths.
"""

from __future__ import annotations

CPANEL = "/usr/local/cpanel"
VERSION = f"{CPANEL}/version"
WHMAPI1 = f"{CPANEL}/bin/whmapi1"
#: tailwatchd moved from bin/ to libexec/ in 11.52, which is also how the generation shows.
MODERN_TAILWATCHD = f"{CPANEL}/libexec/tailwatchd"
LEGACY_TAILWATCHD = f"{CPANEL}/bin/tailwatchd"
#: One ``<Driver>.pm`` per installed tailwatchd driver: the drivers ``tailwatchd --status`` lists.
TAILWATCH_DRIVERS = f"{CPANEL}/Cpanel/TailWatch"
TAILWATCHD_PIDFILE = "/var/run/tailwatchd.pid"
TRACKER_MODULE = f"{CPANEL}/Cpanel/TailWatch/RecentAuthedMailIpTracker.pm"
ANTIRELAYD_MODULE = f"{CPANEL}/Cpanel/TailWatch/Antirelayd.pm"
UPDATE_EXIM_REJECTS = f"{CPANEL}/scripts/update_exim_rejects"
RESTARTSRV_EXIM = f"{CPANEL}/scripts/restartsrv_exim"
RESTARTSRV_TAILWATCHD = f"{CPANEL}/scripts/restartsrv_tailwatchd"
SMTPMAILGIDONLY = f"{CPANEL}/scripts/smtpmailgidonly"
CPANEL_CONFIG = "/var/cpanel/cpanel.config"

#: The file whose presence opens POP-before-SMTP relaying on modern servers.
GATE_FILE = "/etc/popbeforesmtp"
SENDERS_WARNING_FILE = "/etc/eximpopbeforesmtpwarning"
RELAYHOSTS = "/etc/relayhosts"
RELAYHOSTSUSERS = "/etc/relayhostsusers"
LISTS = {
    "recent_authed_mail_ips": "/etc/recent_authed_mail_ips",
    "recent_authed_mail_ips_users": "/etc/recent_authed_mail_ips_users",
    "relayhosts": RELAYHOSTS,
    "relayhostsusers": RELAYHOSTSUSERS,
}
EXCEPTIONS = {
    "alwaysrelay": "/etc/alwaysrelay",
    "trustedmailhosts": "/etc/trustedmailhosts",
    "skipsmtpcheckhosts": "/etc/skipsmtpcheckhosts",
}
#: ``/etc/<driver>disable`` and ``/etc/<driver>isevil`` switch a tailwatchd driver off (cpanel.md §2).
MARKERS = tuple(f"/etc/{d}{m}" for d in ("recentauthedmailiptracker", "antirelayd", "tailwatchd")
                for m in ("disable", "isevil"))

EXIM = "/usr/sbin/exim"
EXIM_CONF = "/etc/exim.conf"
#: Where the Exim daemon writes its PID: systemd hosts, then older init-script hosts (cpanel.md §2).
EXIM_PIDFILES = ("/var/spool/exim/exim-daemon.pid", "/var/run/exim.pid")
#: Exim's spool: one ``<id>-H`` header file per queued message, in ``input/`` or its split subdirectories.
EXIM_SPOOL_INPUT = "/var/spool/exim/input"
#: Present = SMTP Restrictions on; ``smtpmailgidonly status`` reports exactly this (cpanel.md §2, M23).
SMTPGIDONLY_TWEAK = "/var/cpanel/smtpgidonlytweak"
EXIM_MAINLOG = "/var/log/exim_mainlog"
EXIMREJECTS = "/etc/eximrejects"
LOCALDOMAINS = "/etc/localdomains"
