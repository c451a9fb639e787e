"""Typed models of every event RelayGuard's functions accept (Powertools Parser / pydantic).

Validation errors name the field, so a malformed event is rejected with a precise message.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetPydanticSchema,
    field_validator,
    model_validator,
)
from pydantic_core import CoreSchema, core_schema

from relayguard.domain.models import Mode
from relayguard.domain.server import Server

JOB_SCHEMA = "relayguard.job/v1"
ALERT_SCHEMA = "relayguard.alert/v1"
ALERT_EVENT_SOURCE = "relayguard.alerts"
ALERT_DETAIL_TYPE = "Spam Alert"

AlertSource = Literal["cpanel_icontact", "csf_rt", "dnsbl", "abuse_report", "queue_alarm", "cloudwatch_alarm",
                      "manual"]
AlertKind = Literal["spammers_detected", "hourly_limit", "send_limit", "pop_before_smtp_enabled", "relay_tracking",
                    "dnsbl_listing", "abuse_report", "queue_size", "alarm", "revert_request"]
#: The alert kind that asks for a revert of the server's last fix instead of a fix (docs/operations.md).
REVERT_REQUEST = "revert_request"


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

    @model_validator(mode="after")
    def _revert_only_by_an_operator(self) -> SpamAlert:
        # A revert reopens relaying: no automated source (CSF, alarms, feeds) may ever ask for one.
        if self.kind == REVERT_REQUEST:
            if self.source != "manual":
                raise ValueError("a revert_request comes only from an operator (source manual)")
            if not str(self.evidence.get("requested_by") or "").strip():
                raise ValueError("a revert_request needs evidence.requested_by (who asked for it)")
        return self

    @property
    def action(self) -> Literal["revert"] | None:
        """What the urgent job does: ``revert`` for a revert request, else the alert mode's fix or audit."""
        return "revert" if self.kind == REVERT_REQUEST else None


#: What a job message carries of its :class:`Server`, with the limits of the wire. A job needs only
#: how to reach the server; tags and aliases stay in the inventory.
_JOB_SERVER_FIELDS: dict[str, CoreSchema] = {
    "name": core_schema.str_schema(min_length=1, max_length=128),
    "host": core_schema.str_schema(min_length=1, max_length=253),
    "port": core_schema.int_schema(ge=1, le=65535),
    "user": core_schema.str_schema(min_length=1, max_length=32),
    "host_keys": core_schema.tuple_schema([core_schema.str_schema()], variadic_item_index=0),
}


def _job_server_schema(_source: Any, _handler: GetCoreSchemaHandler) -> CoreSchema:
    """Validate a job's ``server`` straight into the domain :class:`Server` and write it back out.

    The fields' order and defaults come from the dataclass, so the two cannot drift apart. Only the
    fields above are read or written; any other key is an error naming its field, as for every model
    here. A ``Server`` handed in is validated again, so a job never holds what its message could not.
    """
    fields = []
    for field in dataclasses.fields(Server):
        if field.name not in _JOB_SERVER_FIELDS:
            continue
        schema = _JOB_SERVER_FIELDS[field.name]
        if field.default is not dataclasses.MISSING:
            schema = core_schema.with_default_schema(schema, default=field.default)
        fields.append(core_schema.dataclass_field(field.name, schema))
    return core_schema.dataclass_schema(
        Server, core_schema.dataclass_args_schema("Server", fields, extra_behavior="forbid"),
        [f["name"] for f in fields], frozen=True, revalidate_instances="always")


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
    server: Annotated[Server, GetPydanticSchema(_job_server_schema)]
    #: The inventory excludes the server from fixing (the planner or the alert intake decided it from its
    #: tags): the worker probes and reports it ``excluded``. Optional, so messages without it still parse.
    excluded: bool = False
    #: Absent (the wire format before revert existed): fix or audit by ``mode``. ``revert``: undo the last fix.
    action: Literal["revert"] | None = None

    def body(self) -> str:
        doc = self.model_dump(mode="json", by_alias=True)
        # Optional fields at their defaults are left out, so a plain fix or audit job is the message it
        # always was and a worker of the previous release still takes it during a deployment.
        if not doc["excluded"]:
            del doc["excluded"]
        if doc["action"] is None:
            del doc["action"]
        return json.dumps(doc, separators=(",", ":"))


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

    @property
    def firing(self) -> bool:
        """Only an alarm entering ALARM raises an alert; OK and INSUFFICIENT_DATA are ignored."""
        return self.NewStateValue == "ALARM"

    def to_alert(self) -> SpamAlert:
        """The spam alert this alarm raises; ``ValueError`` if no dimension names the server."""
        identity = self.server_identity()
        if identity is None:
            raise ValueError(f"alarm {self.AlarmName!r} names no server (dimension Server, Hostname or InstanceId)")
        host = {"instance_id": identity} if identity.startswith("i-") else {"hostname": identity}
        return SpamAlert.model_validate({
            "schema": ALERT_SCHEMA,
            "alert_id": f"alarm-{uuid.uuid5(uuid.NAMESPACE_URL, self.AlarmName + str(self.StateChangeTime))}",
            "source": "cloudwatch_alarm", "kind": "alarm", "observed_at": self.StateChangeTime,
            "severity": "warning", "host": host, "evidence": {"alarm": self.AlarmName},
        })

    def server_identity(self) -> str | None:
        """The server named by a dimension (``Server``, ``Hostname``, ``Host``, ``InstanceId``)."""
        for wanted in ("Server", "Hostname", "Host", "InstanceId"):
            for dim in self.Trigger.Dimensions:
                if dim.get("name") == wanted and dim.get("value"):
                    return dim["value"]
        return None
