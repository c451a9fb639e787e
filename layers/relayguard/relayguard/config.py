"""Settings of the Lambda functions: read once, at cold start, from the environment.

Every variable is public interface (template.yaml sets them; docs/deploy.md documents them). A
missing required variable fails the cold start with the variable's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from relayguard.domain.collect import resolver_setting
from relayguard.domain.models import Mode
from relayguard.domain.rollout import EXCLUDE_TAG, ErrorBudget, MaintenanceWindow, Rollout
from relayguard.errors import InvalidInput, RelayGuardError

ENV_INVENTORY_BUCKET = "RG_INVENTORY_BUCKET"  # required (planner, alert intake)
ENV_INVENTORY_KEY = "RG_INVENTORY_KEY"  # default: inventory.json
ENV_WORK_QUEUE_URL = "RG_WORK_QUEUE_URL"  # required (planner, worker)
ENV_URGENT_QUEUE_URL = "RG_URGENT_QUEUE_URL"  # required (alert intake, worker)
ENV_RUNS_TABLE = "RG_RUNS_TABLE"  # required
ENV_STATE_TABLE = "RG_STATE_TABLE"  # required (worker)
ENV_LOCKS_TABLE = "RG_LOCKS_TABLE"  # required (worker)
ENV_IDEMPOTENCY_TABLE = "RG_IDEMPOTENCY_TABLE"  # required (alert intake)
ENV_TOPIC_ARN = "RG_TOPIC_ARN"  # required
ENV_SSH_KEY_SECRET = "RG_SSH_KEY_SECRET"  # noqa: S105 - a variable name; default: relayguard/ssh-key
ENV_SSH_USER = "RG_SSH_USER"  # default: root
ENV_USE_SUDO = "RG_USE_SUDO"  # default: false
ENV_SWEEP_MODE = "RG_SWEEP_MODE"  # default: audit
ENV_ALERT_MODE = "RG_ALERT_MODE"  # default: fix
ENV_DISABLE_TRACKER = "RG_DISABLE_TRACKER"  # default: false
ENV_COMMAND_TIMEOUT = "RG_COMMAND_TIMEOUT"  # default: 60 (seconds)
ENV_LOCK_TTL_SECONDS = "RG_LOCK_TTL_SECONDS"  # default: 900
ENV_LOCK_RETRY_SECONDS = "RG_LOCK_RETRY_SECONDS"  # default: 30 (SQS DelaySeconds, at most 900)
ENV_DEDUP_WINDOW_SECONDS = "RG_DEDUP_WINDOW_SECONDS"  # default: 3600
ENV_MAX_RECEIVE_COUNT = "RG_MAX_RECEIVE_COUNT"  # default: 5 (must equal the queues' maxReceiveCount)
ENV_SAFETY_MARGIN_MS = "RG_SAFETY_MARGIN_MS"  # default: 90000
# Rollout limits of a sweep run (the planner stores them on the run record; docs/operations.md,
# "Rolling out fix mode"). ``unlimited`` is the explicit "no limit": 0 is a real limit for MaxChanges.
ENV_MAX_CHANGES = "RG_MAX_CHANGES"  # default: unlimited (or a count of servers a run may change)
ENV_MAX_ERRORS = "RG_MAX_ERRORS"  # default: unlimited (or a count, 2, or a percentage of the run, 10%)
ENV_CANARY_SIZE = "RG_CANARY_SIZE"  # default: 0 (no canary)
ENV_MAINTENANCE_WINDOW = "RG_MAINTENANCE_WINDOW"  # default: empty (fix sweeps at any time)
ENV_EXCLUDE_TAG = "RG_EXCLUDE_TAG"  # default: relayguard:exclude
ENV_RECORDS_BUCKET = "RG_RECORDS_BUCKET"  # required (worker): every job's record, written once
# The deliverability scan's DNS resolver (issue 20): IP or IP:PORT; empty: the function's own; "off": collect only.
ENV_DNS_RESOLVER = "RG_DNS_RESOLVER"  # default: empty; template parameter DnsResolver
ENV_CHAT_TOPIC_ARN = "RG_CHAT_TOPIC_ARN"  # default: empty (no chat copies); template parameter ChatNotifications
#: Powertools' own variable (template Globals); read here too because the metric documents written at once
#: (those with dimensions of their own) are built outside the handler's Metrics and need it said.
ENV_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
METRICS_NAMESPACE = "RelayGuard"

ALL_VARIABLES = (
    ENV_INVENTORY_BUCKET, ENV_INVENTORY_KEY, ENV_WORK_QUEUE_URL, ENV_URGENT_QUEUE_URL, ENV_RUNS_TABLE,
    ENV_STATE_TABLE, ENV_LOCKS_TABLE, ENV_IDEMPOTENCY_TABLE, ENV_TOPIC_ARN, ENV_SSH_KEY_SECRET, ENV_SSH_USER,
    ENV_USE_SUDO, ENV_SWEEP_MODE, ENV_ALERT_MODE, ENV_DISABLE_TRACKER, ENV_COMMAND_TIMEOUT, ENV_LOCK_TTL_SECONDS,
    ENV_LOCK_RETRY_SECONDS, ENV_DEDUP_WINDOW_SECONDS, ENV_MAX_RECEIVE_COUNT, ENV_SAFETY_MARGIN_MS, ENV_MAX_CHANGES,
    ENV_MAX_ERRORS, ENV_CANARY_SIZE, ENV_MAINTENANCE_WINDOW, ENV_EXCLUDE_TAG, ENV_RECORDS_BUCKET,
    ENV_CHAT_TOPIC_ARN, ENV_DNS_RESOLVER,
)
#: The value of ``RG_MAX_CHANGES`` and ``RG_MAX_ERRORS`` that sets no limit.
UNLIMITED = "unlimited"


class ConfigError(RelayGuardError):
    """A setting is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    """The functions' configuration, read once from the environment by :func:`load_settings`."""

    inventory_bucket: str
    inventory_key: str
    work_queue_url: str
    urgent_queue_url: str
    runs_table: str
    state_table: str
    locks_table: str
    idempotency_table: str
    topic_arn: str
    ssh_key_secret: str
    ssh_user: str
    use_sudo: bool
    sweep_mode: Mode
    alert_mode: Mode
    disable_tracker: bool
    command_timeout: float
    lock_ttl_seconds: int
    lock_retry_seconds: int
    dedup_window_seconds: int
    max_receive_count: int
    safety_margin_ms: int
    #: A sweep run's limits (an alert's run of one server has none: docs/operations.md).
    rollout: Rollout = field(default_factory=Rollout)
    #: Outside it, a fix sweep only audits; None: fix sweeps at any time.
    maintenance_window: MaintenanceWindow | None = None
    exclude_tag: str = EXCLUDE_TAG
    #: The bucket of job records (docs/operations.md, The record of every job).
    records_bucket: str = ""
    #: The topic AWS Chatbot reads: every notification is also published there as a Chatbot custom
    #: notification (docs/deploy.md, Chat notifications). None: no chat copies.
    chat_topic_arn: str | None = None
    #: The deliverability scan's resolver: ``IP[:PORT]``, ``off`` for none; None: the function's own.
    dns_resolver: str | None = None
    #: The CloudWatch namespace of every metric the functions emit.
    metrics_namespace: str = METRICS_NAMESPACE


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes"):
        return True
    if lowered in ("0", "false", "no", ""):
        return False
    raise ConfigError(f"{name}: expected true or false, got {value!r}")


