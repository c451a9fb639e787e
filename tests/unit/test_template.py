"""template.yaml through SAM's own transform, offline (toolchain.md §2), and what it promises.

cfn-lint checks that the template is well-formed; these tests check that the CloudFormation SAM
generates from it does what docs/decisions/0003-serverless-contract.md and issue 4 say: triggers,
batch and retry behaviour, timings, encryption, VPC placement and least-privilege IAM.
"""

from __future__ import annotations

import copy
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer
from relayguard.adapters.dynamo import DynamoLockStore, DynamoRunStore
from relayguard.adapters.s3_records import PREFIX
from relayguard.adapters.s3_reports import REPORTS_PREFIX
from relayguard.config import ALL_VARIABLES, load_settings
from samtranslator.translator.transform import transform

from harness import iam
from harness.intrinsics import NO_VALUE, Resolver
from harness.template import load_template

REPO = Path(__file__).resolve().parents[2]
SECRET_ARN = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SshKeySecretName}-*"
PSEUDO = ("AWS::Partition", "AWS::Region", "AWS::AccountId")


class _NoManagedPolicies:
    """SAM looks managed policy names up in IAM; policy templates and ARNs need no lookup."""

    def load(self) -> dict[str, str]:
        return {}


def _local_uris_to_s3(doc: dict[str, Any]) -> None:
    # transform() insists on s3:// code locations; `sam build`/`sam package` do this swap for real.
    for resource in doc["Resources"].values():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://bucket/{props[key].strip('/')}"


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    """The SAM template as written (a private copy)."""
    return copy.deepcopy(load_template(REPO / "template.yaml"))


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The CloudFormation template SAM generates."""
    doc = copy.deepcopy(sam)
    _local_uris_to_s3(doc)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "eu-west-1")  # SAM wants a region for pseudo parameters, nothing else
        for var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(var, raising=False)
        yield transform(doc, {}, _NoManagedPolicies())


def _of_type(cfn: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in cfn["Resources"].items() if v["Type"] == type_}


def _props(cfn: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return cfn["Resources"][logical_id]["Properties"]  # type: ignore[no-any-return]


def _getatt(logical_id: str, attr: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attr]}


def _resolver(cfn: dict[str, Any], **parameters: Any) -> Resolver:
    """Evaluates Fn::If, Fn::FindInMap, conditions, ... of the generated template for these parameters."""
    return Resolver(cfn, parameters)


# -- triggers -----------------------------------------------------------------------------------


def test_schedule_rule_runs_the_planner_on_the_schedule_parameter(cfn: dict[str, Any]) -> None:
    rules = _of_type(cfn, "AWS::Events::Rule")
    scheduled = {k: v["Properties"] for k, v in rules.items() if "ScheduleExpression" in v["Properties"]}
    assert list(scheduled) == ["PlannerFunctionSweepSchedule"]
    rule = scheduled["PlannerFunctionSweepSchedule"]
    assert rule["ScheduleExpression"] == {"Ref": "ScheduleExpression"}
    assert rule["State"] == "ENABLED"
    assert [t["Arn"] for t in rule["Targets"]] == [_getatt("PlannerFunction", "Arn")]
    assert re.fullmatch(r"(rate|cron)\(.+\)", cfn["Parameters"]["ScheduleExpression"]["Default"])
    assert {"SweepMode", "AlertMode"} <= set(cfn["Parameters"])
    permission = _props(cfn, "PlannerFunctionSweepSchedulePermission")
    assert permission["Principal"] == "events.amazonaws.com"
    assert permission["SourceArn"] == _getatt("PlannerFunctionSweepSchedule", "Arn")


def test_spam_alert_rule_and_alarm_subscription_reach_the_alert_intake(cfn: dict[str, Any]) -> None:
    rules = _of_type(cfn, "AWS::Events::Rule")
    patterned = {k: v["Properties"] for k, v in rules.items() if "EventPattern" in v["Properties"]}
    assert list(patterned) == ["AlertIntakeFunctionSpamAlert"]
    rule = patterned["AlertIntakeFunctionSpamAlert"]
    assert rule["EventPattern"] == {"source": ["relayguard.alerts"], "detail-type": ["Spam Alert"]}
    assert rule["EventBusName"] == {"Ref": "AlertEventBusName"}
    assert [t["Arn"] for t in rule["Targets"]] == [_getatt("AlertIntakeFunction", "Arn")]

    subscriptions = _of_type(cfn, "AWS::SNS::Subscription")
    assert [s["Properties"] for s in subscriptions.values()] == [{
        "Protocol": "lambda",
        "TopicArn": {"Ref": "AlarmTopic"},
        "Endpoint": _getatt("AlertIntakeFunction", "Arn"),
    }]
    permissions = {(p["Properties"]["Principal"], str(p["Properties"]["SourceArn"]))
                   for p in _of_type(cfn, "AWS::Lambda::Permission").values()
                   if p["Properties"]["FunctionName"] == {"Ref": "AlertIntakeFunction"}}
    assert permissions == {("sns.amazonaws.com", str({"Ref": "AlarmTopic"})),
                           ("events.amazonaws.com", str(_getatt("AlertIntakeFunctionSpamAlert", "Arn")))}


def test_worker_polls_both_queues_with_partial_batch_failures_and_a_concurrency_cap(cfn: dict[str, Any]) -> None:
    mappings = [m["Properties"] for m in _of_type(cfn, "AWS::Lambda::EventSourceMapping").values()]
    assert sorted(m["EventSourceArn"]["Fn::GetAtt"][0] for m in mappings) == ["UrgentQueue", "WorkQueue"]
    for m in mappings:
        assert m["FunctionName"] == {"Ref": "WorkerFunction"}
        assert m["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
        assert m["ScalingConfig"] == {"MaximumConcurrency": {"Ref": "MaximumConcurrency"}}
        assert m.get("Enabled", True) is True
    cap = cfn["Parameters"]["MaximumConcurrency"]
    assert cap["MinValue"] >= 2, "AWS rejects MaximumConcurrency below 2 for SQS event sources"
    assert cap["MaxValue"] <= 1000
    assert cap["MinValue"] <= cap["Default"] <= cap["MaxValue"]


def test_one_fleet_wide_cap_bounds_the_ssh_jobs_of_both_queues(cfn: dict[str, Any]) -> None:
    worker = _props(cfn, "WorkerFunction")
    assert worker["ReservedConcurrentExecutions"] == {"Ref": "FleetConcurrency"}
    fleet, per_queue = cfn["Parameters"]["FleetConcurrency"], cfn["Parameters"]["MaximumConcurrency"]
    assert fleet["MinValue"] >= per_queue["MinValue"]
    # By default the two event sources together never exceed the cap, so neither is ever throttled
    # and a sweep cannot hold the alert queue's slots (docs/deploy.md, "One cap for SSH jobs").
    assert 2 * per_queue["Default"] <= fleet["Default"]
    for name in ("PlannerFunction", "AlertIntakeFunction"):
        assert "ReservedConcurrentExecutions" not in _props(cfn, name), name


def test_rollout_parameters_reach_the_settings_and_their_defaults_are_valid(cfn: dict[str, Any]) -> None:
    params = cfn["Parameters"]
    wiring = {"RG_MAX_CHANGES": "MaxChanges", "RG_MAX_ERRORS": "MaxErrors", "RG_CANARY_SIZE": "CanarySize",
              "RG_MAINTENANCE_WINDOW": "MaintenanceWindow", "RG_EXCLUDE_TAG": "ExcludeTag"}
    for name, fn in _of_type(cfn, "AWS::Lambda::Function").items():
        env = fn["Properties"]["Environment"]["Variables"]
        assert {v: env[v] for v in wiring} == {v: {"Ref": p} for v, p in wiring.items()}, name
    defaults = {v: str(params[p]["Default"]) for v, p in wiring.items()}
    settings = load_settings({**{v: "x" for v in ALL_VARIABLES if v not in wiring}, **defaults,
                              "RG_SWEEP_MODE": "fix", "RG_ALERT_MODE": "fix", "RG_USE_SUDO": "false",
                              "RG_DISABLE_TRACKER": "false", "RG_DNS_RESOLVER": "", **{v: "60" for v in _NUMERIC}})
    assert settings.rollout.canary >= 1, "the issue asks for a small canary by default"
    assert settings.rollout.max_errors is not None, "a fix sweep has an error budget by default"
    assert settings.maintenance_window is None
    for name in ("MaxChanges", "MaxErrors", "ExcludeTag"):
        pattern = params[name]["AllowedPattern"]
        assert re.fullmatch(pattern, str(params[name]["Default"])), name
    changes = params["MaxChanges"]["AllowedPattern"]
    assert all(re.fullmatch(changes, v) for v in ("unlimited", "0", "25"))
    assert not any(re.fullmatch(changes, v) for v in ("-1", "none", ""))
    errors = params["MaxErrors"]["AllowedPattern"]
    assert all(re.fullmatch(errors, v) for v in ("unlimited", "1", "2", "10%", "2.5%"))
    assert not any(re.fullmatch(errors, v) for v in ("0", "-1", "%", "ten"))


#: Numeric settings given a plain valid value when the rollout defaults are loaded above.
_NUMERIC = ("RG_COMMAND_TIMEOUT", "RG_LOCK_TTL_SECONDS", "RG_LOCK_RETRY_SECONDS", "RG_DEDUP_WINDOW_SECONDS",
            "RG_MAX_RECEIVE_COUNT", "RG_SAFETY_MARGIN_MS")


def test_alert_intake_has_explicit_async_retries_and_an_on_failure_queue(cfn: dict[str, Any]) -> None:
    configs = [c["Properties"] for c in _of_type(cfn, "AWS::Lambda::EventInvokeConfig").values()]
    assert len(configs) == 1
    (config,) = configs
    assert config["FunctionName"] == {"Ref": "AlertIntakeFunction"}
    assert 0 <= config["MaximumRetryAttempts"] <= 2  # explicit, within what Lambda accepts
    assert 60 <= config["MaximumEventAgeInSeconds"] <= 21600
    destination = config["DestinationConfig"]["OnFailure"]["Destination"]
    dlq = destination["Fn::GetAtt"][0]
    assert destination == _getatt(dlq, "Arn")
    assert cfn["Resources"][dlq]["Type"] == "AWS::SQS::Queue"
    assert dlq not in {m["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]
                       for m in _of_type(cfn, "AWS::Lambda::EventSourceMapping").values()}
    # Lambda sends the failed event with the function's role.
    sends = [s for s in _statements(cfn, "AlertIntakeFunctionRole") if destination in _as_list(s["Resource"])]
    assert sends
    assert all(s["Action"] in ("sqs:SendMessage", ["sqs:SendMessage"]) for s in sends)


# -- queues and timings -------------------------------------------------------------------------


def test_job_queues_redrive_to_their_own_dead_letter_queues(cfn: dict[str, Any]) -> None:
    dlqs = set()
    for name in ("WorkQueue", "UrgentQueue"):
        queue = _props(cfn, name)
        redrive = queue["RedrivePolicy"]
        assert redrive["maxReceiveCount"] == {"Ref": "MaxReceiveCount"}
        dlq = redrive["deadLetterTargetArn"]["Fn::GetAtt"][0]
        assert redrive["deadLetterTargetArn"] == _getatt(dlq, "Arn")
        # SQS keeps a message's original enqueue time in the DLQ: it must retain longer than the source.
        assert _props(cfn, dlq)["MessageRetentionPeriod"] > queue["MessageRetentionPeriod"]
        dlqs.add(dlq)
    assert len(dlqs) == 2
    receives = cfn["Parameters"]["MaxReceiveCount"]
    assert 1 <= receives["MinValue"] <= receives["Default"] <= receives["MaxValue"] <= 1000
    # The worker reports a server failed on its last receive, so it must know the same number.
    for fn in _of_type(cfn, "AWS::Lambda::Function").values():
        assert fn["Properties"]["Environment"]["Variables"]["RG_MAX_RECEIVE_COUNT"] == {"Ref": "MaxReceiveCount"}


def test_visibility_timeout_is_six_times_the_worker_timeout_for_every_allowed_value(cfn: dict[str, Any]) -> None:
    worker = _props(cfn, "WorkerFunction")
    assert worker["Timeout"] == {"Ref": "WorkerTimeout"}
    allowed = cfn["Parameters"]["WorkerTimeout"]["AllowedValues"]
    assert cfn["Parameters"]["WorkerTimeout"]["Default"] in allowed
    assert sorted(int(v) for v in cfn["Mappings"]["WorkerTiming"]) == sorted(int(v) for v in allowed)
    env = worker["Environment"]["Variables"]
    lock_ttl, margin_ms = int(env["RG_LOCK_TTL_SECONDS"]), int(env["RG_SAFETY_MARGIN_MS"])
    for timeout in allowed:
        r = _resolver(cfn, WorkerTimeout=timeout)
        seconds = int(r.value(worker["Timeout"]))
        assert seconds <= 900, "Lambda's maximum"
        assert seconds <= lock_ttl, "a lock must outlive the invocation holding it"
        assert seconds * 1000 > margin_ms, "the worker must have time left after its safety margin"
        for queue in ("WorkQueue", "UrgentQueue"):
            visibility = int(r.value(_props(cfn, queue)["VisibilityTimeout"]))
            assert 6 * seconds <= visibility <= 43200, (queue, timeout, visibility)


# -- functions, layers, encryption, VPC ---------------------------------------------------------


def test_every_function_is_python313_on_arm64_with_both_layers(cfn: dict[str, Any]) -> None:
    functions = _of_type(cfn, "AWS::Lambda::Function")
    assert sorted(functions) == ["AlertIntakeFunction", "PlannerFunction", "WorkerFunction"]
    layers = _of_type(cfn, "AWS::Lambda::LayerVersion")
    assert sorted(v["Properties"]["LayerName"] for v in layers.values()) == ["DepsLayer", "RelayGuardLayer"]
    for layer in layers.values():
        assert layer["Properties"]["CompatibleRuntimes"] == ["python3.13"]
        assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    for name, fn in functions.items():
        props = fn["Properties"]
        assert props["Runtime"] == "python3.13", name
        assert props["Architectures"] == ["arm64"], name
        assert props["Handler"] == "app.lambda_handler", name
        assert props["TracingConfig"] == {"Mode": "Active"}, name
        assert sorted(layer["Ref"] for layer in props["Layers"]) == sorted(layers), name


def test_template_sets_exactly_the_variables_the_settings_read(cfn: dict[str, Any]) -> None:
    for name, fn in _of_type(cfn, "AWS::Lambda::Function").items():
        variables = fn["Properties"]["Environment"]["Variables"]
        assert sorted(v for v in variables if v.startswith("RG_")) == sorted(ALL_VARIABLES), name


class _RecordingDynamoDB:
    """Stands in for boto3's DynamoDB client: keeps the items written."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def put_item(self, **kwargs: Any) -> dict[str, Any]:
        self.items.append(kwargs["Item"])
        return {}

    def update_item(self, **kwargs: Any) -> dict[str, Any]:
        return {"Attributes": {}}


