"""What `sam build` produces is what Lambda can run (issue 4, packaging).

Builds the application with ./scripts/sam (the template's arm64) and the dependency layer a second
time for x86_64, which this machine can execute. Then, in a separate `python -I -S` of the template's
Python version, with nothing on sys.path but the standard library, the function artifact, both layers
(x86_64 deps) and the AWS SDK the Lambda runtime provides, it imports every function's handler, the
way Lambda does at a cold start. The arm64 build cannot run here; its compiled modules are checked
against the template's architecture and Python version instead. The runtime's SDK is stood in for by
the boto3, botocore and s3transfer pinned in constraints.txt; the real runtime's are older, and
their version depends on the runtime release and the region.

Needs the network or pip's cache (wheels from PyPI) and make (scripts/sam installs it as root).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from harness.template import load_template

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
FUNCTION_TYPE = "AWS::Serverless::Function"
# ELF e_machine and wheel platform suffix per Lambda architecture.
ELF_MACHINE = {"arm64": 183, "x86_64": 62}
WHEEL_ARCH = {"arm64": "aarch64", "x86_64": "x86_64"}
# The AWS SDK for Python is part of every Lambda Python runtime; layers/deps/Makefile deletes it.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer")
# Pinned but deleted by layers/deps/Makefile because no handler can load them (UNREACHABLE there).
UNREACHABLE = ("invoke", "cffi", "pycparser")
LAMBDA_UNZIPPED_LIMIT = 250 * 1000 * 1000  # bytes, a function and all its layers
# measured 34.6 MB; 40.9 MB with the deliverability judge's checkdmarc stack (ADR 0007); botocore coming back
# would add 25 MB
DEPS_LAYER_BUDGET = 45 * 1000 * 1000


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[_norm(name.split("[")[0])] = version
    return pins


@dataclass(frozen=True)
class Target:
    runtime: str  # python3.13
    architecture: str  # arm64

    @property
    def cpython_tag(self) -> str:  # 313
        return self.runtime.removeprefix("python").replace(".", "")

    @property
    def version(self) -> tuple[int, int]:
        major, minor = self.runtime.removeprefix("python").split(".")
        return int(major), int(minor)


@dataclass(frozen=True)
class Builds:
    template: dict[str, Any]
    target: Target
    arm: Path  # full `sam build` for the template's architecture
    x86_deps: Path  # DepsLayer artifact built for x86_64
    runtime_sdk: Path  # stands in for the runtime's own boto3/botocore/s3transfer
    functions: dict[str, str]  # logical id -> Handler
    layers: tuple[str, ...]  # layer logical ids, in the template's order


def _run_all(*commands: tuple[list[str], dict[str, str]]) -> None:
    """Runs the commands side by side (pip and SAM wait on the network and on disk) and checks each."""
    procs = [(cmd, subprocess.Popen(cmd, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)) for cmd, env in commands]
    for cmd, proc in procs:
        out, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{out[-6000:]}"


def _target(template: dict[str, Any]) -> Target:
    function_globals = template.get("Globals", {}).get("Function", {})
    found = set()
    for spec in template["Resources"].values():
        if spec["Type"] == FUNCTION_TYPE:
            props = {**function_globals, **spec.get("Properties", {})}
            (arch,) = props["Architectures"]
            found.add(Target(props["Runtime"], arch))
    (target,) = found  # one runtime and one architecture for all functions, as the layers are shared
    return target


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    template = load_template(REPO / "template.yaml")
    target = _target(template)
    assert target.architecture != "x86_64", "the x86_64 build below would then not be a cross-build"
    root = tmp_path_factory.mktemp("sam-build")
    # Own build and cache folders, cache off: the developer's .aws-sam stays as it is, and SAM's cache,
    # whose key ignores LAMBDA_ARCH, can never hand one architecture's layer to the other's build.
    env = {k: v for k, v in os.environ.items() if k != "LAMBDA_ARCH"}
    _run_all((["./scripts/sam", "--version"], env))  # makes .venv-sam once, before the builds share it
    constraints = _pins(REPO / "constraints.txt")
    _run_all(
        (["./scripts/sam", "build", "--no-cached", "--build-dir", str(root / "arm"), "--cache-dir", str(root / "c1")],
         env),
        (["./scripts/sam", "build", "DepsLayer", "--no-cached", "--build-dir", str(root / "x86"),
          "--cache-dir", str(root / "c2")], {**env, "LAMBDA_ARCH": "x86_64"}),
        ([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-deps",
          "--only-binary=:all:", "--target", str(root / "runtime-sdk"),
          *(f"{name}=={constraints[name]}" for name in RUNTIME_PROVIDED)], env),
    )
    function_globals = template.get("Globals", {}).get("Function", {})
    functions = {k: v["Properties"].get("Handler", function_globals.get("Handler"))
                 for k, v in template["Resources"].items() if v["Type"] == FUNCTION_TYPE}
    layers = tuple(ref["Ref"] for ref in function_globals["Layers"])
    return Builds(template, target, root / "arm", root / "x86" / "DepsLayer", root / "runtime-sdk", functions, layers)


def _interpreter(version: tuple[int, int]) -> str:
    """A base interpreter (not a venv) of the Lambda runtime's Python version: this one, pyenv's (also
    where sudo's secure_path hides pyenv: its root is then $PYENV_ROOT or ~/.pyenv, as scripts/lib.sh's
    rg_lambda_python finds it for the build), or one on PATH."""
    if sys.version_info[:2] == version:
        return str(getattr(sys, "_base_executable", sys.executable))
    wanted = "{}.{}".format(*version)
    pyenv = shutil.which("pyenv")
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    if pyenv:
        root = Path(subprocess.run([pyenv, "root"], capture_output=True, text=True, check=True).stdout.strip())
    candidates = [str(p) for p in sorted(root.glob(f"versions/{wanted}.*/bin/python{wanted}"), reverse=True)]
    on_path = shutil.which(f"python{wanted}")
    if on_path:
        candidates.append(on_path)
    for candidate in candidates:
        if subprocess.run([candidate, "-c", ""], capture_output=True, check=False).returncode == 0:
            return candidate
    pytest.skip(f"no Python {wanted} here to import the x86_64 build with")


# Runs in the isolated interpreter: the import Lambda does at a cold start, then where every module came from.
PROBE = """
import importlib, json, sys
paths, module, attr = json.loads(sys.argv[1])
sys.path[:0] = paths
handler = getattr(importlib.import_module(module), attr)
assert callable(handler), handler
# What a run's last job does besides (issue 15): the fleet report page, from the layers' template and Jinja2.
from relayguard.domain.report import build_report, render_html
assert "</html>" in render_html(build_report([], generated_at="2026-12-06T00:00:00+00:00"))
files = sorted({m.__file__ for m in list(sys.modules.values()) if getattr(m, "__file__", None)})
print(json.dumps({"handler": f"{handler.__module__}.{handler.__qualname__}", "files": files,
                  "stdlib": [p for p in sys.path if p not in paths]}))
