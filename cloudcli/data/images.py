"""Decoding image files (JPEG, PNG, BMP, TIFF through OpenCV) that are whole or an error.

libjpeg decodes a truncated JPEG with a warning only, filling the missing rows with grey; such an
image would enter the cache as if it were whole. A JPEG (known by its first bytes) is refused unless it ends with its
end-of-image marker (FFD9, padding after it allowed). OpenCV returns None for the other damaged
formats, which the callers turn into an error naming the file (OpenCV's own warnings are silenced).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cloudcli.errors import DataError

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)  # damaged files are errors of ours, not warnings


def imread(path: str | Path, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray | None:
    """cv2.imread of `path`; None where OpenCV cannot decode it; DataError for a truncated JPEG
    or a file that cannot be read."""
    path = Path(path)
    try:
        data = np.fromfile(path, np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image file") from None
    if data.size == 0:
        return None
    if data[:2].tobytes() == b"\xff\xd8":  # a JPEG, whatever its name
        _check_jpeg(path, data)
    return cv2.imdecode(data, flags)


def _check_jpeg(path: Path, data: np.ndarray) -> None:
    tail = data[-4096:].tobytes().rstrip(b"\x00\r\n\t ")
    if not tail.endswith(b"\xff\xd9"):
        raise DataError(
            f"{path}: truncated JPEG (no end-of-image marker; an interrupted download or copy?); "
            "replace it with the original image"
        )