def test_tables_expire_items_by_the_attribute_the_code_writes(cfn: dict[str, Any]) -> None:
    ttl = {lid: props["TimeToLiveSpecification"] for lid, res in _of_type(cfn, "AWS::DynamoDB::Table").items()
           if "TimeToLiveSpecification" in (props := res["Properties"])}
    assert all(spec["Enabled"] for spec in ttl.values())
    runs, locks = _RecordingDynamoDB(), _RecordingDynamoDB()
    DynamoRunStore(runs, "runs").create("sweep-1", "audit", "sweep", 1, "2026-12-01T06:00:00+00:00")  # type: ignore[arg-type]
    DynamoLockStore(locks, "locks").acquire("web1", "job-1", 900)  # type: ignore[arg-type]
    (run_item,), (lock_item,) = runs.items, locks.items
    # Powertools' idempotency records, as bootstrap makes the persistence layer (its default name).
    idempotency = inspect.signature(DynamoDBPersistenceLayer).parameters["expiry_attr"].default
    assert set(ttl) == {"RunsTable", "LocksTable", "IdempotencyTable"}
    # Each item the code writes carries the table's TTL attribute as an epoch number, or it never expires.
    for item, table in ((run_item, "RunsTable"), (lock_item, "LocksTable")):
        assert set(item[ttl[table]["AttributeName"]]) == {"N"}, table
    assert ttl["IdempotencyTable"]["AttributeName"] == idempotency
    # The state table keeps each server's last state for as long as the server is in the inventory.
    assert "TimeToLiveSpecification" not in _props(cfn, "StateTable")