"""


FUNCTIONS = ("PlannerFunction", "WorkerFunction", "AlertIntakeFunction")


def test_every_function_of_the_template_is_import_checked() -> None:
    template = load_template(REPO / "template.yaml")
    assert sorted(FUNCTIONS) == sorted(k for k, v in template["Resources"].items() if v["Type"] == FUNCTION_TYPE)


@pytest.mark.parametrize("function", FUNCTIONS)
def test_each_handler_imports_from_the_built_artifacts_alone(builds: Builds, function: str) -> None:
    task_root = builds.arm / function
    layer_dirs = [builds.x86_deps / "python" if layer == "DepsLayer" else builds.arm / layer / "python"
                  for layer in builds.layers]
    assert all(d.is_dir() for d in layer_dirs), layer_dirs
    # Lambda's order: /var/task, then /opt/python (where every layer is unpacked), then the runtime's SDK.
    paths = [str(task_root), *map(str, layer_dirs), str(builds.runtime_sdk)]
    module, _, attr = builds.functions[function].rpartition(".")
    variables = builds.template["Globals"]["Function"]["Environment"]["Variables"]
    env = {
        "PATH": "/usr/bin:/bin",
        "AWS_REGION": "eu-west-1",
        "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_EXECUTION_ENV": f"AWS_Lambda_{builds.target.runtime}",
        "AWS_LAMBDA_FUNCTION_NAME": function,
        "LAMBDA_TASK_ROOT": str(task_root),
        "_HANDLER": builds.functions[function],
        **{k: v for k, v in variables.items() if k.startswith("POWERTOOLS_") and isinstance(v, str)},
    }
    python = _interpreter(builds.target.version)
    # -I: no environment variables, user site or script folder; -S: no site-packages at all;
    # -B: no __pycache__ written into the artifacts (Lambda's /var/task and /opt are read-only too).
    proc = subprocess.run([python, "-I", "-S", "-B", "-c", PROBE, json.dumps([paths, module, attr])],
                          capture_output=True, text=True, env=env, timeout=120, check=False, cwd="/")
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads(proc.stdout.splitlines()[-1])
    assert seen["handler"].startswith("relayguard.entrypoints."), seen["handler"]

    def under(f: str, dirs: list[str]) -> bool:
        return any(f.startswith(d + os.sep) for d in dirs)

    assert not any("site-packages" in p for p in seen["stdlib"]), seen["stdlib"]
    strays = [f for f in seen["files"]
              if not under(f, paths) and (not under(f, seen["stdlib"]) or f"{os.sep}site-packages{os.sep}" in f)]
    assert strays == []

    def origin(suffix: str) -> str:
        matches: list[str] = [f for f in seen["files"] if f.endswith(suffix)]
        (found,) = matches
        return found

    assert origin("/relayguard/entrypoints/__init__.py").startswith(str(builds.arm / "RelayGuardLayer"))
    # Cold start: no handler loads paramiko at import (the worker does on its first job; bench/README.md).
    assert not any(f.endswith("/paramiko/__init__.py") for f in seen["files"])
    assert origin("/pydantic_core/__init__.py").startswith(str(builds.x86_deps))
    assert origin("/jinja2/__init__.py").startswith(str(builds.x86_deps))
    # The SDK (loaded at import by the tracer's botocore patch, boto3 on first use) is the runtime's.
    sdk_from = {p for f in seen["files"] for p in paths
                if f.startswith(p + os.sep) and f[len(p) + 1:].split(os.sep)[0] in RUNTIME_PROVIDED}
    assert sdk_from == {str(builds.runtime_sdk)}
    assert any(f.startswith(str(builds.x86_deps)) and f.endswith(".so") for f in seen["files"])


def _elf_machine(path: Path) -> int:
    head = path.read_bytes()[:20]
    assert head[:4] == b"\x7fELF", f"{path}: not ELF"
    assert head[4] == 2, f"{path}: not 64-bit"
    assert head[5] == 1, f"{path}: not little-endian"
    return int.from_bytes(head[18:20], "little")


def _check_compiled(layer: Path, target: Target, architecture: str) -> int:
    """Every extension module matches the architecture and the runtime's CPython; returns how many."""
    count = 0
    for so in layer.rglob("*.so"):
        count += 1
        assert _elf_machine(so) == ELF_MACHINE[architecture], so
        tag = re.search(r"\.(cpython-(\d+)-([a-z0-9_]+)-linux-gnu|abi3)\.so$", so.name)
        assert tag, f"{so.name}: no CPython ABI tag"
        if tag.group(1) != "abi3":
            assert (tag.group(2), tag.group(3)) == (target.cpython_tag, WHEEL_ARCH[architecture]), so.name
    for wheel in layer.glob("*.dist-info/WHEEL"):
        for line in wheel.read_text().splitlines():
            if not line.startswith("Tag: "):
                continue
            python, abi, platform = line.removeprefix("Tag: ").split("-")
            if platform == "any":
                continue
            assert platform.endswith("_" + WHEEL_ARCH[architecture]), (wheel, line)
            if abi == "abi3":
                assert int(python.removeprefix("cp")) <= int(target.cpython_tag), (wheel, line)
            else:
                assert (python, abi) == (f"cp{target.cpython_tag}", f"cp{target.cpython_tag}"), (wheel, line)
    return count


