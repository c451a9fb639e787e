"""Run records, per-server state and per-server locks in DynamoDB."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from relayguard.domain.rollout import ErrorBudget, Rollout, Tally
from relayguard.ports import RunProgress, ServerState

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
else:
    DynamoDBClient = Any

#: Run records and their per-server markers expire after this long (seconds).
RUN_TTL = 90 * 24 * 3600


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


#: The item listing the runs whose digest is not out yet (a string set), so the planner finds them
#: without scanning a table of per-server markers. Run ids never take this form.
OPEN_RUNS = "open-runs"


def _reservation_key(run_id: str, server: str) -> dict[str, Any]:
    # Run ids start with "sweep-" or "alert-", so this never meets a run or a ``run_id#server`` marker.
    return {"run_id": {"S": f"fix#{run_id}#{server}"}}


#: The fix counters of a run item, which the gate's reservations condition on.
_FIX_COUNTERS = ("fix_started", "fix_finished", "fix_failed")


class DynamoRunStore:
    """One item per run (``run_id``) with counters ``n_<outcome>``, the run's rollout limits and its fix
    counters (:data:`_FIX_COUNTERS`), plus one marker item per finished server (``run_id#server``) so a
    redelivered job is counted once, one reservation item per admitted fix (``fix#run_id#server``), and
    the :data:`OPEN_RUNS` item."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table

    def create(self, run_id: str, mode: str, trigger: str, total: int, started_at: str,
               *, rollout: Rollout | None = None) -> bool:
        item: dict[str, Any] = {
            "run_id": {"S": run_id}, "mode": {"S": mode}, "trigger": {"S": trigger},
            "total": {"N": str(total)}, "completed": {"N": "0"}, "started_at": {"S": started_at},
            "expires_at": {"N": str(int(time.time()) + RUN_TTL)},
            **{name: {"N": "0"} for name in _FIX_COUNTERS},
        }
        if rollout is not None:
            item["canary"] = {"N": str(rollout.canary)}
            if rollout.max_changes is not None:
                item["max_changes"] = {"N": str(rollout.max_changes)}
            if rollout.max_errors is not None:
                item["max_errors"] = {"S": str(rollout.max_errors)}
        try:
            self.client.put_item(TableName=self.table, Item=item, ConditionExpression="attribute_not_exists(run_id)")
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        self._open_set("ADD", run_id)
        return True

    def _open_set(self, action: str, run_id: str) -> None:
        self.client.update_item(TableName=self.table, Key={"run_id": {"S": OPEN_RUNS}},
                                UpdateExpression=f"{action} #runs :id", ExpressionAttributeNames={"#runs": "runs"},
                                ExpressionAttributeValues={":id": {"SS": [run_id]}})

    def record(self, run_id: str, server: str, outcome: str,
               mail: Mapping[str, int] | None = None) -> RunProgress | None:
        try:
            self.client.put_item(
                TableName=self.table,
                Item={"run_id": {"S": f"{run_id}#{server}"}, "outcome": {"S": outcome},
                      "expires_at": {"N": str(int(time.time()) + RUN_TTL)}},
                ConditionExpression="attribute_not_exists(run_id)",
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            item = self._item(run_id)
            return _progress(item) if item else None
        # The server's deliverability counts (m_<key>) join in the same update: counted once, like the outcome.
        added = {f"m_{key}": int(value) for key, value in {**(mail or {}), **({"servers": 1} if mail else {})}.items()
                 if int(value) and key.replace("_", "").isalnum()}
        names = {"#c": f"n_{outcome}", **{f"#m{i}": name for i, name in enumerate(added)}}
        values = {":one": {"N": "1"}, **{f":m{i}": {"N": str(v)} for i, v in enumerate(added.values())}}
        extra = "".join(f", #m{i} :m{i}" for i in range(len(added)))
        return self._update_run(
            run_id,
            UpdateExpression=f"ADD completed :one, #c :one{extra}",
            # Without the run's own item, ADD would create a headless one.
            ConditionExpression="attribute_exists(run_id)",
            ExpressionAttributeNames=names,
            ExpressionAttributeValues=values,
        )

    def _update_run(self, run_id: str, **update: Any) -> RunProgress | None:
        """A conditional update of the run's item: its progress after, or None if the condition failed."""
        try:
            item = self.client.update_item(TableName=self.table, Key={"run_id": {"S": run_id}},
                                           ReturnValues="ALL_NEW", **update)["Attributes"]
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return _progress(item)

    def _item(self, run_id: str) -> dict[str, Any] | None:
        """The item under ``run_id`` (a run, or :data:`OPEN_RUNS`), read consistently."""
        got = self.client.get_item(TableName=self.table, Key={"run_id": {"S": run_id}}, ConsistentRead=True)
        return got.get("Item")

    def progress(self, run_id: str) -> RunProgress:
        item = self._item(run_id)
        if item is None:
            raise KeyError(run_id)
        return _progress(item)

    def claim_digest(self, run_id: str) -> bool:
        try:
            self.client.update_item(
                TableName=self.table,
                Key={"run_id": {"S": run_id}},
                UpdateExpression="SET digest_sent = :t",
                ConditionExpression="attribute_not_exists(digest_sent) AND completed >= #total",
                ExpressionAttributeNames={"#total": "total"},
                ExpressionAttributeValues={":t": {"BOOL": True}},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        self._open_set("DELETE", run_id)
        return True

    def open_runs(self) -> list[RunProgress]:
        item = self._item(OPEN_RUNS) or {}
        runs = []
        for run_id in sorted(item.get("runs", {}).get("SS", [])):
            run = self._item(run_id)
            if run is None or "digest_sent" in run:  # expired after RUN_TTL, or claimed meanwhile
                self._open_set("DELETE", run_id)
            else:
                runs.append(_progress(run))
        return runs

    def close(self, progress: RunProgress, lost: int) -> RunProgress | None:
        return self._update_run(
            progress.run_id,
            UpdateExpression="SET completed = :all ADD n_failed :lost",
            ConditionExpression="completed = :seen AND attribute_not_exists(digest_sent)",
            ExpressionAttributeValues={":all": {"N": str(progress.completed + lost)},
                                       ":lost": {"N": str(lost)}, ":seen": {"N": str(progress.completed)}},
        )


    def reservation(self, run_id: str, server: str) -> str | None:
        got = self.client.get_item(TableName=self.table, Key=_reservation_key(run_id, server), ConsistentRead=True)
        item = got.get("Item")
        return None if item is None else str(item["state"]["S"])

    def reserve(self, run_id: str, server: str, seen: Tally) -> bool:
        # One transaction: the reservation exists exactly when the run counted it started.
        seen_values = {"fix_started": seen.started, "fix_finished": seen.finished, "fix_failed": seen.failed}
        try:
            self.client.transact_write_items(TransactItems=[
                {"Put": {
                    "TableName": self.table,
                    "Item": {**_reservation_key(run_id, server), "state": {"S": "running"},
                             "expires_at": {"N": str(int(time.time()) + RUN_TTL)}},
                    "ConditionExpression": "attribute_not_exists(run_id)",
                }},
                {"Update": {
                    "TableName": self.table,
                    "Key": {"run_id": {"S": run_id}},
                    "UpdateExpression": "ADD fix_started :one",
                    # The counters as read: a worker that admitted or ended a fix meanwhile makes this fail,
                    # and the gate decides again on fresh numbers. A run created before the counters
                    # existed has none, which reads as 0.
                    "ConditionExpression": "attribute_exists(run_id) AND " + " AND ".join(
                        f"(#{n} = :{n} OR (attribute_not_exists(#{n}) AND :{n} = :zero))" for n in seen_values),
                    "ExpressionAttributeNames": {f"#{n}": n for n in seen_values},
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":zero": {"N": "0"},
                                                  **{f":{n}": {"N": str(v)} for n, v in seen_values.items()}},
                }},
            ])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "TransactionCanceledException":
                return False
            raise
        return True

    def release(self, run_id: str, server: str, failed: bool) -> None:
        try:
            self.client.transact_write_items(TransactItems=[
                {"Update": {
                    "TableName": self.table,
                    "Key": _reservation_key(run_id, server),
                    "UpdateExpression": "SET #state = :done",
                    "ConditionExpression": "#state = :running",
                    "ExpressionAttributeNames": {"#state": "state"},
                    "ExpressionAttributeValues": {":done": {"S": "done"}, ":running": {"S": "running"}},
                }},
                {"Update": {
                    "TableName": self.table,
                    "Key": {"run_id": {"S": run_id}},
                    "UpdateExpression": "ADD fix_finished :one, fix_failed :failed",
                    "ConditionExpression": "attribute_exists(run_id)",
                    "ExpressionAttributeValues": {":one": {"N": "1"}, ":failed": {"N": "1" if failed else "0"}},
                }},
            ])
        except ClientError as exc:
            # No running reservation (never admitted, or ended by an earlier delivery): nothing to end.
            if exc.response.get("Error", {}).get("Code") != "TransactionCanceledException":
                raise

    def claim_stop(self, run_id: str, reason: str) -> bool:
        try:
            self.client.update_item(
                TableName=self.table, Key={"run_id": {"S": run_id}}, UpdateExpression="SET stopped = :why",
                ConditionExpression="attribute_exists(run_id) AND attribute_not_exists(stopped)",
                ExpressionAttributeValues={":why": {"S": reason}},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True


def _number(item: dict[str, Any], name: str) -> int:
    return int(item.get(name, {"N": "0"})["N"])


def _progress(item: dict[str, Any]) -> RunProgress:
    counts = {k[2:]: int(v["N"]) for k, v in item.items() if k.startswith("n_")}
    rollout = Rollout(
        max_changes=_number(item, "max_changes") if "max_changes" in item else None,
        max_errors=ErrorBudget.parse(item["max_errors"]["S"]) if "max_errors" in item else None,
        canary=_number(item, "canary"),
    )
    return RunProgress(
        run_id=item["run_id"]["S"], mode=item["mode"]["S"], trigger=item["trigger"]["S"],
        total=int(item["total"]["N"]), completed=_number(item, "completed"), counts=counts,
        started_at=item["started_at"]["S"], rollout=rollout, fix_started=_number(item, "fix_started"),
        fix_finished=_number(item, "fix_finished"), fix_failed=_number(item, "fix_failed"),
        stopped=item.get("stopped", {}).get("S", ""),
        mail={k[2:]: int(v["N"]) for k, v in item.items() if k.startswith("m_")},
    )


class DynamoStateStore:
    """Per server: the last outcome, what was last announced, where the last job's record is, the change it
    still owes (``pending``), and the bounded view of its result (``domain.bounds.state_result``)."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table

    def get(self, server: str) -> ServerState | None:
        item = self.client.get_item(TableName=self.table, Key={"server": {"S": server}}, ConsistentRead=True)
        if "Item" not in item:
            return None
        it = item["Item"]
        return ServerState(server=server, outcome=it["outcome"]["S"], announced=it["announced"]["S"],
                           updated_at=it["updated_at"]["S"], mode=it["mode"]["S"],
                           record=it.get("record", {}).get("S", ""), pending=it.get("pending", {}).get("S", ""),
                           mail=it.get("mail", {}).get("S", ""))

    def put(self, state: ServerState, result: dict[str, Any] | None = None) -> None:
        item = {"server": {"S": state.server}, "outcome": {"S": state.outcome}, "announced": {"S": state.announced},
                "updated_at": {"S": state.updated_at}, "mode": {"S": state.mode}}
        # Empty strings are left out: items written before records existed look the same.
        for name, value in (("record", state.record), ("pending", state.pending), ("mail", state.mail)):
            if value:
                item[name] = {"S": value}
        if result is not None:
            # Whole: the publisher hands in a view bounded to fit the item (domain.bounds.state_result).
            item["result"] = {"S": json.dumps(result)}
        self.client.put_item(TableName=self.table, Item=item)


class DynamoLockStore:
    """A per-server lease: a conditional put that wins only if the item is absent or expired."""

    def __init__(self, client: DynamoDBClient, table: str) -> None:
        self.client = client
        self.table = table

    def acquire(self, server: str, owner: str, ttl_seconds: int) -> bool:
        now = int(time.time())
        try:
            self.client.put_item(
                TableName=self.table,
                Item={"server": {"S": server}, "owner": {"S": owner}, "expires_at": {"N": str(now + ttl_seconds)}},
                ConditionExpression="attribute_not_exists(#s) OR expires_at < :now OR #o = :me",
                ExpressionAttributeNames={"#s": "server", "#o": "owner"},
                ExpressionAttributeValues={":now": {"N": str(now)}, ":me": {"S": owner}},
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def release(self, server: str, owner: str) -> None:
        try:
            self.client.delete_item(
                TableName=self.table,
                Key={"server": {"S": server}},
                ConditionExpression="#o = :me",
                ExpressionAttributeNames={"#o": "owner"},
                ExpressionAttributeValues={":me": {"S": owner}},
            )
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
