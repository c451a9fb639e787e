"""What a simulated host looks like: profile, relay state, seeded data and failure switches."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PROFILES = ("modern", "legacy", "not-cpanel", "unknown")

#: Failure switches of cpanel.md §9, as flag files under /etc/sim/fail/ on the host.
#: ``slow_<tool>`` (value: seconds) is accepted for every simulated tool as well.
SWITCHES = frozenset(
    {
        "no_tailwatchd",
        "nonroot",
        "exim_restart_fail_once",
        "exim_restart_fail",
        "exim_down_at_start",
        "exim_bad_config",
        "tailwatchd_not_running",
        "tailwatchd_globally_disabled",
        "stale_repopulate",
        "whmapi_fail",
        "hang",
        "no_timeout",
        "tweak_breaks_auth",
    }
)

VERSIONS = {"modern": "11.120.0.16", "legacy": "11.46.0.10", "unknown": "11.120.0.16"}

#: The unprivileged login every host has; ``sudo=True`` gives it passwordless sudo.
NONROOT_USER = "cpuser"
NONROOT_UID = 4242


@dataclass(frozen=True)
class Login:
    """A POP/IMAP login the tracker saw: it puts ``ip`` on the relay list for ``users``."""

    ip: str
    users: tuple[str, ...] = ()


@dataclass(frozen=True)
class HostSpec:
    """Everything that makes one simulated host differ from another.

    ``exposed`` picks the relay state: on a modern host the ``popbeforesmtp`` gate is open, on a
    legacy host Antirelayd is active with a populated ``/etc/relayhosts``. ``logins=None`` seeds the
    lab's default logins (one loopback source the tests can bind to, plus documentation-range IPs).
    """

    profile: str = "modern"
    exposed: bool = True
    logins: tuple[Login, ...] | None = None
    alwaysrelay: tuple[str, ...] = ()
    trustedmailhosts: tuple[str, ...] = ()
    skipsmtpcheckhosts: tuple[str, ...] = ()
    queue_size: int = 0
    mainlog_lines: tuple[str, ...] = ()
    maillog_lines: tuple[str, ...] = ()
    switches: dict[str, str] = field(default_factory=dict)
    sudo: bool = False
    popbeforesmtp_drift: bool = False
    #: The tracker keeps re-adding seeded logins while its driver runs (cpanel.md §9 ``stale_repopulate``).
    tracker_repopulates: bool = True
    #: Deliverability cases (names in ``lab.maildomains.cases()``) whose domains the host serves: seeds
    #: /etc/userdomains, /etc/mailips, /etc/mailhelo, /var/cpanel/mainip and the DKIM public keys (issue 20).
    mail_cases: tuple[str, ...] = ()
    #: Exim Configuration Manager options on (touch files ``/var/cpanel/<option>``) for those files; None:
    #: as ``updateuserdomains`` leaves them with per-domain mail IPs on (``per_domain_mailips``).
    mail_options: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.profile not in PROFILES:
            raise ValueError(f"unknown profile {self.profile!r}; expected one of {', '.join(PROFILES)}")
        for name in self.switches:
            if name not in SWITCHES and not name.startswith("slow_"):
                raise ValueError(f"unknown failure switch {name!r}")
        if self.mail_cases and self.profile == "not-cpanel":
            raise ValueError("mail_cases need a cPanel profile")

    @property
    def generation(self) -> str:
        """The generation the host's *paths* follow (the unknown profile has legacy paths)."""
        return {"modern": "modern", "legacy": "legacy", "unknown": "legacy"}.get(self.profile, "none")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostSpec:
        data = dict(data)
        if data.get("logins") is not None:
            data["logins"] = tuple(Login(d["ip"], tuple(d["users"])) for d in data["logins"])
        for key in ("alwaysrelay", "trustedmailhosts", "skipsmtpcheckhosts", "mainlog_lines", "maillog_lines",
                    "mail_cases"):
            data[key] = tuple(data.get(key, ()))
        if data.get("mail_options") is not None:
            data["mail_options"] = tuple(data["mail_options"])
        return cls(**data)
