"""The two README commands as a user without root meets them (issue 5): a missing lab package gets
the exact apt command and exit 1; with everything installed, the demo says it needs root.

A missing tool is simulated inside a mount namespace this test makes (``unshare --mount``, private
propagation): ``/dev/null``, which is not executable, is bound over ``/usr/bin/swaks`` there only. The
scripts then run as ``nobody`` (``setpriv``), so they cannot install or change anything.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AS_NOBODY = "setpriv --reuid=nobody --regid=nogroup --clear-groups"


def as_nobody(command: str, *, hide: str | None = None) -> subprocess.CompletedProcess[str]:
    inner = f"exec {AS_NOBODY} {command}"
    if hide is not None:
        inner = f"mount --bind /dev/null {shlex.quote(hide)} && {inner}"
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner], cwd="/",
                          env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("making a mount namespace and switching to nobody needs root")


def test_bootstrap_without_root_and_with_a_package_missing_prints_the_apt_command_and_exits_1():
    before = sorted(p.name for p in REPO.iterdir())
    done = as_nobody(str(REPO / "scripts" / "bootstrap"), hide="/usr/bin/swaks")
    assert done.returncode == 1, done.stderr
    assert "missing: /usr/bin/swaks" in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("run as root:  ")]
    command = line.removeprefix("run as root:  ")
    update, install = command.split(" && ")
    assert update == "DEBIAN_FRONTEND=noninteractive apt-get update"
    words = shlex.split(install)
    assert words[:5] == ["DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends"]
    assert {"swaks", "openssh-server", "exim4-daemon-light", "python3-venv"} <= set(words[5:])
    assert sorted(p.name for p in REPO.iterdir()) == before


def test_the_demo_without_root_says_it_needs_root_and_starts_nothing():
    before = sorted(p.name for p in REPO.iterdir())
    done = as_nobody(str(REPO / "scripts" / "demo"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr.splitlines()[-1] == "run: sudo ./scripts/demo"
    assert done.stdout == ""
    assert sorted(p.name for p in REPO.iterdir()) == before


def test_the_demo_without_root_and_with_a_package_missing_prints_the_apt_command():
    done = as_nobody(str(REPO / "scripts" / "demo"), hide="/usr/sbin/exim4")
    assert done.returncode == 1
    assert "missing: /usr/sbin/exim4" in done.stderr
    assert "run as root:  DEBIAN_FRONTEND=noninteractive apt-get update && " in done.stderr
