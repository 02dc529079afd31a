"""What `cloudcli predict` reads: image files (JPEG, PNG, ...), multi-band TIFFs, and chip folders
of one TIFF per band (the chips layout, e.g. On Cloud N's `B02.tif` ... `B08.tif`), found on the
command line and named as the dataset kind names images. cloudcli.bundle.raster reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cloudcli.data.sources import IMAGE_EXTS
from cloudcli.errors import DataError

TIFF_EXTS = (".tif", ".tiff")


@dataclass(frozen=True)
class Input:
    """One thing to predict: a file, or a chip folder of band files."""

    path: Path
    id: str  # the name outputs carry, as the dataset kind names images (kaggle_clouds: 0011165.jpg; others: the stem)

    @property
    def stem(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name


def find_inputs(paths: list[Path], bands: list[str] | None, kind: str = "kaggle_clouds") -> list[Input]:
    """The inputs named on the command line: files as they are; a chip folder (holding every band
    file) as one input; any other folder as its image files and chip folders, sorted by name.
    Each is named as `kind` names images: Kaggle ids keep the file's suffix, the other kinds not."""

    def named(path: Path) -> Input:
        return Input(path, path.name if kind == "kaggle_clouds" or path.is_dir() else path.stem)

    found: list[Input] = []
    for path in paths:
        if path.is_file() or (path.is_dir() and _is_chip(path, bands)):
            found.append(named(path))
        elif path.is_dir():
            inside = sorted(p for p in path.iterdir() if _is_image(p) or (p.is_dir() and _is_chip(p, bands)))
            if not inside:
                what = f"image files ({', '.join(IMAGE_EXTS)})" + (" or chip folders of band files" if bands else "")
                raise DataError(f"{path}: holds no {what}")
            found += [named(p) for p in inside]
        else:
            raise DataError(f"{path}: no such file or folder")
    ids = [i.id for i in found]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise DataError(f"{twice[0]}: named by two inputs; outputs are named after their inputs, so give each once")
    return found


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_EXTS


def _is_chip(folder: Path, bands: list[str] | None) -> bool:
    return bool(bands) and all((folder / f"{b}.tif").is_file() for b in bands)
