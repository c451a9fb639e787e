"""Shared pieces of the benchmarks: the machine, timing a whole process, statistics, a lab fleet."""

from __future__ import annotations

import contextlib
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv"
BENCH_VENV = REPO / ".venv-bench"


def machine() -> str:
    """Cores, CPU model, OS, kernel and load: the line every result table carries."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    osname = platform.system()
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                osname = line.split("=", 1)[1].strip('"')
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{os.cpu_count()} cores, {model}, {osname}, kernel {platform.release()}, "
            f"Python {platform.python_version()}, load average {load}")


@dataclass(frozen=True)
class Run:
    wall: float
    cpu: float
    rc: int
    stdout: str
    stderr: str


def run_timed(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 600.0,
              netns: str | None = None, cwd: Path = REPO) -> Run:
    """Run ``argv`` as a whole process: wall time from exec to exit, and its (and its children's) CPU time.

    ``netns`` is the path of a network namespace the process runs in (WAN mode), entered by
    ``nsenter``, whose exec is then part of every approach's time alike. Output goes to files, so
    reading it costs the measured process nothing.
    """
    if netns is not None:
        argv = ["nsenter", f"--net={netns}", "--", *argv]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=cwd,
                                start_new_session=True)
        # A run past its deadline is killed with its whole process group (ours: start_new_session).
        watchdog = threading.Timer(timeout, _kill_group, (proc.pid,))
        watchdog.start()
        try:
            _pid, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Run(wall, usage.ru_utime + usage.ru_stime, proc.returncode,
                   out.read().decode(errors="replace"), err.read().decode(errors="replace"))


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    return min(values), statistics.median(values), max(values)


def need_root() -> None:
    if os.geteuid() != 0:
        raise SystemExit("the benchmarks need root (the lab uses mount and PID namespaces)")


@contextlib.contextmanager
def fleet(workdir: Path, net: int, count: int, prefix: str = "b", *, compliant_every: int = 0) -> Iterator[object]:
    """A lab fleet of ``count`` hosts (modern and legacy alternating) that is always brought down."""
    from lab import HostSpec, Lab  # noqa: PLC0415 - the lab pulls in paramiko; only benchmarks that need it pay

    lab = Lab(workdir, net=net)
    specs = {}
    for i in range(count):
        exposed = not (compliant_every and i % compliant_every == compliant_every - 1)
        specs[f"{prefix}{i + 1:03d}"] = HostSpec(profile=("modern", "legacy")[i % 2], exposed=exposed)
    try:
        lab.up(specs)
        yield lab
    finally:
        lab.down()


def timed_call(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def python(venv: Path) -> str:
    exe = venv / "bin" / "python"
    if not exe.exists():
        raise SystemExit(f"{exe} is missing: run bench/bootstrap first")
    return str(exe)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
