"""Typed models of every event RelayGuard's functions accept (Powertools Parser / pydantic).

Validation errors name the field, so a malformed event is rejected with a precise message.
"""

from __future__ import annotations

import ipaddress
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from relayguard.domain.models import Mode

JOB_SCHEMA = "relayguard.job/v1"
ALERT_SCHEMA = "relayguard.alert/v1"
ALERT_EVENT_SOURCE = "relayguard.alerts"
ALERT_DETAIL_TYPE = "Spam Alert"

AlertSource = Literal["cpanel_icontact", "csf_rt", "dnsbl", "abuse_report", "queue_alarm", "cloudwatch_alarm",
                      "manual"]
AlertKind = Literal["spammers_detected", "hourly_limit", "send_limit", "pop_before_smtp_enabled", "relay_tracking",
                    "dnsbl_listing", "abuse_report", "queue_size", "alarm"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class AlertHost(_Strict):
    hostname: str | None = Field(default=None, max_length=253)
    public_ip: str | None = None
    instance_id: str | None = Field(default=None, pattern=r"^i-[0-9a-f]{8,17}$")
    region: str | None = Field(default=None, max_length=32)

    @field_validator("public_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is not None:
            ipaddress.ip_address(value)
        return value

    @model_validator(mode="after")
    def _identified(self) -> AlertHost:
        if not (self.hostname or self.public_ip or self.instance_id):
            raise ValueError("host needs at least one of hostname, public_ip, instance_id")
        return self

    def identities(self) -> list[str]:
        return [x for x in (self.hostname, self.public_ip, self.instance_id) if x]


class SpamAlert(_Strict):
    """The normalised alert (cpanel.md §8): one shape for every source."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["relayguard.alert/v1"] = Field(alias="schema")
    alert_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:-]+$")
    source: AlertSource
    kind: AlertKind
    observed_at: datetime
    received_at: datetime | None = None
    severity: Literal["info", "warning", "critical"] = "warning"
    host: AlertHost
    subject: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    evidence: dict[str, Any] = Field(default_factory=dict)
    raw: dict[str, Any] | str | None = None


class JobServer(_Strict):
    name: str = Field(min_length=1, max_length=128)
    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=22, ge=1, le=65535)
    user: str = Field(default="root", min_length=1, max_length=32)
    host_keys: tuple[str, ...] = ()


class Job(_Strict):
    """One server for the worker (an SQS message body)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    schema_: Literal["relayguard.job/v1"] = Field(alias="schema")
    run_id: str = Field(min_length=1, max_length=64)
    job_id: str = Field(min_length=1, max_length=64)
    mode: Mode
    trigger: Literal["sweep", "alert"]
    alert_id: str | None = None
    enqueued_at: datetime
    server: JobServer

    def body(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), separators=(",", ":"))


class SweepDetail(BaseModel):
    """``detail`` of the scheduled event; ``mode`` lets an operator run a one-off sweep by hand."""

    model_config = ConfigDict(extra="allow")

    mode: Mode | None = None


class AlarmTrigger(BaseModel):
    model_config = ConfigDict(extra="allow")

    Dimensions: list[dict[str, str]] = Field(default_factory=list)


class CloudWatchAlarm(BaseModel):
    """The JSON a CloudWatch alarm publishes to SNS (only the fields RelayGuard uses)."""

    model_config = ConfigDict(extra="allow")

    AlarmName: str
    NewStateValue: Literal["ALARM", "OK", "INSUFFICIENT_DATA"]
    StateChangeTime: datetime
    AlarmDescription: str | None = None
    Region: str | None = None
    Trigger: AlarmTrigger = Field(default_factory=AlarmTrigger)

    def server_identity(self) -> str | None:
        """The server named by a dimension (``Server``, ``Hostname``, ``Host``, ``InstanceId``)."""
        for wanted in ("Server", "Hostname", "Host", "InstanceId"):
            for dim in self.Trigger.Dimensions:
                if dim.get("name") == wanted and dim.get("value"):
                    return dim["value"]
        return None
