"""What a Lambda pays: each handler's cold start (import plus initialisation) and the dependency layer's size.

    ./scripts/sam build                      # writes .aws-sam/build (arm64 deps layer, as deployed)
    sudo .venv/bin/python -m bench.lambda_costs [--repeat 9]

Size: the built ``DepsLayer`` in ``.aws-sam/build`` (arm64, what is deployed), unzipped (sum of file
sizes) and zipped (deflate, as ``sam deploy`` uploads it), per package.

Cold start: the arm64 layer cannot load on this x86_64 machine, so the same Makefile and the same pins
build an x86_64 copy (cached in ``.venv-bench/lambda-layer-<arch>``). Each measurement is a fresh
``python -I -S`` process (no site-packages) whose ``sys.path`` is Lambda's: the function's build
folder, the two layers (``/opt/python``) and a stand-in for the runtime's ``/var/runtime`` holding
boto3, botocore and s3transfer (the packages the Makefile deletes because the runtime provides them).
The environment is the function's own from ``template.yaml`` plus the runtime's variables, tracing on
(``Tracing: Active``).

Reported, as medians: the handler import alone (Lambda's init: imports and the module-level
Logger/Metrics/Tracer/BatchProcessor); the one-time work its first invocation adds (boto3, the AWS
clients the handler uses, and for the worker paramiko, all created lazily and then cached); and the
total from the parent's spawn of the process to the end of that first-use work (both read
CLOCK_MONOTONIC, so interpreter start-up counts and process exit does not), and the process's own CPU
time up to that point (less sensitive than wall time to a machine shared with other work). The target
is held against the spawn-to-ready wall time, so moving an import from init to the first call cannot
make a figure look better.

Beside each handler, in the same run, its anchor: "stack alone", a process that loads the same
modules except RelayGuard's own, makes the same Powertools objects and boto3 clients, and nothing
else. The difference is RelayGuard's own share of the cold start.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import REPO, VENV, log, machine, run_timed

BUILD = REPO / ".aws-sam" / "build"
BYTECODE_LIST = REPO / "layers" / "deps" / "bytecode.txt"
FUNCTIONS = {"PlannerFunction": "planner", "WorkerFunction": "worker", "AlertIntakeFunction": "alert_intake"}
COLD_TARGET_MS = 350.0
SIZE_TARGET_MB = 35.0
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer")
#: Names that template.yaml's environment refers to; the values only need the right shape.
RESOLVE = {
    "InventoryBucket": "relayguard-inventory", "WorkQueue": "https://sqs.eu-west-1.amazonaws.com/123456789012/work",
    "UrgentQueue": "https://sqs.eu-west-1.amazonaws.com/123456789012/urgent", "RunsTable": "runs",
    "StateTable": "state", "LocksTable": "locks", "IdempotencyTable": "idempotency",
    "ResultsTopic": "arn:aws:sns:eu-west-1:123456789012:results", "RecordsBucket": "relayguard-records",
}
#: What each handler's first invocation builds once and then caches: the handler's own calls into the
#: composition root (so the clients, Powertools' included, are made exactly as in Lambda), and for the
#: worker paramiko, which it loads on its first job. Nothing here makes a network call.
FIRST_USE = {
    "PlannerFunction": "c = settings(); bootstrap.planner(c)",
    "WorkerFunction": "c = settings(); bootstrap.worker(c); import relayguard.adapters.ssh",
    "AlertIntakeFunction": "c = settings(); bootstrap.alert_intake(c)",
}
PROBE = """
import importlib, importlib.util, json, os, resource, sys, time
t0 = time.perf_counter()
sys.path[:0] = {paths!r}
import app
app.lambda_handler
t1 = time.perf_counter()
from relayguard import bootstrap
from relayguard.entrypoints import settings
{first_use}
t2 = time.perf_counter()
use = resource.getrusage(resource.RUSAGE_SELF)
layers = {layers!r}
files = [m.__file__ for m in list(sys.modules.values()) if isinstance(getattr(m, "__file__", None), str)]
mine = sorted(f for f in files if f.endswith(".py") and f.startswith(tuple(layers)))
import gc
from botocore.client import BaseClient
own = ("app", "relayguard", "__main__")
print(json.dumps({{"init": (t1 - t0) * 1000, "first": (t2 - t1) * 1000, "ready": t2,
                  "cpu": (use.ru_utime + use.ru_stime) * 1000, "imported": mine,
                  "no_pyc": [f for f in mine if not os.path.exists(importlib.util.cache_from_source(f))],
                  "modules": [m for m in sys.modules if m.split(".")[0] not in own],
                  "clients": sorted({{o.meta.service_model.service_name for o in gc.get_objects()
                                    if isinstance(o, BaseClient)}})}}))
