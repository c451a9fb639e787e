"""The CLI's fleet report: a run's records read back from a ``--record-dir``, the page written to ``--html``."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from relayguard.domain.evidence import key_part
from relayguard.errors import RecordError


class DirectoryRunRecords:
    """Records are ``<root>/<run>/<server>/<time>-<job>.json`` (adapters/local_records.py); ``root`` may
    also be one run's own folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def records(self, run_id: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        base = self.root / key_part(run_id) if run_id else self.root
        if not base.is_dir():
            raise RecordError(f"{base}: no such directory of records")
        for path in sorted(base.rglob("*.json")):
            try:
                document: dict[str, Any] = json.loads(path.read_text())
            except OSError as exc:
                raise RecordError(f"{path}: {exc.strerror}") from exc
            except ValueError as exc:
                raise RecordError(f"{path}: not JSON") from exc
            yield str(path), document



class HtmlFile:
    """The ``--html`` file: a whole page or none, written beside the target and renamed over it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def write(self, run_id: str | None, html: str) -> str:
        target = self.path
        try:
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        except OSError as exc:
            raise RecordError(f"{target}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(html)
            os.chmod(temp, 0o644)  # a page to open and share, unlike a record
            os.replace(temp, target)
        except OSError as exc:
            Path(temp).unlink(missing_ok=True)
            raise RecordError(f"{target}: {exc.strerror}") from exc
        return str(target)
