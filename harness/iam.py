"""The AWS calls each Lambda function makes, derived from the code, as IAM (action, resource) pairs.

tests/unit/test_template.py compares what this derives with the policies template.yaml gives each
function's role: nothing missing, nothing extra. No list of permissions is kept by hand here; what is
kept by hand is how to read the code (the rules below) and a few facts about AWS (which API call needs
which IAM action, which actions accept no resource, what Powertools utilities call).

How the calls are found, by reading the source (``ast``) of ``layers/relayguard/relayguard``:

1. The function's code: ``template.yaml`` gives its ``CodeUri``; ``functions/<name>/app.py`` re-exports a
   handler of ``relayguard.entrypoints.<module>``. Everything that module defines is a root, including
   ``make_handler``'s default arguments (``bootstrap.worker``...): that is how the composition root is reached.
2. A walk over functions and methods, typed by the code's own annotations: ``x.m`` where ``x``'s type is a
   package class reaches that class's ``m``; a package function named (called, or passed on, as
   ``functools.partial(plan_sweep, ...)`` does) is reached; ``x.m`` where ``x``'s type is a port (a
   ``Protocol`` of ``relayguard.ports``) is a *port call*.
3. Constructions of adapter classes (``relayguard.adapters``) and Powertools utilities met on the walk are
   this function's wiring; each ``settings.<field>`` argument names the resource (``config.py`` maps the field
   to its ``RG_*`` variable, the template maps that to a resource).
4. A port call reaches the method of every constructed adapter that implements the port (has all its
   methods), and of every package class that does (``RunGate`` is a ``FixGate``).
5. In an adapter's methods, ``self.<client>.<api>(...)`` with ``<client>`` annotated as a ``mypy_boto3_*``
   client is a boto3 call: :data:`ACTIONS` turns the API into IAM actions. Its resource is the adapter's
   constructed resource; an adapter built without one (the job queue) takes it from the port call's
   ``settings.<field>`` argument, or, if the call passes on a queue URL it was handed (the worker requeues a
   job on the queue it came from), the function's SQS event sources.

Then what Lambda itself does with the function's role, read from the template: logs to the function's log
group, X-Ray segments, polling of SQS event sources, the asynchronous on-failure destination, VPC
network interfaces. And KMS: a call on a resource encrypted with the stack's key (:data:`KMS`) needs the
KMS actions AWS documents for that call.

Adding AWS calls: write the adapter as the others are (a ``mypy_boto3`` client annotation, resources from
``Settings``), wire it in ``bootstrap``; if an API's IAM action is not its CamelCase name, add it to
:data:`ACTIONS`; an action that accepts no resource goes in :data:`UNSCOPED`, with the reason.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.template import REPO_ROOT, load_template

PACKAGE = REPO_ROOT / "layers" / "relayguard" / "relayguard"
FUNCTION_TYPE = "AWS::Serverless::Function"

#: boto3 APIs whose IAM action is not the API's CamelCase name.
ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("sqs", "send_message_batch"): ("sqs:SendMessage",),
    ("sqs", "delete_message_batch"): ("sqs:DeleteMessage",),
    ("sqs", "change_message_visibility_batch"): ("sqs:ChangeMessageVisibility",),
    ("dynamodb", "batch_get_item"): ("dynamodb:BatchGetItem",),
    ("dynamodb", "transact_get_items"): ("dynamodb:GetItem",),
    ("s3", "head_object"): ("s3:GetObject",),
    ("s3", "list_objects_v2"): ("s3:ListBucket",),
}
#: TransactWriteItems is authorised per item: each kind of item in the transaction needs its own action.
TRANSACT_ITEMS = {"Put": "dynamodb:PutItem", "Update": "dynamodb:UpdateItem", "Delete": "dynamodb:DeleteItem",
                  "ConditionCheck": "dynamodb:ConditionCheckItem"}

#: Powertools utilities: what each calls (Powertools' documented IAM permissions), and on what.
POWERTOOLS_CONSTRUCTED = {
    # Idempotency: the persistence layer reads, writes, updates and deletes its records in ``table_name``.
    "DynamoDBPersistenceLayer": ("dynamodb", ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                                              "dynamodb:DeleteItem")),
}
POWERTOOLS_METHODS = {
    ("SecretsProvider", "get"): "secretsmanager:GetSecretValue",
    ("SSMProvider", "get"): "ssm:GetParameter",
}

#: Actions that accept no resource but "*", and why nothing narrower is possible.
UNSCOPED = {
    "xray:PutTraceSegments": "X-Ray has no resource types",
    "xray:PutTelemetryRecords": "X-Ray has no resource types",
    "cloudwatch:PutMetricData": "PutMetricData has no resource types (a namespace condition narrows it)",
    "cloudwatch:GetMetricData": "GetMetricData has no resource types",
    "ec2:CreateNetworkInterface": "Lambda creates interfaces in subnets it is told at invocation time",
    "ec2:DescribeNetworkInterfaces": "Describe* actions accept no resource",
    "ec2:DescribeSubnets": "Describe* actions accept no resource",
    "ec2:DeleteNetworkInterface": "the interfaces are Lambda's, created at run time",
    "ec2:AssignPrivateIpAddresses": "the interfaces are Lambda's, created at run time",
    "ec2:UnassignPrivateIpAddresses": "the interfaces are Lambda's, created at run time",
}

#: Lambda's own calls with the function's role (AWS Lambda developer guide).
SQS_EVENT_SOURCE = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes")
LOGS = ("logs:CreateLogStream", "logs:PutLogEvents")
XRAY = ("xray:PutTraceSegments", "xray:PutTelemetryRecords")
VPC = ("ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets",
       "ec2:DeleteNetworkInterface", "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses")

#: KMS actions a caller needs for a call on a resource encrypted with a customer-managed key.
KMS: dict[str, tuple[str, ...]] = {
    # SQS: producers generate the data key and decrypt it (SQS developer guide, "Key management").
    "sqs:SendMessage": ("kms:GenerateDataKey", "kms:Decrypt"),
    "sqs:ReceiveMessage": ("kms:Decrypt",),
    # SNS: publishers to an encrypted topic need both (SNS developer guide, "Encryption at rest").
    "sns:Publish": ("kms:GenerateDataKey", "kms:Decrypt"),
    # S3 SSE-KMS: writing generates a data key, reading decrypts it.
    "s3:PutObject": ("kms:GenerateDataKey",),
    "s3:GetObject": ("kms:Decrypt",),
    "secretsmanager:GetSecretValue": ("kms:Decrypt",),
    # DynamoDB decrypts the table key with the caller's permission (DynamoDB guide, "Encryption at rest").
    **{f"dynamodb:{a}": ("kms:Decrypt",) for a in (
        "GetItem", "PutItem", "UpdateItem", "DeleteItem", "ConditionCheckItem", "Query", "Scan", "BatchGetItem",
        "BatchWriteItem")},
}
#: The stack's KMS key as a resource of the policies: the key the stack creates, or the one given.
KMS_KEY = "KmsKey"
KMS_KEY_PARAMETER = "KmsKeyArn"

#: Template parameters that name a resource the stack does not create, and that resource's service.
PARAMETER_RESOURCES = {"SshKeySecretName": "secretsmanager"}
#: Of those, the ones docs/deploy.md has the operator encrypt with the stack's key.
PARAMETER_ENCRYPTED = {"SshKeySecretName"}

SERVICE_OF_TYPE = {"AWS::DynamoDB::Table": "dynamodb", "AWS::SQS::Queue": "sqs", "AWS::SNS::Topic": "sns",
                   "AWS::S3::Bucket": "s3", "AWS::SecretsManager::Secret": "secretsmanager",
                   "AWS::Logs::LogGroup": "logs", "AWS::KMS::Key": "kms"}

Pair = tuple[str, str]  # (IAM action, resource: a logical id, a parameter name, or "*")


class DerivationError(AssertionError):
    """The code or the template is outside what the derivation understands, or they disagree."""


def _require(condition: object, message: object) -> None:
    if not condition:
        raise DerivationError(message)


def camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


# -- the code ----------------------------------------------------------------------------------------


def _type_name(node: ast.expr | None) -> str | None:  # noqa: PLR0911 - one per syntax form
    """The class an annotation names (``X | None`` -> X, ``mod.X`` -> X, ``Callable[..., R]`` -> ``->R``)."""
    if node is None:
        return None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return _type_name(ast.parse(node.value, mode="eval").body)
    if isinstance(node, ast.Name):
        return None if node.id == "None" else node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return _type_name(node.left) or _type_name(node.right)
    if isinstance(node, ast.Subscript):
        outer = _type_name(node.value)
        if outer == "Callable" and isinstance(node.slice, ast.Tuple) and len(node.slice.elts) == 2:
            result = _type_name(node.slice.elts[1])
            return f"->{result}" if result else None
        if outer == "Optional":
            return _type_name(node.slice)
    return None


@dataclass
class ClassInfo:
    name: str
    module: str
    node: ast.ClassDef
    methods: dict[str, ast.FunctionDef] = field(default_factory=dict)
    attrs: dict[str, str] = field(default_factory=dict)
    protocol: bool = False


@dataclass
class Module:
    name: str
    tree: ast.Module
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)
    #: local name -> ("module", dotted) or ("name", dotted module, name)
    imports: dict[str, tuple[str, ...]] = field(default_factory=dict)


class Code:
    """The package's modules, classes and functions, as syntax trees."""

    def __init__(self, root: Path = PACKAGE) -> None:
        self.modules: dict[str, Module] = {}
        self.classes: dict[str, ClassInfo] = {}
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root.parent).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            module = Module(name, ast.parse(path.read_text(), str(path)))
            self.modules[name] = module
            for node in ast.walk(module.tree):
                if isinstance(node, ast.ImportFrom) and node.module:
                    for alias in node.names:
                        dotted = f"{node.module}.{alias.name}"
                        module.imports[alias.asname or alias.name] = ("name", node.module, alias.name, dotted)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        module.imports[alias.asname or alias.name.split(".")[0]] = ("module", alias.name)
            for node in module.tree.body:
                if isinstance(node, ast.FunctionDef):
                    module.functions[node.name] = node
                elif isinstance(node, ast.ClassDef):
                    self._add_class(module, node)
                elif (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)
                      and isinstance(node.value, ast.Name) and node.value.id in module.functions):
                    module.functions[node.targets[0].id] = module.functions[node.value.id]  # an alias
        self.settings_fields = self._settings_fields()

    def _add_class(self, module: Module, node: ast.ClassDef) -> None:
        info = ClassInfo(node.name, module.name, node,
                         protocol=any(_type_name(b) == "Protocol" for b in node.bases))
        for item in node.body:
            if isinstance(item, ast.FunctionDef):
                info.methods[item.name] = item
            elif (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
                  and (t := _type_name(item.annotation)) is not None):
                info.attrs[item.target.id] = t
        init = info.methods.get("__init__")
        if init is not None:
            params = {a.arg: _type_name(a.annotation) for a in init.args.args + init.args.kwonlyargs}
            for stmt in ast.walk(init):
                if (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                        and isinstance(target := stmt.targets[0], ast.Attribute)
                        and isinstance(target.value, ast.Name) and target.value.id == "self"):
                    value = stmt.value.values[0] if isinstance(stmt.value, ast.BoolOp) else stmt.value
                    if isinstance(value, ast.Name) and params.get(value.id):
                        info.attrs[target.attr] = params[value.id]  # type: ignore[assignment]
        # A name defined twice (two modules) would make the walk ambiguous: keep the first, the test says so.
        self.classes.setdefault(node.name, info)

    def _settings_fields(self) -> dict[str, str]:
        """Settings field -> the environment variable it is read from (config.load_settings)."""
        config = self.modules["relayguard.config"]
        constants = {t.id: n.value.value for n in config.tree.body if isinstance(n, ast.Assign)
                     for t in n.targets if isinstance(t, ast.Name)
                     and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
        fields: dict[str, str] = {}
        for node in ast.walk(config.functions["load_settings"]):
            if isinstance(node, ast.Call) and _type_name(node.func) == "Settings":
                for kw in node.keywords:
                    names = [n.id for n in ast.walk(kw.value) if isinstance(n, ast.Name) and n.id in constants]
                    if names and kw.arg:
                        fields[kw.arg] = constants[names[0]]
        return fields

    def is_adapter(self, cls: str) -> bool:
        info = self.classes.get(cls)
        return info is not None and info.module.startswith("relayguard.adapters")

    def implements(self, cls: ClassInfo, port: ClassInfo) -> bool:
        wanted = {m for m in port.methods if not m.startswith("__")} or set(port.methods)
        return not cls.protocol and bool(wanted) and wanted <= set(cls.methods)


@dataclass(frozen=True)
class Construction:
    """An adapter or utility built in the function's wiring, with the Settings fields it was given."""

    cls: str
    fields: tuple[str, ...]


@dataclass(frozen=True)
class Call:
    """An AWS API call: its service, IAM actions, and the Settings fields (or a fallback) naming its resource."""

    service: str
    actions: tuple[str, ...]
    fields: tuple[str, ...]
    from_event_source: bool = False


@dataclass
class Walk:
    """What one function's code reaches."""

    code: Code
    constructions: set[Construction] = field(default_factory=set)
    #: (port class, method, Settings fields of the call's arguments, passes on an unresolved argument)
    port_calls: set[tuple[str, str, tuple[str, ...]]] = field(default_factory=set)
    calls: set[Call] = field(default_factory=set)
    seen: set[tuple[str, str | None, str, tuple[tuple[str, str], ...]]] = field(default_factory=set)

    # -- types -------------------------------------------------------------------------------------
    def type_of(self, expr: ast.expr, env: dict[str, str], module: Module) -> str | None:  # noqa: PLR0911, PLR0912 - one per syntax form
        if isinstance(expr, ast.Name):
            return env.get(expr.id)
        if isinstance(expr, ast.Attribute):
            owner = self.type_of(expr.value, env, module)
            info = self.code.classes.get(owner or "")
            if info is None:
                return None
            if expr.attr in info.attrs:
                return info.attrs[expr.attr]
            method = info.methods.get(expr.attr)
            if method is not None and any(_type_name(d) == "property" for d in method.decorator_list):
                return _type_name(method.returns)
            return None
        if isinstance(expr, ast.BoolOp):
            return next((t for v in expr.values if (t := self.type_of(v, env, module))), None)
        if isinstance(expr, ast.Call):
            func = expr.func
            target = self.function_named(func, module)
            if target is not None:
                return _type_name(target[1].returns)
            if isinstance(func, ast.Name) and func.id in self.code.classes and func.id not in env:
                return func.id
            if isinstance(func, ast.Name) and func.id in module.imports and func.id in self.code.classes:
                return func.id
            called = self.type_of(func, env, module)
            if called and called.startswith("->"):
                return called[2:]
            info = self.code.classes.get(called or "")
            if info is not None and "__call__" in info.methods:
                return _type_name(info.methods["__call__"].returns)
            if isinstance(func, ast.Attribute):
                holder = self.code.classes.get(self.type_of(func.value, env, module) or "")
                if holder is not None and func.attr in holder.methods:
                    return _type_name(holder.methods[func.attr].returns)
        return None

    def function_named(self, expr: ast.expr, module: Module) -> tuple[Module, ast.FunctionDef] | None:
        """The package function ``expr`` names (``f``, an imported ``f``, ``mod.f``), if any."""
        if isinstance(expr, ast.Name):
            if expr.id in module.functions:
                return module, module.functions[expr.id]
            imported = module.imports.get(expr.id)
            if imported and imported[0] == "name" and imported[1] in self.code.modules:
                other = self.code.modules[imported[1]]
                if imported[2] in other.functions:
                    return other, other.functions[imported[2]]
        if isinstance(expr, ast.Attribute) and isinstance(expr.value, ast.Name):
            imported = module.imports.get(expr.value.id)
            dotted = imported[3] if imported and imported[0] == "name" else imported[1] if imported else None
            named = self.code.modules.get(dotted or "")
            if named is not None and expr.attr in named.functions:
                return named, named.functions[expr.attr]
        return None

    def settings_fields(self, exprs: Iterable[ast.expr], env: dict[str, str], module: Module) -> tuple[str, ...]:
        found = []
        for expr in exprs:
            for node in ast.walk(expr):
                if (isinstance(node, ast.Attribute) and node.attr in self.code.settings_fields
                        and self.type_of(node.value, env, module) == "Settings"):
                    found.append(node.attr)
        return tuple(sorted(set(found)))

    # -- the walk ----------------------------------------------------------------------------------
    def function(self, module: Module, node: ast.FunctionDef, cls: ClassInfo | None = None,  # noqa: PLR0912
                 env: dict[str, str] | None = None) -> None:
        key = (module.name, cls.name if cls else None, node.name, tuple(sorted((env or {}).items())))
        if key in self.seen:
            return
        self.seen.add(key)
        scope = dict(env or {})
        if cls is not None:
            scope["self"] = cls.name
        nodes = list(ast.walk(node))
        for fn in (n for n in nodes if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)):
            for arg in fn.args.args + fn.args.kwonlyargs + fn.args.posonlyargs:
                if arg.arg != "self" and (t := _type_name(arg.annotation)):
                    scope.setdefault(arg.arg, t)
        for _ in range(3):  # assignments, until their types settle
            for n in nodes:
                if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
                    if (t := self.type_of(n.value, scope, module)) is not None:
                        scope.setdefault(n.targets[0].id, t)
                elif (isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
                      and (t := _type_name(n.annotation)) is not None):
                    scope.setdefault(n.target.id, t)
        called = {id(n.func) for n in nodes if isinstance(n, ast.Call)}
        for n in nodes:
            if isinstance(n, ast.Call):
                self.call(n, scope, module, cls)
            if isinstance(n, ast.Name | ast.Attribute):
                self.reference(n, scope, module, called=id(n) in called)

    def reference(self, node: ast.Name | ast.Attribute, env: dict[str, str], module: Module, *,
                  called: bool = False) -> None:
        """A package function or method named here is reached (called, or handed on to be called)."""
        target = self.function_named(node, module)
        if target is not None:
            self.function(*target)
            return
        if isinstance(node, ast.Attribute):
            info = self.code.classes.get(self.type_of(node.value, env, module) or "")
            if info is not None and node.attr in info.methods:
                if info.protocol:
                    if not called:  # a port's method handed on as a callback; calls are seen by call()
                        self.port_calls.add((info.name, node.attr, ()))
                else:
                    self.function(self.code.modules[info.module], info.methods[node.attr], info)

    def call(self, node: ast.Call, env: dict[str, str], module: Module, cls: ClassInfo | None) -> None:
        func = node.func
        args = [*node.args, *(kw.value for kw in node.keywords)]
        name = _type_name(func) if isinstance(func, ast.Name | ast.Attribute) else None
        if name and (self.code.is_adapter(name) or name in POWERTOOLS_CONSTRUCTED) and (
                not isinstance(func, ast.Attribute) or name in POWERTOOLS_CONSTRUCTED):
            self.constructions.add(Construction(name, self.settings_fields(args, env, module)))
        if not isinstance(func, ast.Attribute):
            return
        owner_type = self.type_of(func.value, env, module)
        owner = self.code.classes.get(owner_type or "")
        if owner is not None and owner.protocol and func.attr in owner.methods:
            fields = self.settings_fields(args, env, module)
            # An argument that is neither a Settings field nor a literal: a resource handed in from outside.
            loose = any(isinstance(a, ast.Name) and a.id.endswith("_url") for a in args)
            self.port_calls.add((owner.name, func.attr, fields + (("<event-source>",) if loose else ())))
            return
        if cls is not None and self.code.is_adapter(cls.name):
            self.boto_call(node, func, env, module, cls)

    def boto_call(self, node: ast.Call, func: ast.Attribute, env: dict[str, str], module: Module,
                  cls: ClassInfo) -> None:
        if not (isinstance(func.value, ast.Attribute) and isinstance(func.value.value, ast.Name)
                and func.value.value.id == "self"):
            return
        client_type = cls.attrs.get(func.value.attr)
        if client_type is None:
            return
        if (client_type, func.attr) in POWERTOOLS_METHODS:
            action = POWERTOOLS_METHODS[(client_type, func.attr)]
            self.calls.add(Call(action.split(":")[0], (action,), ()))
            return
        imported = module.imports.get(client_type)
        if not (imported and imported[0] == "name" and imported[1].startswith("mypy_boto3_")):
            return
        service = imported[1].removeprefix("mypy_boto3_")
        if func.attr == "transact_write_items":
            kinds = {k.value for n in ast.walk(node) if isinstance(n, ast.Dict)
                     for k in n.keys if isinstance(k, ast.Constant) and k.value in TRANSACT_ITEMS}
            actions = tuple(sorted(TRANSACT_ITEMS[k] for k in kinds))
        else:
            actions = ACTIONS.get((service, func.attr), (f"{service}:{camel(func.attr)}",))
        self.calls.add(Call(service, actions, ()))