"""
#: The anchor: the same process with everything the handler loads except RelayGuard's own code. It
#: imports the modules the handler's process held (same order), makes the Powertools objects every
#: such handler makes at module level and one boto3 client per service the handler made. Its
#: spawn-to-ready is the floor this stack sets on this machine; the handler's figure minus it is
#: RelayGuard's own share (its modules, pydantic building its models, its wiring).
ANCHOR = """
import importlib, json, resource, sys, time
sys.path[:0] = {paths!r}
for name in {modules!r}:
    try:
        importlib.import_module(name)
    except Exception:  # a module another one injected, or one that only imports on another platform
        pass
from aws_lambda_powertools import Logger, Metrics, Tracer
Logger(); Metrics(); Tracer()
import boto3
for service in {clients!r}:
    boto3.client(service)
t2 = time.perf_counter()
use = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({{"ready": t2, "cpu": (use.ru_utime + use.ru_stime) * 1000}}))
"""

def tree_size(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() or p.is_symlink())


def zipped_size(root: Path) -> int:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root))
    return buf.tell()


def size_report() -> dict[str, object]:
    deps = BUILD / "DepsLayer" / "python"
    code = BUILD / "RelayGuardLayer" / "python"
    packages: dict[str, int] = {}
    for entry in deps.iterdir():
        name = re.split(r"[-.]", entry.name)[0].lstrip("_") or entry.name
        if entry.name.endswith(".dist-info"):
            name = "dist-info metadata"
        packages[name] = packages.get(name, 0) + (tree_size(entry) if entry.is_dir() else entry.lstat().st_size)
    unzipped = tree_size(deps)
    zipped = zipped_size(deps)
    print("\n### Dependency layer (.aws-sam/build/DepsLayer, arm64)\n")
    print(f"- unzipped: {unzipped:,} bytes = {unzipped / 1e6:.2f} MB = {unzipped / 2**20:.2f} MiB; "
          f"zipped: {zipped / 1e6:.2f} MB")
    print(f"- code layer (relayguard): {tree_size(code) / 1e6:.2f} MB unzipped")
    print(f"- not shipped, provided by the Lambda python3.13 runtime: {', '.join(RUNTIME_PACKAGES)}")
    print("- largest: " + ", ".join(f"{n} {s / 1e6:.2f}" for n, s in sorted(packages.items(),
                                                                          key=lambda x: -x[1])[:8]) + " (MB)")
    ok = unzipped <= SIZE_TARGET_MB * 1e6
    print(f"- target <= {SIZE_TARGET_MB:g} MB (10^6 bytes) unzipped: {'meets' if ok else 'MISSES'}")
    return {"unzipped": unzipped, "zipped": zipped, "met": ok}


def _pins(names: tuple[str, ...]) -> list[str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        name, _, version = line.partition("==")
        pins[name.strip().lower()] = f"{name.strip()}=={version.strip()}"
    return [pins[n] for n in names]


def native_layers() -> tuple[Path, Path]:
    """(deps layer for this machine's architecture, runtime stand-in), built once and cached."""
    arch = platform.machine()
    makefile = REPO / "layers" / "deps" / "Makefile"
    reqs = REPO / "layers" / "deps" / "requirements.txt"
    stamp = hashlib.sha256(b"".join(p.read_bytes() for p in (makefile, reqs, BYTECODE_LIST, REPO / "constraints.txt")))
    cache = REPO / ".venv-bench" / f"lambda-layer-{arch}"
    if (cache / ".stamp").exists() and (cache / ".stamp").read_text() == stamp.hexdigest():
        return cache / "deps" / "python", cache / "runtime"
    log(f"  building the deps layer for {arch} with layers/deps/Makefile (cached in {cache})")
    shutil.rmtree(cache, ignore_errors=True)
    (cache / "deps").mkdir(parents=True)
    pip = f"{VENV / 'bin' / 'python'} -m pip"
    for argv in (["make", "-s", "-C", str(makefile.parent), "build-DepsLayer", f"ARTIFACTS_DIR={cache / 'deps'}",
                  f"LAMBDA_ARCH={arch}", f"PIP={pip}"],
                 # Compiled, as in the runtime's image.
                 [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                  "--no-deps", "--target", str(cache / "runtime"), *_pins(RUNTIME_PACKAGES)]):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv[:4])} failed:\n{done.stderr[-3000:]}")
    (cache / ".stamp").write_text(stamp.hexdigest())
    return cache / "deps" / "python", cache / "runtime"


