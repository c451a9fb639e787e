"""Run a function of ``template.yaml`` in this process, honouring the template (toolchain.md §4).

There is no container engine on the build machines, so ``sam local invoke`` cannot run. This
invoker does the part of it the tests need:

1. load the template with the short-form tags (``!Ref``, ``!GetAtt``, ``!Sub``, ...) turned into
   their long forms;
2. merge ``Globals`` into the function with SAM's own ``Globals`` plugin;
3. resolve the intrinsics of ``Environment.Variables`` (and ``Timeout``, ``MemorySize``,
   ``FunctionName``) from ``resolve`` (test-supplied names, URLs and ARNs keyed by logical id, or
   ``LogicalId.Attr`` for ``Fn::GetAtt``; parameter overrides go here too), then Parameter
   defaults, then pseudo parameters. Anything else raises ``KeyError`` naming it, so a typo in the
   template fails the test;
4. patch ``os.environ`` with the Lambda runtime's variables and the function's environment
   *before* importing the handler (Powertools objects read it at import);
5. import ``<CodeUri>/app.py`` by path under a module name unique to the function (every function
   has an ``app.py``), once per process, like a warm execution environment;
6. build a Lambda context and call the handler.

Concurrency. ``os.environ`` is process-wide, so one function's environment is applied at a time:
the first invocation of a function patches it, further concurrent invocations of the *same*
function (same resolved environment) share that patch, and the last one to finish restores the
previous environment. An invocation of a *different* function (or of the same one with another
environment) waits until the running ones are done. Limitations: while an invocation runs, every
thread of the process sees the function's environment; concurrent invocations share the handler
module and its module-level objects (Powertools Logger, Metrics, BatchProcessor, cached clients),
whereas Lambda gives each concurrent invocation its own execution environment.

Not emulated: layer isolation (the layer packages come from the test environment), the runtime's
Python version, IAM, enforced timeouts, memory limits, event-source plumbing (tests build events
from ``events/`` or wrap real moto messages).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml
from samtranslator.plugins.globals.globals import Globals

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ACCOUNT = "123456789012"
DEFAULT_REGION = "eu-west-1"
FUNCTION_TYPE = "AWS::Serverless::Function"
_NO_VALUE = object()

__all__ = ["FakeLambdaContext", "invoke", "reset", "resolved_environment"]


# -- 1. template loading ------------------------------------------------------------------------


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader that understands CloudFormation's short-form tags."""


def _short_form(loader: _CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _short_form)

_templates: dict[Path, tuple[float, dict[str, Any]]] = {}
_templates_lock = threading.Lock()


def _template_path(template: str | os.PathLike[str]) -> Path:
    path = Path(template)
    return path if path.is_absolute() else REPO_ROOT / path


def load_template(template: str | os.PathLike[str] = "template.yaml") -> dict[str, Any]:
    """The template as plain data (cached until the file changes). Callers must not mutate it."""
    path = _template_path(template)
    mtime = path.stat().st_mtime
    with _templates_lock:
        cached = _templates.get(path)
        if cached is None or cached[0] != mtime:
            doc = yaml.load(path.read_text(), Loader=_CfnLoader)  # noqa: S506 - a SafeLoader subclass
            if not isinstance(doc, dict):
                raise ValueError(f"{path}: not a CloudFormation template")
            cached = (mtime, doc)
            _templates[path] = cached
        return cached[1]


def _function_properties(doc: dict[str, Any], logical_id: str) -> dict[str, Any]:
    resources = doc.get("Resources") or {}
    resource = resources.get(logical_id)
    if resource is None:
        raise KeyError(f"{logical_id}: no such resource in the template")
    if resource.get("Type") != FUNCTION_TYPE:
        raise KeyError(f"{logical_id}: is a {resource.get('Type')}, not an {FUNCTION_TYPE}")
    # 2. Globals merge, done by SAM itself (it mutates what it is given: hand it copies).
    props = copy.deepcopy(resource.get("Properties") or {})
    return Globals(copy.deepcopy(doc)).merge(FUNCTION_TYPE, props, logical_id)  # type: ignore[no-any-return]


