"""The JSON sidecar written beside every downloaded file: what it is, where it came from,
and the post's metadata, so a file stays meaningful without the coordinator."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SUFFIX = ".json"


def sidecar_path(path: Path) -> Path:
    return path.with_name(path.name + SUFFIX)


def write_sidecar(path: Path, *, task: dict[str, Any], file_info: dict[str, Any], metadata: dict[str, Any]) -> Path:
    """Write atomically (temporary file, then rename): a crash never leaves half a sidecar."""
    document = {
        "fetchfleet": {
            "task_id": task["id"],
            "site": task["site"],
            "remote_id": task.get("remote_id"),
            "url": task["url"],
            "downloaded_at": datetime.now(UTC).isoformat(timespec="seconds"),
            **file_info,
        },
        "metadata": metadata,
        "found": task.get("metadata") or {},
    }
    target = sidecar_path(path)
    temporary = target.with_name(target.name + ".tmp")
    try:
        temporary.write_text(json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)  # a full disk leaves no half sidecar behind
        raise
    return target