STACK_KEY = {"Fn::If": ["CreateKmsKey", _getatt("KmsKey", "Arn"), {"Ref": "KmsKeyArn"}]}


def test_everything_the_stack_stores_is_encrypted_with_its_customer_managed_key(cfn: dict[str, Any]) -> None:
    for name, queue in _of_type(cfn, "AWS::SQS::Queue").items():
        assert queue["Properties"]["KmsMasterKeyId"] == STACK_KEY, name
        assert "SqsManagedSseEnabled" not in queue["Properties"], name
    for name, topic in _of_type(cfn, "AWS::SNS::Topic").items():
        assert topic["Properties"]["KmsMasterKeyId"] == STACK_KEY, name
    for name, table in _of_type(cfn, "AWS::DynamoDB::Table").items():
        assert table["Properties"]["SSESpecification"] == {
            "SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": STACK_KEY}, name
    (sse,) = _props(cfn, "RecordsBucket")["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse == {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": STACK_KEY},
                   "BucketKeyEnabled": True}
    assert cfn["Outputs"]["KmsKeyArn"]["Value"] == STACK_KEY
    assert set(_of_type(cfn, "AWS::SQS::Queue")) >= {"WorkQueue", "WorkDLQ", "UrgentQueue", "UrgentDLQ",
                                                     "AlertIntakeDLQ"}
    for fn in _of_type(cfn, "AWS::Lambda::Function").values():
        assert fn["Properties"]["Environment"]["Variables"]["RG_TOPIC_ARN"] == {"Ref": "ResultsTopic"}