def _adapter_calls(code: Code, cls: ClassInfo, method: str) -> set[Call]:
    walk = Walk(code)
    walk.function(code.modules[cls.module], cls.methods[method], cls)
    return walk.calls


@dataclass(frozen=True)
class FunctionCode:
    logical_id: str
    module: str  # relayguard.entrypoints.<name>


def functions(template: str = "template.yaml") -> list[FunctionCode]:
    """The template's Lambda functions and the entry-point module each one's app.py re-exports."""
    doc = load_template(template)
    found = []
    for logical_id, resource in (doc.get("Resources") or {}).items():
        if resource.get("Type") != FUNCTION_TYPE:
            continue
        app = REPO_ROOT / str(resource["Properties"]["CodeUri"]) / "app.py"
        tree = ast.parse(app.read_text())
        (module,) = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                     and (n.module or "").startswith("relayguard.entrypoints")}
        found.append(FunctionCode(logical_id, str(module)))
    return found


def code_calls(code: Code, entry_module: str) -> set[Call]:  # noqa: PLR0912 - the walk's phases
    """Every AWS call the function whose handler lives in ``entry_module`` can make, with its resource fields."""
    walk = Walk(code)
    module = code.modules[entry_module]
    for node in module.tree.body:
        if isinstance(node, ast.FunctionDef):
            walk.function(module, node)
        elif isinstance(node, ast.Assign | ast.Expr):  # module-level ``handler = make_handler()``
            for n in ast.walk(node):
                if isinstance(n, ast.Name | ast.Attribute):
                    walk.reference(n, {}, module)
    calls = set(walk.calls)
    done: set[tuple[str, str, tuple[str, ...]]] = set()
    while walk.port_calls - done:
        for port_name, method, fields in sorted(walk.port_calls - done):
            done.add((port_name, method, fields))
            port = code.classes[port_name]
            for info in code.classes.values():
                if not code.implements(info, port) or method not in info.methods:
                    continue
                if code.is_adapter(info.name):
                    for built in {c for c in walk.constructions if c.cls == info.name}:
                        for call in _adapter_calls(code, info, method):
                            resources = built.fields or tuple(f for f in fields if f != "<event-source>")
                            calls.add(Call(call.service, call.actions, resources,
                                           from_event_source=not resources and "<event-source>" in fields))
                else:
                    walk.function(code.modules[info.module], info.methods[method], info)
    for built in walk.constructions:
        if built.cls in POWERTOOLS_CONSTRUCTED:
            service, actions = POWERTOOLS_CONSTRUCTED[built.cls]
            calls.add(Call(service, actions, built.fields))
    return calls