def lambda_env(logical_id: str, code: Path) -> dict[str, str]:
    sys.path.insert(0, str(REPO))
    from harness.template import resolved_environment  # noqa: PLC0415 - repo-local helper

    name = f"relayguard-{logical_id}"
    env = {
        "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": ":UTC",
        "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13", "AWS_LAMBDA_FUNCTION_NAME": name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{name}", "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
        "_HANDLER": "app.lambda_handler", "LAMBDA_TASK_ROOT": str(code), "LAMBDA_RUNTIME_DIR": "/var/runtime",
        "_X_AMZN_TRACE_ID": "Root=1-00000000-000000000000000000000000;Parent=0000000000000000;Sampled=0",
    }
    env.update(resolved_environment(logical_id, RESOLVE))
    return env


@dataclass(frozen=True)
class Variant:
    """What one set of cold starts loads: function folders and code layer under ``build``, and ``deps``."""

    label: str
    build: Path
    deps: Path


def compare_variants(revs: list[str], work: Path) -> list[Variant]:
    """Layers as older commits' Makefiles build them (for this machine), and the current build
    without its bytecode: so each change's effect is measured in the same run."""
    arch = platform.machine()
    variants = []
    for rev in revs:
        src, build = work / rev / "src", work / rev / "build"
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
        targets = [(f"functions/{short}", logical_id) for logical_id, short in FUNCTIONS.items()]
        targets += [("layers/relayguard", "RelayGuardLayer"), ("layers/deps", "DepsLayer")]
        for folder, target in targets:
            (build / target).mkdir(parents=True)
            done = subprocess.run(["make", "-s", "-C", str(src / folder), f"build-{target}",
                                   f"ARTIFACTS_DIR={build / target}", f"ARCH={arch}", f"LAMBDA_ARCH={arch}",
                                   f"PIP={VENV / 'bin' / 'python'} -m pip"],
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"{rev}: make build-{target} failed:\n{done.stderr[-3000:]}")
        variants.append(Variant(rev, build, build / "DepsLayer" / "python"))
    deps, _ = native_layers()
    stripped = work / "no-bytecode"
    shutil.copytree(BUILD, stripped / "build", ignore=shutil.ignore_patterns("__pycache__", "DepsLayer"))
    shutil.copytree(deps, stripped / "deps", ignore=shutil.ignore_patterns("__pycache__"))
    variants.append(Variant("current, without bytecode", stripped / "build", stripped / "deps"))
    return variants


def _spawn(python: list[str], code: str, env: dict[str, str], cwd: Path, what: str) -> tuple[float, dict[str, Any]]:
    """(spawn-to-ready ms, the JSON the process printed last) for one fresh interpreter."""
    spawned = time.perf_counter()
    # -B: Lambda's /opt is read-only, so nothing a cold start compiles is kept for the next one.
    run = run_timed([*python, "-I", "-S", "-B", "-c", code], env=env, cwd=cwd, timeout=60)
    if run.rc != 0:
        raise SystemExit(f"{what} did not import:\n{run.stderr[-2000:]}")
    got: dict[str, Any] = json.loads(run.stdout.strip().splitlines()[-1])
    return (got["ready"] - spawned) * 1000, got


