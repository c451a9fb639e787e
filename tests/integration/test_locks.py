"""Every Python the scripts may pick has a lock that resolves (issue 19).

`scripts/lib.sh` picks pyenv's 3.13 as root, Debian's 3.11 through sudo (its secure_path hides pyenv), or
whatever supported python3 is first on PATH. A lock made on one of them once pinned networkx 3.7, which
needs 3.12, and `sudo ./scripts/test` died in pip with ResolutionImpossible. Each lock is resolved here
for each supported version with uv's resolver, which evaluates markers and Requires-Python for the
version asked, not for the interpreter running the test, and takes seconds where `pip --dry-run` takes a
minute. Only wheels are accepted, as a fresh machine without compilers for every C extension would need.
The one thing on the network is the package registry.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.registry

REPO = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"


def supported_pythons() -> list[str]:
    match = re.search(r'^RG_PYTHONS="([^"]+)"$', (REPO / "scripts" / "lib.sh").read_text(), re.MULTILINE)
    assert match, "scripts/lib.sh must define RG_PYTHONS"
    return match.group(1).split()


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not an exact pin"
            found[canonicalize_name(re.sub(r"\[.*\]", "", name))] = version.strip()
    return found


#: lock file -> the uv inputs that install it, as scripts/bootstrap and scripts/sam do.
LOCKS = {
    "constraints.txt": ["-c", "constraints.txt", "requirements-dev.in"],
    "requirements-sam.txt": ["requirements-sam.txt"],
}


def test_the_supported_pythons_are_what_pyproject_admits():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    admitted = SpecifierSet(project["requires-python"])
    assert [f"3.{minor}" for minor in range(8, 20) if f"3.{minor}.0" in admitted] == supported_pythons()


@pytest.mark.parametrize("python", supported_pythons())
@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_each_lock_resolves_to_exactly_its_pins_on_each_supported_python(lock: str, python: str, tmp_path: Path):
    out = tmp_path / "resolved.txt"
    done = subprocess.run(
        # --system-certs: the machine trusts its registry through the system store (pip has it from pip.conf);
        # uv's own roots, or SSL_CERT_FILE, which sudo resets, are not enough.
        [str(UV), "pip", "compile", "--quiet", "--no-header", "--no-annotate", "--no-config", "--system-certs",
         "--python-version", python, "--only-binary", ":all:", *LOCKS[lock], "-o", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, f"{lock} does not resolve on Python {python}:\n{done.stderr}"
    # The lock is the whole environment: nothing resolved is left unpinned, no pin is stale.
    assert pins(out) == pins(REPO / lock)