# -- the template --------------------------------------------------------------------------------------


def _refs(node: Any) -> Iterator[str]:
    """Logical ids and parameter names a template value refers to."""
    if isinstance(node, dict):
        if "Ref" in node:
            yield str(node["Ref"])
        elif "Fn::GetAtt" in node:
            target = node["Fn::GetAtt"]
            yield str(target[0] if isinstance(target, list) else target.split(".")[0])
        elif "Fn::Sub" in node:
            sub = node["Fn::Sub"]
            text, variables = (sub, {}) if isinstance(sub, str) else sub
            for name in re.findall(r"\$\{([^}!]+)\}", text):
                if name not in variables:
                    yield name.split(".")[0]
            for value in variables.values():
                yield from _refs(value)
        else:
            for value in node.values():
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


class Template:
    def __init__(self, template: str = "template.yaml") -> None:
        self.doc = load_template(template)
        self.resources: dict[str, Any] = self.doc.get("Resources") or {}
        self.parameters: dict[str, Any] = self.doc.get("Parameters") or {}

    def merged(self, logical_id: str) -> dict[str, Any]:
        from harness.template import _function_properties  # noqa: PLC0415 - SAM's Globals merge

        return _function_properties(self.doc, logical_id)

    def targets(self, node: Any) -> set[str]:
        """What a policy's Resource value names: resources and resource parameters; the KMS key as one name."""
        if node == "*":
            return {"*"}
        names = {n for n in _refs(node) if n in self.resources or n in PARAMETER_RESOURCES or n == KMS_KEY_PARAMETER}
        if KMS_KEY_PARAMETER in names:
            names = (names - {KMS_KEY_PARAMETER, KMS_KEY}) | {KMS_KEY}
        return names

    def resource_of(self, function: str, settings_field: str, code: Code, service: str) -> str | None:
        """The resource a Settings field names in ``function``'s environment (None: a plain setting)."""
        variable = code.settings_fields[settings_field]
        value = self.merged(function)["Environment"]["Variables"][variable]
        names = {n for n in _refs(value) if n in self.resources or n in PARAMETER_RESOURCES}
        if not names:
            return None
        _require(len(names) == 1, f"{function}: {variable} ({settings_field}) names more than one resource: {value!r}")
        (name,) = names
        kind = (SERVICE_OF_TYPE.get(self.resources[name]["Type"]) if name in self.resources
                else PARAMETER_RESOURCES[name])
        _require(kind == service, f"{function}: a {service} call on {name}, which is a {kind} resource")
        return name

    def encrypted(self, name: str) -> bool:
        """Whether the resource is encrypted with the stack's KMS key (its properties name the key)."""
        if name in PARAMETER_ENCRYPTED:
            return KMS_KEY_PARAMETER in self.parameters
        resource = self.resources.get(name)
        return resource is not None and bool({KMS_KEY, KMS_KEY_PARAMETER} & set(_refs(resource.get("Properties"))))

    def event_sources(self, function: str) -> set[str]:
        queues = set()
        for resource in self.resources.values():
            props = resource.get("Properties") or {}
            if resource["Type"] == "AWS::Lambda::EventSourceMapping" and props.get("FunctionName") == {"Ref": function}:
                queues |= {n for n in _refs(props["EventSourceArn"]) if n in self.resources}
        for event in (self.resources[function]["Properties"].get("Events") or {}).values():
            if event.get("Type") == "SQS":
                queues |= {n for n in _refs(event["Properties"]["Queue"]) if n in self.resources}
        return queues

    def role_of(self, function: str) -> str:
        role = self.resources[function]["Properties"].get("Role")
        names = [n for n in _refs(role) if n in self.resources] if role else []
        _require(len(names) == 1, f"{function}: give it a Role of its own (an AWS::IAM::Role of this template)")
        return names[0]

    def granted(self, role: str, conditions: Mapping[str, bool] | None = None) -> set[Pair]:
        """The (action, resource) pairs the role's inline policies allow, with ``conditions`` (default false)
        picking each conditional policy's branch."""
        props = self.resources[role]["Properties"]
        _require(not props.get("ManagedPolicyArns"), f"{role}: managed policies grant what the code does not call")
        pairs: set[Pair] = set()
        for policy in props.get("Policies") or []:
            for document in self._branches(policy, conditions or {}):
                for statement in document["PolicyDocument"]["Statement"]:
                    _require(statement["Effect"] == "Allow", (role, statement))
                    actions, resources = _listed(statement["Action"]), _listed(statement["Resource"])
                    targets = set().union(*(self.targets(r) for r in resources))
                    _require(targets, f"{role}: a statement naming nothing of this stack: {resources!r}")
                    pairs |= {(a, t) for a in actions for t in targets}
        return pairs

    def _branches(self, policy: Any, conditions: Mapping[str, bool]) -> list[dict[str, Any]]:
        if isinstance(policy, dict) and "Fn::If" in policy:
            condition, when_true, when_false = policy["Fn::If"]
            _require(condition in (self.doc.get("Conditions") or {}), f"a policy under no condition {condition!r}")
            chosen = when_true if conditions.get(condition, False) else when_false
            return [] if chosen == {"Ref": "AWS::NoValue"} else self._branches(chosen, conditions)
        return [policy]

    def exists(self, name: str, conditions: Mapping[str, bool]) -> bool:
        """Whether a resource (or parameter) exists under ``conditions`` (its own ``Condition``)."""
        if name == KMS_KEY:
            return True  # the key the stack creates, or the one KmsKeyArn names
        condition = (self.resources.get(name) or {}).get("Condition")
        return condition is None or conditions.get(condition, False)


