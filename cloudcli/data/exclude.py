"""data.exclude: a text file of training image ids to leave out of training, validation and every
cross-validated score (suspected bad labels). One id a line; blank lines and `#` comments (whole
lines, or after an id) are skipped. The images stay in the cache and keep their fold."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cloudcli.errors import DataError
from cloudcli.io import write_text
from cloudcli.paths import LABELS

LABELS_README = """# labels/

Lists of training image ids about their labels, for `data.exclude` in params.yaml: e.g.
`labels/exclude.txt`, one image id a line (blank lines and `#` comments allowed). The `fold` stage
depends on this folder, so `dvc repro` notices an edit. See docs/datasets.md, "Bad labels".
"""


def make_labels_folder(root: Path) -> bool:
    """The folder of exclude lists under `root` (the fold stage depends on it, so it must exist),
    with its README; False when it was there already (left as it is)."""
    folder = Path(root) / LABELS
    if folder.exists():
        return False
    folder.mkdir(parents=True)
    write_text(folder / "README.md", LABELS_README)
    return True


def read_exclude(path: Path, train_ids: list[str] | tuple[str, ...]) -> np.ndarray:
    """(N,) bool: whether each of `train_ids` is listed in the file at `path`."""
    where = f"{path} (data.exclude in params.yaml)"
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(
            f"{where}: missing; write the image ids to leave out there, or set data.exclude: null"
        ) from None
    except (IsADirectoryError, UnicodeDecodeError) as e:
        raise DataError(f"{where}: not a readable text file ({type(e).__name__}); one image id a line") from None
    index = {image_id: i for i, image_id in enumerate(train_ids)}
    excluded, first = np.zeros(len(train_ids), bool), {}
    for line, raw in enumerate(text.splitlines(), 1):
        image_id = raw.split("#", 1)[0].strip()
        if not image_id:
            continue
        if image_id not in index:
            raise DataError(
                f"{path} line {line}: {image_id[:60]!r} is not a training image (data.exclude lists training "
                "image ids, e.g. 0011165.jpg); fix or delete the line"
            )
        if image_id in first:
            raise DataError(
                f"{path} line {line}: {image_id!r} is listed again (first on line {first[image_id]}); delete one"
            )
        first[image_id] = line
        excluded[index[image_id]] = True
    return excluded


def check_folds_keep_images(excluded: np.ndarray, folds: np.ndarray, where: str) -> None:
    """Every fold keeps an image that is not excluded, else an error naming the fold."""
    for k in np.unique(folds):
        if excluded[folds == k].all():
            raise DataError(
                f"{where}: excludes every image of fold {int(k)} ({int((folds == k).sum())} images); nothing would "
                "validate it: list fewer images, or lower fold.n_splits"
            )