def _int(name: str, value: str, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"{name}: expected an integer, got {value!r}") from None
    if number < minimum:
        raise ConfigError(f"{name}: must be at least {minimum}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{name}: must be at most {maximum}")
    return number


def _mode(name: str, value: str) -> Mode:
    try:
        return Mode(value.strip().lower())
    except ValueError:
        raise ConfigError(f"{name}: expected audit or fix, got {value!r}") from None


def _rollout(max_changes: str, max_errors: str, canary: str) -> Rollout:
    changes = None if max_changes.lower() == UNLIMITED else _int(ENV_MAX_CHANGES, max_changes, 0)
    try:
        budget = None if max_errors.lower() == UNLIMITED else ErrorBudget.parse(max_errors)
    except InvalidInput as exc:
        raise ConfigError(f"{ENV_MAX_ERRORS}: {exc} (or {UNLIMITED})") from None
    return Rollout(max_changes=changes, max_errors=budget, canary=_int(ENV_CANARY_SIZE, canary, 0))


def _window(text: str) -> MaintenanceWindow | None:
    if not text:
        return None
    try:
        return MaintenanceWindow.parse(text)
    except InvalidInput as exc:
        raise ConfigError(f"{ENV_MAINTENANCE_WINDOW}: {exc}") from None


def _resolver(text: str) -> str:
    try:
        return resolver_setting(text)
    except InvalidInput as exc:
        raise ConfigError(f"{ENV_DNS_RESOLVER}: {exc}") from None


