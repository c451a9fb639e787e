"""Run a function of ``template.yaml`` in this process, as the Lambda runtime would (toolchain.md §4).

There is no container engine on the build machines, so ``sam local invoke`` cannot run. This
invoker does the part of it the tests need, on top of :func:`harness.template.describe`:

1. patch ``os.environ`` with the Lambda runtime's variables and the function's environment
   *before* importing the handler (Powertools objects read it at import);
2. import ``<CodeUri>/app.py`` by path under a module name unique to the function (every function
   has an ``app.py``), once per process, like a warm execution environment;
3. build a Lambda context and call the handler.

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
from ``events/`` or wrap real moto messages; :mod:`harness.sqs_source` plays an SQS mapping).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from harness.template import FunctionSpec, describe, forget_templates

__all__ = ["FakeLambdaContext", "apply_environ", "invoke", "reset"]

Handler = Callable[[Any, Any], Any]


def apply_environ(env: Mapping[str, str | None]) -> dict[str, str | None]:
    """Set ``env`` in ``os.environ`` (``None`` removes a variable); returns what to apply to undo it."""
    previous = {k: os.environ.get(k) for k in env}
    for k, v in env.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    return previous


def _runtime_env(fn: FunctionSpec) -> dict[str, str]:
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


# -- 1. the environment, shared by concurrent invocations of one function -----------------------


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
                self._saved = apply_environ(env)
                self._active = wanted
            self._users += 1
        try:
            yield
        finally:
            with self._cond:
                self._users -= 1
                if not self._users:
                    apply_environ(self._saved)
                    self._active = None
                    self._saved = {}
                    self._cond.notify_all()


_lease = _EnvironmentLease()


# -- 2. handler import ---------------------------------------------------------------------------

_modules: dict[tuple[str, Path], ModuleType] = {}
_modules_lock = threading.Lock()


def _module_name(fn: FunctionSpec, module: str) -> str:
    return f"_local_lambda_{re.sub(r'[^0-9A-Za-z_]', '_', fn.logical_id)}_{module.replace('.', '_')}"


def _load_handler(fn: FunctionSpec) -> Handler:
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
        handler: Handler = getattr(mod, attr)
    except AttributeError:
        raise KeyError(f"{fn.logical_id}: {path} has no {attr!r}") from None
    return handler


def reset() -> None:
    """Forget imported handler modules and parsed templates (the next invoke imports afresh).

    Modules the handlers import (``relayguard.*``, Powertools) stay imported, as Python caches them.
    """
    with _modules_lock:
        for key, mod in list(_modules.items()):
            sys.modules.pop(mod.__name__, None)
            del _modules[key]
    forget_templates()


# -- 3. the context ------------------------------------------------------------------------------


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
    fn = describe(function_logical_id, resolve, template)
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