def test_the_stack_creates_its_key_unless_one_is_given(cfn: dict[str, Any]) -> None:
    parameter = cfn["Parameters"]["KmsKeyArn"]
    assert parameter["Default"] == ""
    assert re.fullmatch(parameter["AllowedPattern"], "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd")
    assert not re.fullmatch(parameter["AllowedPattern"], "alias/aws/sns")
    assert _resolver(cfn).condition("CreateKmsKey") is True
    given = _resolver(cfn, KmsKeyArn="arn:aws:kms:eu-west-1:123456789012:key/1234abcd")
    assert given.condition("CreateKmsKey") is False
    assert given.value(STACK_KEY) == "arn:aws:kms:eu-west-1:123456789012:key/1234abcd"
    key = cfn["Resources"]["KmsKey"]
    assert key["Condition"] == "CreateKmsKey"
    assert (key["DeletionPolicy"], key["Properties"]["EnableKeyRotation"]) == ("Retain", True)  # records outlive it
    statements = {s["Sid"]: s for s in key["Properties"]["KeyPolicy"]["Statement"]}
    assert statements["AccountIamPolicies"]["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    # The services that encrypt on RelayGuard's behalf may only generate and decrypt data keys.
    for sid in ("DeliveriesFromThisAccount", "CloudWatchAlarmsToEncryptedTopic"):
        assert sorted(statements[sid]["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"], sid
    assert statements["DeliveriesFromThisAccount"]["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    assert statements["CloudWatchAlarmsToEncryptedTopic"]["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    # and the alarm topic lets only this account's CloudWatch publish.
    (publish,) = _props(cfn, "AlarmTopicPolicy")["PolicyDocument"]["Statement"]
    assert publish["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_every_bucket_blocks_public_access_and_refuses_plain_http(cfn: dict[str, Any]) -> None:
    buckets = _of_type(cfn, "AWS::S3::Bucket")
    policies = {p["Properties"]["Bucket"]["Ref"]: p["Properties"]["PolicyDocument"]["Statement"]
                for p in _of_type(cfn, "AWS::S3::BucketPolicy").values()}
    assert set(policies) == set(buckets)
    for name, bucket in buckets.items():
        block = bucket["Properties"]["PublicAccessBlockConfiguration"]
        assert block == dict.fromkeys(("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls",
                                       "RestrictPublicBuckets"), True), name
        (deny,) = [s for s in policies[name] if s["Effect"] == "Deny"]
        assert (deny["Principal"], deny["Action"]) == ("*", "s3:*"), name
        assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}, name
        assert deny["Resource"] == [_getatt(name, "Arn"), {"Fn::Sub": "${" + name + ".Arn}/*"}], name


def test_job_records_go_to_a_retained_versioned_private_encrypted_bucket(cfn: dict[str, Any]) -> None:
    bucket = cfn["Resources"]["RecordsBucket"]
    props = bucket["Properties"]
    assert (bucket["DeletionPolicy"], bucket["UpdateReplacePolicy"]) == ("Retain", "Retain")
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (sse,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "aws:kms"
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    (deny,) = _props(cfn, "RecordsBucketPolicy")["PolicyDocument"]["Statement"]
    assert (deny["Effect"], deny["Condition"]) == ("Deny", {"Bool": {"aws:SecureTransport": "false"}})
    for fn in _of_type(cfn, "AWS::Lambda::Function").values():
        assert fn["Properties"]["Environment"]["Variables"]["RG_RECORDS_BUCKET"] == {"Ref": "RecordsBucket"}


def test_only_the_worker_writes_records_below_their_prefix_none_deletes_one(cfn: dict[str, Any]) -> None:
    on_bucket = {str(s["Resource"]["Fn::Sub"][0]): s for s in _statements(cfn, "WorkerFunctionRole")
                 if "RecordsBucket" in str(s["Resource"])}
    bucket = "arn:${AWS::Partition}:s3:::${Bucket}"
    assert set(on_bucket) == {bucket + "/" + PREFIX + "*", bucket + "/" + REPORTS_PREFIX + "*", bucket}
    for statement in on_bucket.values():
        assert statement["Resource"]["Fn::Sub"][1] == {"Bucket": {"Ref": "RecordsBucket"}}
    assert sorted(_as_list(on_bucket[bucket + "/" + PREFIX + "*"]["Action"])) == ["s3:GetObject", "s3:PutObject"]
    # The fleet report (issue 15): list the records only, and write pages beside them, never over one.
    assert _as_list(on_bucket[bucket]["Action"]) == ["s3:ListBucket"]
    assert on_bucket[bucket]["Condition"] == {"StringLike": {"s3:prefix": PREFIX + "*"}}
    assert _as_list(on_bucket[bucket + "/" + REPORTS_PREFIX + "*"]["Action"]) == ["s3:PutObject"]
    assert not PREFIX.startswith(REPORTS_PREFIX)
    assert not REPORTS_PREFIX.startswith(PREFIX)
    # The planner writes the report page of a run it closes: it reads records, and writes only pages.
    planner = {str(s["Resource"]["Fn::Sub"][0]): s for s in _statements(cfn, "PlannerFunctionRole")
               if "RecordsBucket" in str(s["Resource"])}
    assert {key: _as_list(statement["Action"]) for key, statement in planner.items()} == {
        bucket: ["s3:ListBucket"], bucket + "/" + PREFIX + "*": ["s3:GetObject"],
        bucket + "/" + REPORTS_PREFIX + "*": ["s3:PutObject"]}
    assert planner[bucket]["Condition"] == on_bucket[bucket]["Condition"]
    assert "RecordsBucket" not in str(_statements(cfn, "AlertIntakeFunctionRole"))


def test_vpc_placement_is_off_by_default_and_on_when_subnets_are_given(cfn: dict[str, Any]) -> None:
    functions = _of_type(cfn, "AWS::Lambda::Function")
    default = _resolver(cfn)
    placed = _resolver(cfn, SubnetIds=["subnet-0a", "subnet-0b"], SecurityGroupIds=["sg-0c"])
    for name, fn in functions.items():
        node = fn["Properties"]["VpcConfig"]
        assert default.value(node) is NO_VALUE, name  # CloudFormation drops the property
        assert placed.value(node) == {"SubnetIds": ["subnet-0a", "subnet-0b"], "SecurityGroupIds": ["sg-0c"]}, name
    assert default.condition("UseVpc") is False
    assert placed.condition("UseVpc") is True


# -- IAM ------------------------------------------------------------------------------------------

def _policies(policy: dict[str, Any]) -> list[dict[str, Any]]:
    """A role's policy, or each branch of a conditional one (``Fn::If``, e.g. ChatNotifications): the checks
    hold whichever way the condition goes."""
    if "Fn::If" in policy:
        _, *branches = policy["Fn::If"]
        return [p for branch in branches if branch != {"Ref": "AWS::NoValue"} for p in _policies(branch)]
    return [policy]


def _statements(cfn: dict[str, Any], role: str) -> list[dict[str, Any]]:
    return [s for policy in _props(cfn, role).get("Policies", []) for branch in _policies(policy)
            for s in branch["PolicyDocument"]["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@pytest.fixture(scope="module")
def code() -> iam.Code:
    return iam.Code()


@pytest.mark.parametrize("conditions", [
    {}, {"UseVpc": True}, {"ChatEnabled": True}, {"UseVpc": True, "ChatEnabled": True},
], ids=["plain", "vpc", "chat", "vpc+chat"])
def test_each_role_grants_exactly_the_calls_its_function_makes(code: iam.Code, conditions: dict[str, bool]) -> None:
    """The AWS calls are derived from the code (harness/iam.py), never listed here: a new boto3 call,
    adapter or Powertools utility in a function's wiring needs its statement, and a statement nothing
    calls fails too."""
    template = iam.Template()
    functions = iam.functions()
    assert {f.logical_id for f in functions} == set(_of_type(template.doc, "AWS::Serverless::Function"))
    roles = set()
    for function in functions:
        role = template.role_of(function.logical_id)
        roles.add(role)
        needed = iam.derived(function, template, code, conditions)
        granted = template.granted(role, conditions)
        assert {"missing": sorted(needed - granted), "extra": sorted(granted - needed)} == \
            {"missing": [], "extra": []}, function.logical_id
    assert len(roles) == len(functions), "one role per function"


def test_the_derivation_reads_the_code_not_a_list(tmp_path: Path) -> None:
    """A call added to an adapter shows up on the roles of the functions that reach it, and only there."""
    import shutil

    package = tmp_path / "relayguard"
    shutil.copytree(iam.PACKAGE, package)
    records = package / "adapters" / "s3_records.py"
    text = records.read_text()
    assert "        return f\"s3://{self.bucket}/{key}\"\n" in text
    records.write_text(text.replace("        return f\"s3://{self.bucket}/{key}\"\n",
                                    "        self.client.delete_object(Bucket=self.bucket, Key=key)\n"
                                    "        return f\"s3://{self.bucket}/{key}\"\n", 1))
    changed, template = iam.Code(package), iam.Template()
    by_id = {f.logical_id: f for f in iam.functions()}
    assert ("s3:DeleteObject", "RecordsBucket") in iam.derived(by_id["WorkerFunction"], template, changed)
    for other in ("PlannerFunction", "AlertIntakeFunction"):
        assert not any(a == "s3:DeleteObject" for a, _ in iam.derived(by_id[other], template, changed)), other


def test_the_derivation_follows_ports_to_the_wired_adapters(code: iam.Code) -> None:
    by_id = {f.logical_id: iam.derived(f, code=code) for f in iam.functions()}
    # The planner's Publisher has a state store and a record store wired, but the planner never calls them;
    # its run reports (a port too) list and read records and write a page.
    assert not {r for _, r in by_id["PlannerFunction"]} & {"StateTable", "LocksTable"}
    assert {a for a, r in by_id["PlannerFunction"] if r == "RecordsBucket"} == {
        "s3:ListBucket", "s3:GetObject", "s3:PutObject"}
    # The worker's fix gate (RunGate, a FixGate the engine calls) reserves fixes in one transaction.
    assert {("dynamodb:PutItem", "RunsTable"), ("dynamodb:UpdateItem", "RunsTable")} <= by_id["WorkerFunction"]
    # Requeueing sends to the queue the job came from: both event sources, and no other queue.
    assert {r for a, r in by_id["WorkerFunction"] if a == "sqs:SendMessage"} == {"WorkQueue", "UrgentQueue"}
    # Powertools Idempotency's calls, on the table bootstrap hands it.
    assert {a for a, r in by_id["AlertIntakeFunction"] if r == "IdempotencyTable"} == {
        "dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"}


def _own_resource(resource: Any, ours: set[str]) -> str:
    """The logical id (or parameter) a policy statement's Resource is scoped to; fails on anything else."""
    assert isinstance(resource, dict), f"literal resource {resource!r}"
    if "Fn::If" in resource:
        _, *branches = resource["Fn::If"]
        return "|".join(sorted({_own_resource(b, ours) for b in branches}))
    if set(resource) == {"Ref"} or set(resource) == {"Fn::GetAtt"}:
        target = resource["Ref"] if "Ref" in resource else resource["Fn::GetAtt"][0]
        assert target in ours, resource
        return str(target)
    assert set(resource) == {"Fn::Sub"}, resource
    sub = resource["Fn::Sub"]
    if sub == SECRET_ARN:
        return "secret"
    if isinstance(sub, str):
        # "${Bucket.Arn}/${Key}": an object of a bucket of this stack, its key a parameter.
        match = re.fullmatch(r"\$\{(\w+)\.Arn\}/\$\{(\w+)\}", sub)
        assert match, sub
        assert match.group(1) in ours, sub
        return match.group(1)
    text, variables = sub
    (name, value), = variables.items()
    target = value["Ref"] if "Ref" in value else value["Fn::GetAtt"][0]
    assert target in ours, resource
    # An ARN of this account and region whose only wildcard is a suffix within the named resource.
    assert text.startswith("arn:${AWS::Partition}:"), text
    assert re.fullmatch(r"[^*]*\$\{" + name + r"\}(/index/\*|/\*|/records/\*|/reports/\*)?", text), text
    placeholders = set(re.findall(r"\$\{([^}]+)\}", text)) - {name}
    assert placeholders <= set(PSEUDO), text
    return str(target)


def test_iam_is_scoped_to_this_stacks_resources(cfn: dict[str, Any]) -> None:
    roles = _of_type(cfn, "AWS::IAM::Role")
    assert sorted(roles) == ["AlertIntakeFunctionRole", "PlannerFunctionRole", "WorkerFunctionRole"]
    ours = set(cfn["Resources"]) | set(cfn["Parameters"])
    for role, spec in roles.items():
        props = spec["Properties"]
        assert props["AssumeRolePolicyDocument"]["Statement"] == [{
            "Action": ["sts:AssumeRole"], "Effect": "Allow", "Principal": {"Service": ["lambda.amazonaws.com"]}}]
        assert "ManagedPolicyArns" not in props, role
        # The VPC policy exists only when subnets are given.
        (vpc,) = [p["Fn::If"] for p in props["Policies"] if p.get("Fn::If", [""])[0] == "UseVpc"]
        assert vpc[2] == {"Ref": "AWS::NoValue"}, role
        for statement in _statements(cfn, role):
            assert statement["Effect"] == "Allow"
            assert statement.get("Sid"), (role, statement)
            actions = _as_list(statement["Action"])
            assert not [a for a in actions if "*" in a], (role, actions)
            if statement["Resource"] == "*":
                # Only actions AWS lets take no narrower resource, each with its reason in harness/iam.py.
                assert set(actions) <= set(iam.UNSCOPED), (role, actions)
                continue
            for resource in _as_list(statement["Resource"]):
                _own_resource(resource, ours)
    secret = cfn["Parameters"]["SshKeySecretName"]
    assert "*" not in secret["Default"]  # the ARN pattern's "-*" is Secrets Manager's random suffix only


def test_iam_check_rejects_unscoped_resources() -> None:
    ours = {"RunsTable"}
    table = "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:table/${t}"
    for bad in ("*", {"Ref": "SomeoneElsesTable"}, {"Fn::Sub": [table + "*", {"t": {"Ref": "RunsTable"}}]},
                {"Fn::Sub": ["arn:aws:dynamodb:*:*:table/${t}", {"t": {"Ref": "RunsTable"}}]},
                {"Fn::Sub": "${RunsTable.Arn}/*"}):
        with pytest.raises(AssertionError):
            _own_resource(bad, ours)
    assert _own_resource({"Fn::Sub": [table + "/index/*", {"t": {"Ref": "RunsTable"}}]}, ours) == "RunsTable"


def test_every_function_logs_to_a_log_group_of_its_own(cfn: dict[str, Any]) -> None:
    groups = _of_type(cfn, "AWS::Logs::LogGroup")
    seen = set()
    for name, fn in _of_type(cfn, "AWS::Lambda::Function").items():
        (group,) = [g for g in groups if fn["Properties"]["LoggingConfig"]["LogGroup"] == {"Ref": g}]
        assert group not in seen, name
        seen.add(group)
        assert groups[group]["Properties"]["RetentionInDays"] > 0


# -- pins -----------------------------------------------------------------------------------------


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^\]]*\])?==([^\s;]+)", line)
        assert match, f"{path.name}: not an exact, marker-free pin: {raw!r}"
        pins[re.sub(r"[-_.]+", "-", match.group(1)).lower()] = match.group(3)
    return pins


def test_deps_layer_pins_equal_the_constraints() -> None:
    layer = _pins(REPO / "layers" / "deps" / "requirements.txt")
    constraints = _pins(REPO / "constraints.txt")
    assert {"paramiko", "aws-lambda-powertools", "pydantic", "pyyaml"} <= set(layer)
    assert {name: (version, constraints.get(name)) for name, version in layer.items()
            if constraints.get(name) != version} == {}


# -- the linter CI runs ---------------------------------------------------------------------------


def test_cfn_lint_is_pinned_to_the_release_that_still_lints_the_sam_transform() -> None:
    # cfn-lint 1.54.0 stopped running the SAM transform and misses errors inside SAM resources
    # (toolchain.md §2); scripts/test's `sam validate --lint` uses the copy in requirements-sam.txt.
    assert _pins(REPO / "requirements-sam.txt")["cfn-lint"] == "1.53.3"
    assert _pins(REPO / "constraints.txt")["cfn-lint"] == "1.53.3"


def test_cfn_lint_rejects_a_malformed_schedule() -> None:
    from cfnlint import ManualArgs  # 2 s of imports, paid by this test only
    from cfnlint.api import lint

    text = (REPO / "template.yaml").read_text()
    assert "Default: rate(1 day)" in text
    matches = lint(text.replace("Default: rate(1 day)", "Default: rate(5 minute)"),
                   config=ManualArgs(regions=["eu-west-1"]))
    assert [(m.rule.id, "'minute' is not one of" in m.message) for m in matches] == [("W1030", True)]


def test_chat_notifications_add_a_chat_topic_the_planner_and_worker_publish_to(cfn: dict[str, Any]) -> None:
    assert cfn["Parameters"]["ChatNotifications"]["Default"] == "off"
    assert cfn["Resources"]["ChatTopic"]["Condition"] == "ChatEnabled"
    assert _props(cfn, "ChatTopic")["KmsMasterKeyId"] == _props(cfn, "ResultsTopic")["KmsMasterKeyId"]
    assert cfn["Outputs"]["ChatTopicArn"]["Condition"] == "ChatEnabled"
    functions = _of_type(cfn, "AWS::Lambda::Function")
    for setting, expected in (("off", ""), ("chatbot", "arn:chat")):
        resolver = Resolver(cfn, {"ChatNotifications": setting, "ChatTopic": "arn:chat"})
        for name, fn in functions.items():
            assert resolver.value(fn["Properties"]["Environment"]["Variables"]["RG_CHAT_TOPIC_ARN"]) == expected, name
    # Only the functions that publish may publish to it, and only when it exists.
    for role in ("PlannerFunctionRole", "WorkerFunctionRole"):
        conditional = [p for p in _props(cfn, role)["Policies"] if "Fn::If" in p and p["Fn::If"][0] != "UseVpc"]
        assert [p["Fn::If"][0] for p in conditional] == ["ChatEnabled"], role
        (statement,) = conditional[0]["Fn::If"][1]["PolicyDocument"]["Statement"]
        assert _as_list(statement["Action"]) == ["sns:Publish"]
        assert _own_resource(statement["Resource"], set(cfn["Resources"])) == "ChatTopic"
    intake = _props(cfn, "AlertIntakeFunctionRole")["Policies"]
    assert not any(p.get("Fn::If", [""])[0] == "ChatEnabled" for p in intake)