def derived(function: FunctionCode, template: Template | None = None, code: Code | None = None,
            conditions: Mapping[str, bool] | None = None) -> set[Pair]:
    """The (action, resource) pairs ``function`` needs with the template's ``conditions`` (default false):
    its code's AWS calls, Lambda's own, and KMS. A resource under a false condition does not exist."""
    template = template or Template()
    code = code or Code()
    conditions = conditions or {}
    vpc = conditions.get("UseVpc", False)
    fid = function.logical_id
    pairs: set[Pair] = set()
    for call in code_calls(code, function.module):
        if call.from_event_source:
            resources = template.event_sources(fid)
            _require(resources, f"{fid}: a {call.actions} call on a queue URL handed in, but no SQS event source")
        elif call.fields:
            named = {template.resource_of(fid, f, code, call.service) for f in call.fields}
            resources = {r for r in named if r is not None}
            _require(resources, f"{fid}: {call.actions} on {call.fields}, none of which names a resource")
        else:
            _require(all(a in UNSCOPED for a in call.actions), f"{fid}: {call.actions}: no resource found in the code")
            resources = {"*"}
        pairs |= {(a, r) for a in call.actions for r in resources}
    props = template.merged(fid)
    log_groups = {n for n in _refs(props.get("LoggingConfig", {}).get("LogGroup")) if n in template.resources}
    _require(len(log_groups) == 1, f"{fid}: give it a log group of its own (LoggingConfig.LogGroup: !Ref ...)")
    pairs |= {(a, g) for a in LOGS for g in log_groups}
    if props.get("Tracing") == "Active":
        pairs |= {(a, "*") for a in XRAY}
    for queue in template.event_sources(fid):
        pairs |= {(a, queue) for a in SQS_EVENT_SOURCE}
    on_failure = ((props.get("EventInvokeConfig") or {}).get("DestinationConfig") or {}).get("OnFailure") or {}
    if on_failure.get("Type") == "SQS":
        pairs |= {("sqs:SendMessage", n) for n in _refs(on_failure["Destination"]) if n in template.resources}
    if vpc and props.get("VpcConfig"):
        pairs |= {(a, "*") for a in VPC}
    for action, resource in list(pairs):
        if action in KMS and resource != "*" and template.encrypted(resource):
            pairs |= {(k, KMS_KEY) for k in KMS[action]}
    return {(a, r) for a, r in pairs if r == "*" or template.exists(r, conditions)}
