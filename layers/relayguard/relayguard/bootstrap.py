"""The composition root: the only module that names concrete adapters.

Handlers, the CLI and tests build their services here. Every factory takes the ports it wires as
keyword arguments whose default (None) means the production adapter, so a test passes fakes for
any of them and keeps the rest of the real wiring.

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
from relayguard.domain.collect import RESOLVER_OFF
from relayguard.domain.deliverability import Collected, Deliverability
from relayguard.engine import JUDGE_BUDGET, BannerCheck, Engine
from relayguard.errors import RelayGuardError
from relayguard.fleet_key import ScriptConnector
from relayguard.ports import (
    Connector,
    DeadLetterQueues,
    DeliverabilityJudge,
    InventoryStore,
    JobQueue,
    LockStore,
    MetricSink,
    Notifier,
    RecordStore,
    ReportPages,
    RunRecords,
    RunReports,
    RunStore,
    SecretStore,
    StateStore,
)

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.typing import LambdaContext

    from relayguard.services import AlertIntake, EnqueueOnce, Publisher, SweepPlanner, UrgentJobs, Worker


class LazyDnsJudge:
    """The DNS judge (adapters.dns_judge), imported and built on its first judgement: dnspython and
    checkdmarc are loaded only by a job whose server hosts domains, never by the CLI's start or a
    planner."""

    def __init__(self, resolver: str, budget: float) -> None:
        self.resolver = resolver
        self.budget = budget
        self._judge: DeliverabilityJudge | None = None

    def judge(self, collected: Collected) -> Deliverability:
        if self._judge is None:
            from relayguard.adapters.dns_judge import DnsJudge  # noqa: PLC0415 - deferred, see the class

            self._judge = DnsJudge(self.resolver or None, budget=self.budget)
        return self._judge.judge(collected)


def dns_judge(resolver: str, budget: float = JUDGE_BUDGET) -> DeliverabilityJudge | None:
    """The deliverability judge for a resolver setting (``IP[:PORT]``, "" for the machine's own), or None
    for ``off``: the scan then records what the server said, unjudged."""
    return None if resolver == RESOLVER_OFF else LazyDnsJudge(resolver, budget)


def build_operator_connector(*, key_path: str, sudo: bool = False, timeout: float = 60.0) -> ScriptConnector:
    """The operator's own key, for ``relayguard enroll``: sessions that run a whole script with ``sh -s``."""
    from relayguard.adapters.ssh import ParamikoConnector  # noqa: PLC0415 - deferred
    from relayguard.adapters.ssh_keys import load_private_key  # noqa: PLC0415

    handshake = min(timeout, 15.0)
    return ParamikoConnector(load_private_key(path=key_path), connect_timeout=handshake,
                             banner_timeout=handshake, auth_timeout=handshake, sudo=sudo)


def build_engine(
    *,
    key_path: str | None = None,
    key_text: str | None = None,
    sudo: bool = False,
    timeout: float = 60.0,
    connector: Connector | None = None,
    banner_check: BannerCheck | None = None,
    resolver: str = "",
    judge: DeliverabilityJudge | None = None,
) -> Engine:
    """An engine wired to paramiko, a plain SMTP greeting check and the DNS judge of ``resolver`` unless
    fakes are given."""
    if connector is None:
        from relayguard.adapters.ssh import ParamikoConnector  # noqa: PLC0415 - deferred
        from relayguard.adapters.ssh_keys import load_private_key  # noqa: PLC0415

        if (key_path is None) == (key_text is None):
            raise RelayGuardError("give exactly one SSH private key: a key file or the key text")
        key = load_private_key(path=key_path, text=key_text)
        # Connect, banner and auth deadlines stay well below the per-command one.
        handshake = min(timeout, 15.0)
        connector = ParamikoConnector(key, connect_timeout=handshake, banner_timeout=handshake,
                                      auth_timeout=handshake, sudo=sudo)
    return Engine(connector, banner_check or smtp_banner, timeout=timeout,
                  judge=judge if judge is not None else dns_judge(resolver), judge_budget=JUDGE_BUDGET)


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


def inventory_store(settings: Settings, *, s3: Any = None) -> InventoryStore:
    from relayguard.adapters.s3_inventory import S3InventoryStore  # noqa: PLC0415 - deferred (botocore)

    return S3InventoryStore(s3 or client("s3"), settings.inventory_bucket, settings.inventory_key,
                            {"user": settings.ssh_user})


def run_store(settings: Settings, *, dynamodb: Any = None) -> RunStore:
    from relayguard.adapters.dynamo import DynamoRunStore  # noqa: PLC0415 - deferred

    return DynamoRunStore(dynamodb or client("dynamodb"), settings.runs_table)


def state_store(settings: Settings, *, dynamodb: Any = None) -> StateStore:
    from relayguard.adapters.dynamo import DynamoStateStore  # noqa: PLC0415 - deferred

    return DynamoStateStore(dynamodb or client("dynamodb"), settings.state_table)


def job_queue(*, sqs: Any = None) -> JobQueue:
    from relayguard.adapters.sqs_queue import SqsJobQueue  # noqa: PLC0415 - deferred

    return SqsJobQueue(sqs or client("sqs"))


def record_store(settings: Settings, *, s3: Any = None) -> RecordStore:
    """Job records in the stack's records bucket."""
    from relayguard.adapters.s3_records import S3RecordStore  # noqa: PLC0415 - deferred (botocore)

    return S3RecordStore(s3 or client("s3"), settings.records_bucket)


def directory_record_store(root: str) -> RecordStore:
    """Job records as files under ``root`` (the CLI's ``--record-dir``)."""
    from relayguard.adapters.local_records import DirectoryRecordStore  # noqa: PLC0415 - deferred

    return DirectoryRecordStore(root)


def run_reports(settings: Settings, *, s3: Any = None) -> RunReports:
    """The worker's and the planner's: a run's records in the records bucket and its report page beside
    them (``reports/<run_id>.html``)."""
    from relayguard.adapters.s3_reports import S3RunReports  # noqa: PLC0415 - deferred (botocore)

    return S3RunReports(s3 or client("s3"), settings.records_bucket)


def bucket_run_reports(bucket: str) -> RunReports:
    """The CLI's ``--bucket``: the same, with the operator's own AWS credentials."""
    from relayguard.adapters.s3_reports import S3RunReports  # noqa: PLC0415 - deferred (botocore)

    return S3RunReports(client("s3"), bucket)


def directory_run_records(root: str) -> RunRecords:
    """Records under ``root``: a ``--record-dir``, or one run's folder of it."""
    from relayguard.adapters.local_reports import DirectoryRunRecords  # noqa: PLC0415 - deferred

    return DirectoryRunRecords(root)


def html_file(path: str) -> ReportPages:
    """The CLI's ``--html FILE``."""
    from relayguard.adapters.local_reports import HtmlFile  # noqa: PLC0415 - deferred

    return HtmlFile(path)


def metric_sink(namespace: str) -> MetricSink:
    """Metrics as EMF lines in ``namespace``; those without dimensions of their own join the handler's
    Powertools buffer."""
    from aws_lambda_powertools.metrics import Metrics  # noqa: PLC0415 - deferred

    from relayguard.adapters.emf_metrics import EmfMetricSink  # noqa: PLC0415 - deferred

    return EmfMetricSink(Metrics(namespace=namespace))


def publisher(settings: Settings, *, notifier: Notifier | None = None, runs: RunStore | None = None,
              state: StateStore | None = None, records: RecordStore | None = None,
              reports: RunReports | None = None, metrics: MetricSink | None = None) -> Publisher:
    """The publisher of results and digests; ``reports``, where a run's report page goes with its digest,
    is given by the worker and the planner (None: digests without a page)."""
    from relayguard.services import Publisher  # noqa: PLC0415 - deferred (pydantic)

    metrics = metrics or metric_sink(settings.metrics_namespace)
    if notifier is None:
        from relayguard.adapters.notify_sns import SnsNotifier  # noqa: PLC0415 - deferred

        notifier = SnsNotifier(client("sns"), settings.topic_arn)
        if settings.chat_topic_arn:
            from relayguard.adapters.notify_chatbot import ChatbotNotifier, WithChat  # noqa: PLC0415 - deferred

            notifier = WithChat(notifier, ChatbotNotifier(client("sns"), settings.chat_topic_arn), metrics)
    return Publisher(notifier, runs or run_store(settings), state or state_store(settings),
                     records or record_store(settings), metrics, reports)


def dead_letter_queues() -> DeadLetterQueues:
    """The stack's queues on SQS and CloudFormation, for ``relayguard redrive`` on an operator's machine
    (region and credentials from the usual AWS environment and profile)."""
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415 - deferred (botocore)

    from relayguard.adapters.sqs_redrive import SqsDeadLetterQueues  # noqa: PLC0415 - deferred

    try:
        return SqsDeadLetterQueues(client("sqs"), client("cloudformation"))
    except BotoCoreError as exc:  # no region configured, most often
        raise RelayGuardError(f"cannot reach AWS: {exc}") from exc


# The factory under a name that the factories' own ``publisher`` parameters do not hide.
_publisher = publisher


def planner(settings: Settings, *, inventory: InventoryStore | None = None, runs: RunStore | None = None,
            queue: JobQueue | None = None, publisher: Publisher | None = None) -> SweepPlanner:
    """:func:`~relayguard.services.plan_sweep` bound to its ports; the caller gives only the mode."""
    from relayguard.services import plan_sweep  # noqa: PLC0415 - deferred (pydantic)

    runs = runs or run_store(settings)
    return functools.partial(plan_sweep, settings, inventory or inventory_store(settings), runs,
                             queue or job_queue(),
                             # The planner gives the runs it closes (past their deadline, or complete with no
                             # digest yet) their report page too.
                             publisher or _publisher(settings, runs=runs, reports=run_reports(settings)))


@functools.lru_cache(maxsize=4)
def ssh_key_store(settings: Settings) -> SecretStore:
    """One per warm environment: it keeps the Parameters cache (a new provider would not)."""
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415 - deferred

    from relayguard.adapters.secrets import SecretsManagerKeyStore  # noqa: PLC0415

    return SecretsManagerKeyStore(settings.ssh_key_secret, parameters.SecretsProvider(
        boto3_client=client("secretsmanager")))


@functools.lru_cache(maxsize=4)
def _engine_for_key(key_text: str, sudo: bool, timeout: float, resolver: str) -> Engine:
    return build_engine(key_text=key_text, sudo=sudo, timeout=timeout, resolver=resolver)


def worker(settings: Settings, *, engine_factory: Callable[[], Engine] | None = None,
           locks: LockStore | None = None, state: StateStore | None = None, publisher: Publisher | None = None,
           queue: JobQueue | None = None, inventory: InventoryStore | None = None) -> Worker:
    from relayguard.services import Worker  # noqa: PLC0415 - deferred (pydantic)

    if engine_factory is None:
        keys = ssh_key_store(settings)

        def engine_factory() -> Engine:
            # The key is re-read through the Parameters cache, so a rotated secret takes effect within its max age.
            return _engine_for_key(keys.ssh_key(), settings.use_sudo, settings.command_timeout,
                                   settings.dns_resolver or "")

    if locks is None:
        from relayguard.adapters.dynamo import DynamoLockStore  # noqa: PLC0415 - deferred

        locks = DynamoLockStore(client("dynamodb"), settings.locks_table)
    state = state or state_store(settings)
    return Worker(settings, engine_factory, locks, state,
                  publisher or _publisher(settings, state=state, reports=run_reports(settings)),
                  queue or job_queue(),
                  inventory or inventory_store(settings))


def urgent_jobs(settings: Settings, *, runs: RunStore | None = None, queue: JobQueue | None = None) -> UrgentJobs:
    from relayguard.services import UrgentJobs  # noqa: PLC0415 - deferred (pydantic)

    return UrgentJobs(settings, runs or run_store(settings), queue or job_queue())


def idempotent_enqueue(settings: Settings, *, jobs: UrgentJobs | None = None,
                       lambda_context: LambdaContext | None = None) -> EnqueueOnce:
    """The alert intake's enqueue, made idempotent per (server, alert kind, window) in DynamoDB."""
    from aws_lambda_powertools.utilities.idempotency import (  # noqa: PLC0415 - deferred
        DynamoDBPersistenceLayer,
        IdempotencyConfig,
        idempotent_function,
    )
    from aws_lambda_powertools.utilities.idempotency.exceptions import (  # noqa: PLC0415
        IdempotencyAlreadyInProgressError,
    )

    from relayguard.domain.server import Server  # noqa: PLC0415
    from relayguard.events import SpamAlert  # noqa: PLC0415

    persistence = DynamoDBPersistenceLayer(table_name=settings.idempotency_table, boto3_client=client("dynamodb"))
    # The window is this expiry, which Powertools checks on every put: the first alert opens it.
    config = IdempotencyConfig(expires_after_seconds=settings.dedup_window_seconds)
    if lambda_context is not None:
        # An in-progress record left by an invocation that died then expires with that invocation.
        config.register_lambda_context(lambda_context)
    urgent = jobs or urgent_jobs(settings)

    @idempotent_function(data_keyword_argument="key", persistence_store=persistence, config=config)  # type: ignore[untyped-decorator]
    def enqueue(key: dict[str, Any], request: str, server: Server, alert: SpamAlert) -> dict[str, Any]:
        return {**urgent.enqueue(server, alert), "request": request}

    def enqueue_once(*, key: dict[str, str], request: str, server: Server, alert: SpamAlert) -> dict[str, Any]:
        try:
            return dict(enqueue(key=key, request=request, server=server, alert=alert))
        except IdempotencyAlreadyInProgressError:
            # Another invocation is enqueueing this very job: this alert is its duplicate.
            return {"status": "duplicate", "server": server.name}

    return enqueue_once


def alert_intake(settings: Settings, *, inventory: InventoryStore | None = None,
                 enqueue_once: EnqueueOnce | None = None, lambda_context: LambdaContext | None = None) -> AlertIntake:
    from relayguard.services import AlertIntake  # noqa: PLC0415 - deferred (pydantic)

    if enqueue_once is None:
        enqueue_once = idempotent_enqueue(settings, lambda_context=lambda_context)
    return AlertIntake(inventory or inventory_store(settings), enqueue_once)


def reset_caches() -> None:
    """Forget cached clients, settings and keys (tests; a warm Lambda never needs it)."""
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415 - deferred

    for cached in (cached_settings, client, _engine_for_key, ssh_key_store):
        cached.cache_clear()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