def test_arm64_build_holds_extension_modules_for_the_templates_architecture_and_python(builds: Builds) -> None:
    deps = builds.arm / "DepsLayer" / "python"
    assert _check_compiled(deps, builds.target, builds.target.architecture) >= 5  # cryptography, pydantic_core, ...
    # The x86_64 build really is the other architecture, so the check above can tell them apart.
    assert _check_compiled(builds.x86_deps / "python", builds.target, "x86_64") >= 5
    # The code layer and the function artifacts are pure Python; the layers carry bytecode for the
    # runtime's CPython only (Lambda's /opt is read-only: without it every cold start compiles).
    for artifact in (builds.arm / "RelayGuardLayer", *(builds.arm / f for f in builds.functions)):
        assert not list(artifact.rglob("*.so")), artifact
    for layer in (builds.arm / "RelayGuardLayer", deps):
        tags = {p.name.split(".")[-2] for p in layer.rglob("*.pyc")}
        assert tags == {f"cpython-{builds.target.cpython_tag}"}, (layer, tags)
    for function in builds.functions:
        assert not list((builds.arm / function).rglob("__pycache__")), function


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def test_deps_layer_is_exactly_the_pinned_set_without_the_runtimes_sdk(builds: Builds) -> None:
    pins = _pins(REPO / "layers" / "deps" / "requirements.txt")
    for deps in (builds.arm / "DepsLayer" / "python", builds.x86_deps / "python"):
        installed = {}
        for info in deps.glob("*.dist-info"):
            name, version = info.name.removesuffix(".dist-info").rsplit("-", 1)
            installed[_norm(name)] = version
        assert installed == {k: v for k, v in pins.items() if k not in RUNTIME_PROVIDED + UNREACHABLE}, deps
        for name in RUNTIME_PROVIDED:
            assert not (deps / name).exists(), name

    deps_size = _size(builds.arm / "DepsLayer")
    print(f"\nDepsLayer ({builds.target.architecture}) unzipped: {deps_size / 1e6:.2f} MB")
    assert deps_size <= DEPS_LAYER_BUDGET
    for function in builds.functions:
        total = _size(builds.arm / function) + sum(_size(builds.arm / layer) for layer in builds.layers)
        assert total < LAMBDA_UNZIPPED_LIMIT, function
