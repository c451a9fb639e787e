"""The composition root: the only module that names concrete adapters.

Handlers, the CLI and tests build their services here; tests pass fakes for any port.

Imports are deferred to the functions that need them: the operator CLI composes only the engine and
would otherwise pay about 0.3 s of CPU for boto3, Powertools and pydantic on every run, and the
planner and alert intake never build an engine, so they never load paramiko (bench/README.md).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from relayguard.adapters.smtp import smtp_banner
from relayguard.config import Settings
from relayguard.engine import BannerCheck, Engine
from relayguard.errors import RelayGuardError
from relayguard.ports import Connector, InventoryStore

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import IdempotencyConfig

    from relayguard.adapters.dynamo import DynamoRunStore
    from relayguard.adapters.sqs_queue import SqsJobQueue
    from relayguard.services import AlertIntake, Publisher, Worker


def build_engine(
    *,
    key_path: str | None = None,
    key_text: str | None = None,
    sudo: bool = False,
    timeout: float = 60.0,
    connector: Connector | None = None,
    banner_check: BannerCheck | None = None,
) -> Engine:
    """An engine wired to paramiko and a plain SMTP greeting check unless fakes are given."""
    if connector is None:
        from relayguard.adapters.ssh import ParamikoConnector, load_private_key  # noqa: PLC0415 - deferred

        if (key_path is None) == (key_text is None):
            raise RelayGuardError("give exactly one SSH private key: a key file or the key text")
        key = load_private_key(path=key_path, text=key_text)
        # Connect, banner and auth deadlines stay well below the per-command one.
        handshake = min(timeout, 15.0)
        connector = ParamikoConnector(key, connect_timeout=handshake, banner_timeout=handshake,
                                      auth_timeout=handshake, sudo=sudo)
    return Engine(connector, banner_check or smtp_banner, timeout=timeout)


# -- serverless wiring: cached across warm invocations; tests call reset_caches() -----------------


@functools.lru_cache(maxsize=4)
def cached_settings(environ: tuple[tuple[str, str], ...], loader: Callable[[Mapping[str, str]], Settings]) -> Settings:
    """Settings are read once per distinct environment (once per cold start in Lambda)."""
    return loader(dict(environ))


@functools.lru_cache(maxsize=8)
def client(service: str) -> Any:
    import boto3  # noqa: PLC0415 - deferred, see the module docstring

    # boto3 resolves region, credentials and AWS_ENDPOINT_URL (moto in tests) from the environment.
    # Powertools' Parameters and Idempotency get these clients too: left alone, each opens its own boto3
    # Session, whose fresh loader re-reads botocore's endpoint and model data, ~50 ms of a cold start.
    return boto3.client(service)  # type: ignore[call-overload]


def inventory_store(settings: Settings) -> InventoryStore:
    from relayguard.adapters.s3_inventory import S3InventoryStore  # noqa: PLC0415 - deferred (botocore)

    return S3InventoryStore(client("s3"), settings.inventory_bucket, settings.inventory_key,
                            {"user": settings.ssh_user})


def run_store(settings: Settings) -> DynamoRunStore:
    from relayguard.adapters.dynamo import DynamoRunStore  # noqa: PLC0415 - deferred

    return DynamoRunStore(client("dynamodb"), settings.runs_table)


def job_queue() -> SqsJobQueue:
    from relayguard.adapters.sqs_queue import SqsJobQueue  # noqa: PLC0415 - deferred

    return SqsJobQueue(client("sqs"))


def publisher(settings: Settings) -> Publisher:
    from relayguard.adapters.dynamo import DynamoStateStore  # noqa: PLC0415 - deferred
    from relayguard.adapters.notify_sns import SnsNotifier  # noqa: PLC0415
    from relayguard.services import Publisher  # noqa: PLC0415 - deferred (pydantic)

    return Publisher(SnsNotifier(client("sns"), settings.topic_arn), run_store(settings),
                     DynamoStateStore(client("dynamodb"), settings.state_table))


@functools.lru_cache(maxsize=4)
def _engine_for_key(key_text: str, sudo: bool, timeout: float) -> Engine:
    return build_engine(key_text=key_text, sudo=sudo, timeout=timeout)


@functools.lru_cache(maxsize=4)
def worker(settings: Settings) -> Worker:
    """One per warm environment: its key store keeps the Parameters cache (a new provider would not)."""
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415 - deferred

    from relayguard.adapters.dynamo import DynamoLockStore, DynamoStateStore  # noqa: PLC0415 - deferred
    from relayguard.adapters.secrets import SecretsManagerKeyStore  # noqa: PLC0415
    from relayguard.services import Worker  # noqa: PLC0415

    keys = SecretsManagerKeyStore(settings.ssh_key_secret, parameters.SecretsProvider(
        boto3_client=client("secretsmanager")))

    def engine() -> Engine:
        # The key is re-read through the Parameters cache, so a rotated secret takes effect within its max age.
        return _engine_for_key(keys.ssh_key(), settings.use_sudo, settings.command_timeout)

    return Worker(settings, engine, DynamoLockStore(client("dynamodb"), settings.locks_table),
                  DynamoStateStore(client("dynamodb"), settings.state_table), publisher(settings), job_queue())


def alert_intake(settings: Settings) -> AlertIntake:
    from relayguard.services import AlertIntake  # noqa: PLC0415 - deferred (pydantic)

    return AlertIntake(settings, inventory_store(settings), run_store(settings), job_queue())


@functools.lru_cache(maxsize=4)
def enqueue_once(settings: Settings) -> tuple[Callable[..., dict[str, Any]], IdempotencyConfig]:
    """The alert intake's enqueue, made idempotent per (server, alert kind, window) in DynamoDB."""
    from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415 - deferred
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )

    from relayguard.events import SpamAlert  # noqa: PLC0415
    from relayguard.inventory import Server  # noqa: PLC0415

    persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=client("dynamodb"))
    config = IdempotencyConfig(expires_after_seconds=settings.dedup_window_seconds)
    intake = alert_intake(settings)

    @idempotent_function(data_keyword_argument="key", persistence_store=persistence, config=config)  # type: ignore[untyped-decorator]
    def enqueue(key: dict[str, Any], request: str, server: Server, alert: SpamAlert) -> dict[str, Any]:
        return {**intake.enqueue(server, alert), "request": request}

    return enqueue, config


def reset_caches() -> None:
    """Forget cached clients, settings and keys (tests; a warm Lambda never needs it)."""
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415 - deferred

    for cached in (cached_settings, client, _engine_for_key, enqueue_once, worker):
        cached.cache_clear()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
