"""A bundle's manifest: every file with its sha256, and the format version that reads it.

    bundle/manifest.json   {"format": "cloudcli-bundle", "format_version": 1, "files": {path: sha256}}

Loading checks the manifest before anything else is read: a file missing, added to the list or
changed since export, or a format version this cloudcli does not know, is refused naming the file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cloudcli.errors import DataError
from cloudcli.io import read_json, write_json

FORMAT = "cloudcli-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> dict:
    """List every file under `folder` (but the manifest) with its sha256, in manifest.json."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "files": {p.relative_to(folder).as_posix(): sha256(p) for p in files},
    }
    write_json(folder / MANIFEST, manifest)
    return manifest


def verify(folder: str | Path) -> dict:
    """The manifest of the bundle at `folder`, after checking its format version and every file."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not folder.is_dir():
        raise DataError(f"{folder}: not a bundle folder (write one with `cloudcli export --out {folder}`)")
    manifest = read_json(
        path, "export the bundle again", missing=f"{folder} is not a cloudcli bundle (cloudcli export writes one)"
    )
    if manifest.get("format") != FORMAT:
        raise DataError(f'{path}: not a cloudcli bundle manifest (no "format": "{FORMAT}")')
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise DataError(
            f"{path}: bundle format version {version!r}; this cloudcli reads version {FORMAT_VERSION}: "
            "use the cloudcli version that exported it (bundle.json names it), or export again"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or "bundle.json" not in files:
        raise DataError(f"{path}: lists no bundle.json; export the bundle again")
    for name, expected in files.items():
        file = folder / name
        if not file.is_file():
            raise DataError(f"{file}: missing from the bundle (listed in {path}); copy the whole bundle folder")
        if sha256(file) != expected:
            raise DataError(f"{file}: changed since export (sha256 differs from {path}); export the bundle again")
    return manifest
