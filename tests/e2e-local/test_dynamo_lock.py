"""The per-server lock against DynamoDB (moto server, the template's LocksTable): what keeps two
jobs for one server from opening two SSH fix sessions, whichever way they arrive."""

from __future__ import annotations

import time
from typing import Any

import pytest
from relayguard.adapters.dynamo import DynamoLockStore

from harness.aws import Stack

pytestmark = pytest.mark.integration


@pytest.fixture
def locks(stack: Stack) -> DynamoLockStore:
    return DynamoLockStore(stack.client("dynamodb"), stack.resolve["LocksTable"])


def item(stack: Stack, server: str) -> dict[str, Any] | None:
    got = stack.client("dynamodb").get_item(TableName=stack.resolve["LocksTable"], Key={"server": {"S": server}},
                                            ConsistentRead=True)
    found: dict[str, Any] | None = got.get("Item")
    return found


def held(stack: Stack, server: str) -> dict[str, Any]:
    """The lock item of ``server``, which must be there."""
    found = item(stack, server)
    assert found is not None, f"no lock item for {server}"
    return found


def test_one_owner_at_a_time_and_only_the_owner_releases(stack: Stack, locks: DynamoLockStore) -> None:
    assert locks.acquire("web1", "job-a", 900)
    assert not locks.acquire("web1", "job-b", 900)
    # Another server's lock is independent.
    assert locks.acquire("web2", "job-b", 900)
    # A job that does not hold the lock cannot release it ...
    locks.release("web1", "job-b")
    assert held(stack, "web1")["owner"] == {"S": "job-a"}
    assert not locks.acquire("web1", "job-b", 900)
    # ... the owner can, and then the next job gets it.
    locks.release("web1", "job-a")
    assert item(stack, "web1") is None
    assert locks.acquire("web1", "job-b", 900)


def test_the_lock_carries_its_ttl_and_an_expired_lock_is_taken_over(stack: Stack, locks: DynamoLockStore) -> None:
    # The attribute the code writes is the one the template's table expires items by.
    ttl = stack.client("dynamodb").describe_time_to_live(TableName=stack.resolve["LocksTable"])
    assert ttl["TimeToLiveDescription"]["AttributeName"] == "expires_at"
    now = int(time.time())
    assert locks.acquire("web1", "crashed-job", 900)
    expires = int(held(stack, "web1")["expires_at"]["N"])
    assert now + 900 <= expires <= now + 902
    assert not locks.acquire("web1", "next-job", 900)
    # The holder died without releasing: once its lease has passed (DynamoDB's TTL sweep may not
    # have deleted the item yet), the next job takes over without waiting for the sweep.
    stack.client("dynamodb").update_item(
        TableName=stack.resolve["LocksTable"], Key={"server": {"S": "web1"}},
        UpdateExpression="SET expires_at = :past", ExpressionAttributeValues={":past": {"N": str(now - 1)}})
    assert locks.acquire("web1", "next-job", 900)
    assert held(stack, "web1")["owner"] == {"S": "next-job"}
    # The late release of the crashed job does not free the new owner's lock.
    locks.release("web1", "crashed-job")
    assert held(stack, "web1")["owner"] == {"S": "next-job"}

