"""Constants and helpers shared by the device SDK tests."""

from __future__ import annotations

import json
from pathlib import Path

from autohas_edge.device_sdk._fs import sha256_file

TASK = "signals"


def rewrite_manifest_entry(bundle: Path, rel: str) -> None:
    """Re-hash one file in a bundle's manifest, as a careful attacker would after replacing it."""
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    entry = {"sha256": sha256_file(bundle / rel), "bytes": (bundle / rel).stat().st_size}
    manifest["files"][rel] = entry
    for artifact in manifest["artifacts"]:
        if artifact["file"] == rel:
            artifact.update(entry)
    path.write_text(json.dumps(manifest))
