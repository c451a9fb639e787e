"""The job message (relayguard.job/v1) carries the domain Server: same wire, same limits, no conversion."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from relayguard.domain.models import Mode
from relayguard.domain.server import Server
from relayguard.events import Job
from relayguard.services import job_for

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
SAMPLE = json.loads((Path(__file__).parents[2] / "events" / "worker" / "urgent_job.json").read_text())
BODY = SAMPLE["Records"][0]["body"]


def with_server(**server: Any) -> dict[str, Any]:
    return {**json.loads(BODY), "server": server}


def test_a_job_body_reads_into_the_domain_server_and_writes_back_the_same_server() -> None:
    job = Job.model_validate_json(BODY)
    assert job.server == Server(name="web1", host="203.0.113.10", port=22, user="root", host_keys=(KEY,))
    written, read = json.loads(job.body()), json.loads(BODY)
    assert list(written) == list(read)
    assert json.dumps(written["server"]) == json.dumps(read["server"])  # same keys, same order, same values


def test_tags_and_aliases_stay_out_of_the_message() -> None:
    server = Server(name="web1", host="203.0.113.10", host_keys=(KEY,), tags=("prod",), aliases=("web1.example.com",))
    job = job_for(server, "run-1", Mode.AUDIT, "sweep")
    assert json.loads(job.body())["server"] == {"name": "web1", "host": "203.0.113.10", "port": 22, "user": "root",
                                                "host_keys": [KEY]}
    assert job.server == Server(name="web1", host="203.0.113.10", host_keys=(KEY,))


def test_port_and_user_default_as_before() -> None:
    job = Job.model_validate(with_server(name="web1", host="203.0.113.10"))
    assert (job.server.port, job.server.user, job.server.host_keys) == (22, "root", ())


@pytest.mark.parametrize(("server", "field", "error"), [
    ({"name": "w" * 129, "host": "h"}, "name", "string_too_long"),
    ({"name": "", "host": "h"}, "name", "string_too_short"),
    ({"name": "web1", "host": "h" * 254}, "host", "string_too_long"),
    ({"name": "web1", "host": "h", "port": 0}, "port", "greater_than_equal"),
    ({"name": "web1", "host": "h", "port": 65536}, "port", "less_than_equal"),
    ({"name": "web1", "host": "h", "user": "u" * 33}, "user", "string_too_long"),
    ({"host": "h"}, "name", "missing"),
    ({"name": "web1", "host": "h", "tags": ["prod"]}, "tags", "unexpected_keyword_argument"),
])
def test_the_wire_limits_hold_and_each_error_names_its_field(server: dict[str, Any], field: str, error: str) -> None:
    with pytest.raises(ValidationError) as info:
        Job.model_validate(with_server(**server))
    ((loc, kind),) = [(e["loc"], e["type"]) for e in info.value.errors()]
    assert (loc, kind) == (("server", field), error)


def test_a_server_handed_in_is_held_to_the_same_limits() -> None:
    with pytest.raises(ValidationError, match="at most 128 characters"):
        job_for(Server(name="w" * 129, host="h"), "run-1", Mode.AUDIT, "sweep")