def cold_starts(repeat: int, write_list: bool = False, priority: bool = False,
                variant: Variant | None = None) -> list[dict[str, object]]:
    deps, runtime = native_layers()
    build = BUILD
    if variant is not None:
        build, deps = variant.build, variant.deps
    # On a machine shared with other work, nice -20 approximates a quiet one for a single-threaded start-up.
    nice = ["nice", "-n", "-20"] if priority else []
    code_layer = build / "RelayGuardLayer" / "python"
    interpreter = str(Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}")
    rows: list[dict[str, object]] = []
    imported: set[str] = set()
    for logical_id, short in FUNCTIONS.items():
        task = build / logical_id
        paths = [str(task), str(code_layer), str(deps), str(runtime)]
        env = lambda_env(logical_id, task)
        walls, imports, firsts, cpus = [], [], [], []
        no_pyc: set[str] = set()
        probe = PROBE.format(paths=paths, first_use=FIRST_USE[logical_id], layers=[f"{code_layer}/", f"{deps}/"])

        python = [*nice, interpreter]
        # One untimed run learns what the handler loads and which clients it makes (and warms the page
        # cache for both measured processes alike); then handler and anchor alternate.
        _, seen = _spawn(python, probe, env, task, f"{short}: the handler")
        anchor = ANCHOR.format(paths=paths, modules=seen["modules"], clients=seen["clients"])
        floors = []
        for _ in range(repeat):
            floors.append(_spawn(python, anchor, env, task, f"{short}: the anchor (stack alone)")[0])
            wall, got = _spawn(python, probe, env, task, f"{short}: the handler")
            walls.append(wall)
            imports.append(got["init"])
            firsts.append(got["first"])
            cpus.append(got["cpu"])
            no_pyc.update(got["no_pyc"])
            imported.update(f[len(str(deps)) + 1:] for f in got["imported"] if f.startswith(f"{deps}/"))
        rows.append({"handler": short, "process_ms": statistics.median(walls), "import_ms": statistics.median(imports),
                     "first_use_ms": statistics.median(firsts), "cpu_ms": statistics.median(cpus),
                     "min_ms": min(walls), "max_ms": max(walls), "no_pyc": len(no_pyc),
                     "stack_ms": statistics.median(floors), "clients": seen["clients"]})
    how = ", at nice -20" if priority else ""
    what = f": {variant.label}" if variant else ""
    print(f"\n### Cold start per handler (median of {repeat} fresh `python -I -S -B` processes{how}){what}\n")
    print("| handler | init: handler import ms | first invocation's one-time setup ms | spawn to ready ms "
          "(min-max) | CPU ms to ready | stack alone: spawn to ready ms | RelayGuard's own ms "
          "| layer modules without .pyc | target <= 350 ms (spawn to ready) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        verdict = "meets" if r["process_ms"] <= COLD_TARGET_MS else "MISSES"  # type: ignore[operator]
        if verdict == "MISSES" and r["stack_ms"] > COLD_TARGET_MS:  # type: ignore[operator]
            verdict += " (so does the stack alone)"
        print(f"| {r['handler']} | {r['import_ms']:.0f} | {r['first_use_ms']:.0f} | {r['process_ms']:.0f} "
              f"({r['min_ms']:.0f}-{r['max_ms']:.0f}) | {r['cpu_ms']:.0f} | {r['stack_ms']:.0f} "
              f"| {r['process_ms'] - r['stack_ms']:.0f} | {r['no_pyc']} | {verdict} |")  # type: ignore[operator]
    print("\nstack alone: the same process without RelayGuard's code (the modules the handler loaded, "
          "Logger/Metrics/Tracer, one boto3 client per service: "
          + "; ".join(f"{r['handler']} {', '.join(r['clients'])}" for r in rows) + ")")  # type: ignore[arg-type]
    if write_list:
        BYTECODE_LIST.write_text(
            "# Modules of the deps layer that the three handlers import (cold start plus first-use setup);\n"
            "# layers/deps/Makefile ships .pyc files for these. Written by\n"
            "#   python -m bench.lambda_costs --write-bytecode-list\n" + "".join(f"{f}\n" for f in sorted(imported)))
        print(f"\nwrote {len(imported)} module paths to {BYTECODE_LIST.relative_to(REPO)}; now ./scripts/sam build")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--priority", action="store_true",
                        help="run the measured processes at nice -20 (a machine shared with other work)")
    parser.add_argument("--compare", action="append", default=[], metavar="REV",
                        help="also measure the layers as git revision REV builds them, and the current build "
                             "without bytecode (repeatable)")
    parser.add_argument("--write-bytecode-list", action="store_true",
                        help="record the deps-layer modules the handlers import in layers/deps/bytecode.txt")
    args = parser.parse_args(argv)
    if not (BUILD / "DepsLayer" / "python").is_dir():
        raise SystemExit(f"{BUILD} has no DepsLayer: run ./scripts/sam build first")
    log(f"bench.lambda_costs\n  machine: {machine()}")
    size = size_report()
    rows = cold_starts(args.repeat, args.write_bytecode_list, args.priority)
    if args.compare:
        with tempfile.TemporaryDirectory(prefix="rg-bench-lambda-") as tmp:
            for variant in compare_variants(args.compare, Path(tmp)):
                rows += [{**r, "variant": variant.label}
                         for r in cold_starts(args.repeat, priority=args.priority, variant=variant)]
    print(f"\nMachine: {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine(), "size": size, "cold": rows}, indent=1))
    # Targets are verdicts in the report; only a broken measurement (a handler that does not import) fails.
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    raise SystemExit(main())
