"""The README's commands as a user without root meets them (issues 5 and 19): a missing lab package gets
the exact apt command and exit 1; the demo and the test command re-run themselves through sudo, saying
so; with no sudo installed they say how to run them as root.

The scripts run as ``nobody`` (``setpriv``), so they cannot install or change anything. They run from a
copy of ``scripts/`` in a directory ``nobody`` can enter: the checkout itself may sit under a mode-0700
directory (a clone under ``/root``, a Debian 12 home), and the scripts, as the README has them, are only
ever run by the user who owns the checkout. Each case runs in a mount namespace this test makes
(``unshare --mount``, private propagation), in which a tool is hidden by binding ``/dev/null`` (not
executable) over it, or sudo is replaced by a recorder of its arguments: a real sudo would hand the
script to root, whose bootstrap would then rebuild the very ``.venv`` this suite is running from.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
AS_NOBODY = "setpriv --reuid=nobody --regid=nogroup --clear-groups"
SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(autouse=True)
def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("making a mount namespace and switching to nobody needs root")


@pytest.fixture
def checkout() -> Iterator[Path]:
    """The scripts in a directory every user may enter (pytest's own tmp_path is root's, mode 0700)."""
    top = Path(tempfile.mkdtemp(prefix="relayguard-first-run-"))
    top.chmod(0o755)
    shutil.copytree(REPO / "scripts", top / "scripts")
    recorder = top / "sudo-recorder"
    recorder.write_text('#!/bin/sh\necho "sudo called with: $*"\n')
    recorder.chmod(0o755)
    yield top
    shutil.rmtree(top)


def as_nobody(command: str, *, hide: tuple[str, ...] = (), binds: tuple[tuple[Path, str], ...] = ()
              ) -> subprocess.CompletedProcess[str]:
    mounts = [f"mount --bind /dev/null {shlex.quote(path)}" for path in hide]
    mounts += [f"mount --bind {shlex.quote(str(src))} {shlex.quote(dst)}" for src, dst in binds]
    inner = " && ".join([*mounts, f"exec {AS_NOBODY} {command}"])
    env = {"PATH": SECURE_PATH, "LANG": "C.UTF-8"}
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", inner], cwd="/",
                          env=env, capture_output=True, text=True, timeout=120, check=False,
                          stdin=subprocess.DEVNULL)


def listing(top: Path) -> list[str]:
    return sorted(str(p.relative_to(top)) for p in top.rglob("*"))


def test_bootstrap_without_root_and_with_a_package_missing_prints_the_apt_command_and_exits_1(checkout):
    before = listing(checkout)
    done = as_nobody(str(checkout / "scripts" / "bootstrap"), hide=("/usr/bin/swaks",))
    assert done.returncode == 1, done.stderr
    assert "missing: /usr/bin/swaks" in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("run as root:  ")]
    command = line.removeprefix("run as root:  ")
    update, install = command.split(" && ")
    assert update == "DEBIAN_FRONTEND=noninteractive apt-get update"
    words = shlex.split(install)
    assert words[:5] == ["DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "--no-install-recommends"]
    assert {"swaks", "openssh-server", "exim4-daemon-light", "python3-venv", "sudo"} <= set(words[5:])
    assert listing(checkout) == before


@pytest.mark.parametrize("script", ["demo", "test"])
def test_without_root_the_readme_command_reruns_itself_through_sudo_saying_so(checkout, script):
    path = checkout / "scripts" / script
    done = as_nobody(f"{path} -k legacy", binds=((checkout / "sudo-recorder", "/usr/bin/sudo"),))
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"sudo called with: -- {path} -k legacy\n"
    assert done.stderr == (f"{path} needs root (the lab puts each simulated server in its own namespaces); "
                           f"re-running: sudo {path} -k legacy\n")


@pytest.mark.parametrize("script", ["demo", "test"])
def test_without_root_and_without_sudo_the_readme_command_says_how_to_run_it_and_starts_nothing(checkout, script):
    before = listing(checkout)
    path = checkout / "scripts" / script
    done = as_nobody(str(path), hide=("/usr/bin/sudo",))
    assert done.returncode == 1
    assert done.stdout == ""
    first, second = done.stderr.splitlines()
    assert first.endswith("and sudo is not installed.")
    assert second.startswith(f"run it as root:  su -c '{path}'")
    assert listing(checkout) == before
