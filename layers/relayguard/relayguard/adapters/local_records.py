"""Job records in a local directory (the CLI's ``--record-dir``): one JSON file per job, created once."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from relayguard.domain.evidence import record_key
from relayguard.errors import RecordError, RecordExists


class DirectoryRecordStore:
    """``O_EXCL`` creation: a file that exists already is never opened for writing, let alone replaced."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def put(self, document: dict[str, Any]) -> str:
        path = self.root / record_key(document)
        data = (json.dumps(document, indent=1) + "\n").encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError as exc:
            raise RecordExists(f"{path} exists already") from exc
        except OSError as exc:
            raise RecordError(f"{path}: {exc.strerror}") from exc
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())  # the record outlives a crash right after the job
        except OSError as exc:
            raise RecordError(f"{path}: {exc.strerror}") from exc
        return str(path)

    def get(self, location: str) -> dict[str, Any]:
        try:
            document: dict[str, Any] = json.loads(Path(location).read_text())
        except OSError as exc:
            raise RecordError(f"{location}: {exc.strerror}") from exc
        return document