def load_settings(environ: Mapping[str, str]) -> Settings:
    """Validated settings from ``environ``; :class:`ConfigError` names the first missing or malformed variable."""

    def required(name: str) -> str:
        value = environ.get(name, "").strip()
        if not value:
            raise ConfigError(f"{name} is not set")
        return value

    def optional(name: str, default: str) -> str:
        return environ.get(name, default).strip() or default

    return Settings(
        inventory_bucket=required(ENV_INVENTORY_BUCKET),
        inventory_key=optional(ENV_INVENTORY_KEY, "inventory.json"),
        work_queue_url=required(ENV_WORK_QUEUE_URL),
        urgent_queue_url=required(ENV_URGENT_QUEUE_URL),
        runs_table=required(ENV_RUNS_TABLE),
        state_table=required(ENV_STATE_TABLE),
        locks_table=required(ENV_LOCKS_TABLE),
        idempotency_table=required(ENV_IDEMPOTENCY_TABLE),
        topic_arn=required(ENV_TOPIC_ARN),
        ssh_key_secret=optional(ENV_SSH_KEY_SECRET, "relayguard/ssh-key"),
        ssh_user=optional(ENV_SSH_USER, "root"),
        use_sudo=_bool(ENV_USE_SUDO, optional(ENV_USE_SUDO, "false")),
        sweep_mode=_mode(ENV_SWEEP_MODE, optional(ENV_SWEEP_MODE, "audit")),
        alert_mode=_mode(ENV_ALERT_MODE, optional(ENV_ALERT_MODE, "fix")),
        disable_tracker=_bool(ENV_DISABLE_TRACKER, optional(ENV_DISABLE_TRACKER, "false")),
        command_timeout=float(_int(ENV_COMMAND_TIMEOUT, optional(ENV_COMMAND_TIMEOUT, "60"), 1)),
        lock_ttl_seconds=_int(ENV_LOCK_TTL_SECONDS, optional(ENV_LOCK_TTL_SECONDS, "900"), 60),
        lock_retry_seconds=_int(ENV_LOCK_RETRY_SECONDS, optional(ENV_LOCK_RETRY_SECONDS, "30"), 0, 900),
        dedup_window_seconds=_int(ENV_DEDUP_WINDOW_SECONDS, optional(ENV_DEDUP_WINDOW_SECONDS, "3600"), 1),
        max_receive_count=_int(ENV_MAX_RECEIVE_COUNT, optional(ENV_MAX_RECEIVE_COUNT, "5"), 1),
        safety_margin_ms=_int(ENV_SAFETY_MARGIN_MS, optional(ENV_SAFETY_MARGIN_MS, "90000"), 0),
        rollout=_rollout(optional(ENV_MAX_CHANGES, UNLIMITED), optional(ENV_MAX_ERRORS, UNLIMITED),
                         optional(ENV_CANARY_SIZE, "0")),
        maintenance_window=_window(optional(ENV_MAINTENANCE_WINDOW, "")),
        exclude_tag=optional(ENV_EXCLUDE_TAG, EXCLUDE_TAG),
        records_bucket=required(ENV_RECORDS_BUCKET),
        chat_topic_arn=environ.get(ENV_CHAT_TOPIC_ARN, "").strip() or None,
        dns_resolver=_resolver(environ.get(ENV_DNS_RESOLVER, "").strip()) or None,
        metrics_namespace=optional(ENV_METRICS_NAMESPACE, METRICS_NAMESPACE),
    )