# -- 3. intrinsic functions ---------------------------------------------------------------------


@dataclass
class _Resolver:
    doc: dict[str, Any]
    resolve: Mapping[str, Any]
    pseudo: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or DEFAULT_REGION
        stack = "relayguard"
        self.pseudo = {
            "AWS::AccountId": DEFAULT_ACCOUNT,
            "AWS::Region": region,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": stack,
            "AWS::StackId": f"arn:aws:cloudformation:{region}:{DEFAULT_ACCOUNT}:stack/{stack}/"
                            "00000000-0000-4000-8000-000000000000",
            "AWS::NotificationARNs": [],
        }

    # Ref: the test's map, then Parameter defaults, then pseudo parameters.
    def ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return _NO_VALUE
        if name in self.resolve:
            return self.resolve[name]
        params = self.doc.get("Parameters") or {}
        if name in params:
            param = params[name]
            if "Default" not in param:
                raise KeyError(f"Ref {name}: Parameter without Default and not in resolve")
            default = param["Default"]
            if str(param.get("Type", "")).startswith(("CommaDelimitedList", "List<")):
                return [x.strip() for x in str(default).split(",")]
            return default
        if name in self.pseudo:
            return self.pseudo[name]
        where = "a resource" if name in (self.doc.get("Resources") or {}) else "not declared"
        raise KeyError(f"Ref {name}: {where}, and not in resolve")

    def get_att(self, logical_id: str, attr: str) -> Any:
        key = f"{logical_id}.{attr}"
        if key in self.resolve:
            return self.resolve[key]
        raise KeyError(f"Fn::GetAtt {key}: not in resolve")

    def condition(self, name: str) -> bool:
        conditions = self.doc.get("Conditions") or {}
        if name not in conditions:
            raise KeyError(f"Condition {name}: not declared")
        return bool(self.value(conditions[name]))

    def sub(self, arg: Any) -> str:
        if isinstance(arg, list):
            text, variables = arg[0], {k: self.value(v) for k, v in (arg[1] or {}).items()}
        else:
            text, variables = arg, {}

        def one(match: re.Match[str]) -> str:
            expr = match.group(1)
            if expr.startswith("!"):
                return "${" + expr[1:] + "}"
            if expr in variables:
                return str(variables[expr])
            if "." in expr and not expr.startswith("AWS::"):
                logical_id, attr = expr.split(".", 1)
                return str(self.get_att(logical_id, attr))
            return str(self.ref(expr))

        return re.sub(r"\$\{([^}]+)\}", one, text)

    def value(self, node: Any) -> Any:  # noqa: PLR0911, PLR0912 - one branch per intrinsic
        if isinstance(node, list):
            return [v for v in (self.value(x) for x in node) if v is not _NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            (key, arg), = node.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Condition":
                return self.condition(arg)
            if key == "Fn::GetAtt":
                logical_id, attr = arg.split(".", 1) if isinstance(arg, str) else arg
                return self.get_att(logical_id, self.value(attr))
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::If":
                name, then, otherwise = arg
                return self.value(then if self.condition(name) else otherwise)
            if key == "Fn::Equals":
                a, b = (self.value(x) for x in arg)
                return str(a) == str(b)
            if key == "Fn::Not":
                return not self.value(arg[0])
            if key == "Fn::And":
                return all(self.value(x) for x in arg)
            if key == "Fn::Or":
                return any(self.value(x) for x in arg)
            if key == "Fn::Join":
                sep, items = arg
                return str(self.value(sep)).join(str(x) for x in self.value(items))
            if key == "Fn::Split":
                sep, text = arg
                return str(self.value(text)).split(str(self.value(sep)))
            if key == "Fn::Select":
                index, items = arg
                return self.value(items)[int(self.value(index))]
            if key == "Fn::FindInMap":
                name, top, second = (str(self.value(x)) for x in arg[:3])
                try:
                    return (self.doc.get("Mappings") or {})[name][top][second]
                except KeyError:
                    raise KeyError(f"Fn::FindInMap {name}/{top}/{second}: no such entry") from None
            if key == "Fn::ImportValue":
                export = str(self.value(arg))
                if export in self.resolve:
                    return self.resolve[export]
                raise KeyError(f"Fn::ImportValue {export}: not in resolve")
            if key.startswith("Fn::"):
                raise KeyError(f"{key}: intrinsic not supported by the local invoker")
        return {k: v for k, v in ((k, self.value(v)) for k, v in node.items()) if v is not _NO_VALUE}


def _env_string(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise TypeError(f"environment variable {name}: resolved to {type(value).__name__} {value!r}, not a scalar")


# -- the resolved function ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Function:
    logical_id: str
    name: str
    arn: str
    region: str
    code_dir: Path
    handler: str
    timeout_s: int
    memory_mb: int
    runtime: str
    template_env: dict[str, str]
    layer_dirs: tuple[Path, ...]


def _describe(function_logical_id: str, resolve: Mapping[str, Any], template: str | os.PathLike[str]) -> _Function:
    doc = load_template(template)
    props = _function_properties(doc, function_logical_id)
    r = _Resolver(doc, resolve)
    env_node = ((props.get("Environment") or {}).get("Variables")) or {}
    env = {k: _env_string(k, v) for k, v in r.value(env_node).items()}
    name = str(r.value(props["FunctionName"])) if "FunctionName" in props else str(
        resolve.get(function_logical_id, f"relayguard-{function_logical_id}"))
    region = str(r.ref("AWS::Region"))
    account = str(r.ref("AWS::AccountId"))
    code_uri = props.get("CodeUri")
    if not isinstance(code_uri, str):
        raise KeyError(f"{function_logical_id}: CodeUri must be a local folder, got {code_uri!r}")
    code_dir = (_template_path(template).parent / code_uri).resolve()
    layer_dirs = []
    for layer in props.get("Layers") or []:
        if isinstance(layer, dict) and set(layer) == {"Ref"}:
            res = (doc.get("Resources") or {}).get(layer["Ref"]) or {}
            uri = (res.get("Properties") or {}).get("ContentUri")
            if res.get("Type") == "AWS::Serverless::LayerVersion" and isinstance(uri, str):
                base = (_template_path(template).parent / uri).resolve()
                layer_dirs += [p for p in (base / "python", base) if p.is_dir()]
    return _Function(
        logical_id=function_logical_id,
        name=name,
        arn=f"arn:aws:lambda:{region}:{account}:function:{name}",
        region=region,
        code_dir=code_dir,
        handler=str(r.value(props.get("Handler", "app.lambda_handler"))),
        timeout_s=int(r.value(props.get("Timeout", 3))),
        memory_mb=int(r.value(props.get("MemorySize", 128))),
        runtime=str(r.value(props.get("Runtime", "python3.13"))),
        template_env=env,
        layer_dirs=tuple(layer_dirs),
    )


def resolved_environment(function_logical_id: str, resolve: Mapping[str, Any],
                         template: str | os.PathLike[str] = "template.yaml") -> dict[str, str]:
    """The function's ``Environment.Variables`` after the Globals merge and intrinsic resolution."""
    return dict(_describe(function_logical_id, resolve, template).template_env)


def _runtime_env(fn: _Function) -> dict[str, str]:
    # Stable per function, so concurrent invocations of one function share one environment.
    stream = "2026/01/01/[$LATEST]" + hashlib.md5(fn.arn.encode(), usedforsecurity=False).hexdigest()
    env = {
        "AWS_REGION": fn.region,
        "AWS_DEFAULT_REGION": fn.region,
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{fn.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": fn.name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(fn.memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(fn.timeout_s),
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{fn.name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": stream,
        "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "_HANDLER": fn.handler,
        "LAMBDA_TASK_ROOT": str(fn.code_dir),
        "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "TZ": ":UTC",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    # The template's own variables win (POWERTOOLS_METRICS_NAMESPACE, POWERTOOLS_SERVICE_NAME, ...).
    env.update(fn.template_env)
    return env


# -- 4. the environment, shared by concurrent invocations of one function -----------------------


class _EnvironmentLease:
    """Applies one environment to ``os.environ`` while any invocation that needs it runs."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._active: tuple[tuple[str, str | None], ...] | None = None
        self._users = 0
        self._saved: dict[str, str | None] = {}

    @contextmanager
    def hold(self, env: Mapping[str, str | None]) -> Iterator[None]:
        wanted = tuple(sorted(env.items(), key=lambda kv: kv[0]))
        with self._cond:
            while self._users and self._active != wanted:
                self._cond.wait()
            if not self._users:
                self._saved = {k: os.environ.get(k) for k in env}
                for k, v in env.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
                self._active = wanted
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if not self._users:
                    for k, old in self._saved.items():
                        if old is None:
                            os.environ.pop(k, None)
                        else:
                            os.environ[k] = old
                    self._active = None
                    self._saved = {}
                    self._cond.notify_all()


_lease = _EnvironmentLease()


# -- 5. handler import ---------------------------------------------------------------------------

_modules: dict[tuple[str, Path], ModuleType] = {}
_modules_lock = threading.Lock()


def _module_name(fn: _Function, module: str) -> str:
    return f"_local_lambda_{re.sub(r'[^0-9A-Za-z_]', '_', fn.logical_id)}_{module.replace('.', '_')}"


def _load_handler(fn: _Function) -> Any:
    module, _, attr = fn.handler.rpartition(".")
    if not module:
        raise KeyError(f"{fn.logical_id}: Handler {fn.handler!r} is not module.function")
    path = fn.code_dir / (module.replace(".", "/") + ".py")
    with _modules_lock:
        mod = _modules.get((fn.logical_id, path))
        if mod is None:
            if not path.is_file():
                raise FileNotFoundError(f"{fn.logical_id}: handler module {path} does not exist")
            for layer in fn.layer_dirs:  # the layers' /opt/python, behind the test venv's packages
                if str(layer) not in sys.path:
                    sys.path.append(str(layer))
            name = _module_name(fn, module)
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot import {path}")
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            sys.path.insert(0, str(fn.code_dir))  # sibling imports of the function's own modules
            try:
                spec.loader.exec_module(mod)
            except BaseException:
                sys.modules.pop(name, None)
                raise
            finally:
                sys.path.remove(str(fn.code_dir))
            _modules[(fn.logical_id, path)] = mod
    try:
        return getattr(mod, attr)
    except AttributeError:
        raise KeyError(f"{fn.logical_id}: {path} has no {attr!r}") from None


def reset() -> None:
    """Forget imported handler modules and parsed templates (the next invoke imports afresh).

    Modules the handlers import (``relayguard.*``, Powertools) stay imported, as Python caches them.
    """
    with _modules_lock:
        for key, mod in list(_modules.items()):
            sys.modules.pop(mod.__name__, None)
            del _modules[key]
    with _templates_lock:
        _templates.clear()


# -- 6. the context ------------------------------------------------------------------------------


@dataclass
class FakeLambdaContext:
    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: int
    aws_request_id: str
    log_group_name: str
    log_stream_name: str
    deadline_monotonic: float
    identity: Any = None
    client_context: Any = None
    tenant_id: str | None = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline_monotonic - time.monotonic()) * 1000))


def invoke(
    function_logical_id: str,
    event: Any,
    *,
    resolve: Mapping[str, Any],
    template: str | os.PathLike[str] = "template.yaml",
    remaining_ms: int | None = None,
    env_overrides: Mapping[str, str | None] | None = None,
) -> Any:
    """Invoke ``function_logical_id`` of ``template`` with ``event`` and return the handler's answer.

    ``resolve`` maps logical ids (``Ref``) and ``LogicalId.Attr`` (``Fn::GetAtt``) to real values;
    it may also override Parameters, pseudo parameters and, keyed by the function's logical id,
    the function name. ``remaining_ms`` starts the context's countdown (default: the template's
    ``Timeout``). ``env_overrides`` is applied last; a ``None`` value removes the variable.
    Exceptions from the handler propagate unchanged.
    """
    fn = _describe(function_logical_id, resolve, template)
    env: dict[str, str | None] = {**_runtime_env(fn), **(env_overrides or {})}
    budget_ms = fn.timeout_s * 1000 if remaining_ms is None else remaining_ms
    with _lease.hold(env):
        handler = _load_handler(fn)
        context = FakeLambdaContext(
            function_name=fn.name,
            function_version="$LATEST",
            invoked_function_arn=fn.arn,
            memory_limit_in_mb=fn.memory_mb,
            aws_request_id=str(uuid.uuid4()),
            log_group_name=env.get("AWS_LAMBDA_LOG_GROUP_NAME") or "",
            log_stream_name=env.get("AWS_LAMBDA_LOG_STREAM_NAME") or "",
            deadline_monotonic=time.monotonic() + budget_ms / 1000,
        )
        return handler(event, context)


# -- command line: sam local invoke without a container ------------------------------------------


def placeholders(template: str | os.PathLike[str] = "template.yaml") -> dict[str, str]:
    """A stand-in for every resource's Ref and common attributes: the env-vars file gives real values."""
    out: dict[str, str] = {}
    for logical_id in (load_template(template).get("Resources") or {}):
        out[logical_id] = f"<{logical_id}>"
        for attr in ("Arn", "QueueName", "QueueUrl", "TopicName", "TopicArn"):
            out[f"{logical_id}.{attr}"] = f"<{logical_id}.{attr}>"
    return out


def env_vars_overrides(path: str | os.PathLike[str] | None, function_logical_id: str) -> dict[str, str | None]:
    """SAM's ``--env-vars`` file: ``Parameters`` apply to every function, a function's own block to it."""
    if path is None:
        return {}
    import json

    data = json.loads(Path(path).read_text())
    merged = {**(data.get("Parameters") or {}), **(data.get(function_logical_id) or {})}
    return {k: str(v) for k, v in merged.items()}


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.local_invoke FUNCTION -e EVENT [--env-vars FILE] [--param K=V ...]``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="./scripts/local-invoke",
        description="Invoke a function of template.yaml in this process, like `sam local invoke` without Docker. "
                    "Resources resolve to <LogicalId> placeholders unless --env-vars gives real names; AWS calls go "
                    "where boto3 is pointed (your credentials, or AWS_ENDPOINT_URL for a moto server).")
    parser.add_argument("function", help="logical id, e.g. PlannerFunction")
    parser.add_argument("-e", "--event", required=True, help="event file, e.g. events/planner/scheduled_sweep.json")
    parser.add_argument("--env-vars", help="SAM-style JSON: {\"Parameters\": {...}, \"<Function>\": {...}}")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="template parameter override (repeatable), e.g. SweepMode=fix")
    parser.add_argument("-t", "--template", default="template.yaml")
    args = parser.parse_args(argv)
    resolve: dict[str, Any] = {**placeholders(args.template),
                               **dict(p.split("=", 1) for p in args.param)}
    event = json.loads(Path(args.event).read_text())
    answer = invoke(args.function, event, resolve=resolve, template=args.template,
                    env_overrides=env_vars_overrides(args.env_vars, args.function))
    print(json.dumps(answer, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
