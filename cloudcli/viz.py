"""Masks drawn over images, headless: one colour per class, prediction filled, truth outlined.

A panel shows one image as a grid of tiles two wide, one tile per class (the four cloud classes
overlap too often to share one view; one class: one tile), each with a caption (class, Dice or mask area), under a
header line and above a legend. Colours are the Okabe-Ito palette, safe for colour-blind
readers. Pure numpy + OpenCV; PNGs are written whole or not at all. `figure` and `save_figure`:
the reports' matplotlib charts, headless and byte-stable.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from cloudcli.data.cache import resize_mask
from cloudcli.errors import DataError
from cloudcli.io import atomic_path
from cloudcli.metrics import dice

# Okabe & Ito (2008), RGB: orange, sky blue, bluish green, reddish purple, yellow, blue, vermillion, grey;
# class k of any dataset is drawn in OKABE_ITO[k]
OKABE_ITO = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (204, 121, 167), (240, 228, 66), (0, 114, 178),
             (213, 94, 0), (153, 153, 153)]  # fmt: skip
ALPHA = 0.4  # opacity of the prediction fill
HEADER, CAPTION, LEGEND, GAP = 22, 18, 20, 4  # heights of the text bars and the space between tiles (px)
BAR = (32, 32, 32)  # text bars: white on near-black
FONT, FONT_SCALE = cv2.FONT_HERSHEY_SIMPLEX, 0.42


def blend(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], alpha: float = ALPHA) -> np.ndarray:
    """(H, W, 3) uint8 RGB with `colour` laid over the pixels of the (H, W) mask at opacity alpha:
    round((1 - alpha) * pixel + alpha * colour)."""
    out = image.copy()
    inside = np.asarray(mask) != 0
    mixed = (1.0 - alpha) * image[inside].astype(np.float64) + alpha * np.asarray(colour, np.float64)
    out[inside] = np.rint(mixed).astype(np.uint8)
    return out


def outline(image: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], thickness: int = 1) -> np.ndarray:
    """(H, W, 3) uint8 RGB with the boundary pixels of the (H, W) mask drawn in `colour`."""
    out = np.ascontiguousarray(image.copy())
    contours, _ = cv2.findContours((np.asarray(mask) != 0).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, tuple(int(c) for c in colour), thickness)
    return out


def tile(
    image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None, colour: tuple[int, int, int], size
) -> np.ndarray:
    """One class's view at `size` (H, W): the image, the prediction filled, the truth outlined."""
    h, w = size
    view = image if image.shape[:2] == (h, w) else cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
    if pred is not None:
        view = blend(view, resize_mask(np.asarray(pred, np.uint8), size), colour)
    if truth is not None:
        view = outline(view, resize_mask(np.asarray(truth, np.uint8), size), colour)
    return view


def _columns(n_classes: int) -> int:
    return 1 if n_classes == 1 else 2


def tile_origin(k: int, size: tuple[int, int], n_classes: int) -> tuple[int, int]:
    """(y, x) of class k's tile in a panel of `size` tiles: classes left to right, top to bottom."""
    h, w = size
    row, col = divmod(k, _columns(n_classes))
    return HEADER + row * (h + CAPTION + GAP), col * (w + GAP)


def panel_shape(size: tuple[int, int], n_classes: int) -> tuple[int, int]:
    """(H, W) of a panel of `size` tiles."""
    h, w = size
    cols = _columns(n_classes)
    rows = -(-n_classes // cols)
    return HEADER + rows * (h + CAPTION + GAP) + LEGEND, cols * w + (cols - 1) * GAP


def _text(canvas: np.ndarray, text: str, y: int, x: int, height: int, colour=(255, 255, 255)) -> None:
    (_, th), _ = cv2.getTextSize(text, FONT, FONT_SCALE, 1)
    cv2.putText(canvas, text, (x + 4, y + (height + th) // 2), FONT, FONT_SCALE, colour, 1, cv2.LINE_AA)


def caption(name: str, truth: np.ndarray | None, pred: np.ndarray | None) -> str:
    """`Fish  Dice 0.82` with truth and prediction; else the mask's share of the image."""
    if truth is not None and pred is not None:
        return f"{name}  Dice {dice(pred, truth):.2f}"
    mask = truth if truth is not None else pred
    return name if mask is None else f"{name}  {_share(mask)} of the image"


def _share(mask: np.ndarray) -> str:
    share = float(np.count_nonzero(mask)) / mask.size
    return "none" if share == 0 else f"{100 * share:.0f}%" if share >= 0.01 else "<1%"


def panel(
    image: np.ndarray,
    truth: np.ndarray | None,
    pred: np.ndarray | None,
    title: str,
    size: tuple[int, int],
    classes: tuple[str, ...],
) -> np.ndarray:
    """(H, W, 3) uint8 RGB panel of one image: (H, W, 3) RGB `image`, (C, h, w) 0/1 `truth` and
    `pred` masks of any size (None: not drawn), tiles of `size` (H, W)."""
    height, width = panel_shape(size, len(classes))
    canvas = np.full((height, width, 3), BAR, np.uint8)
    _text(canvas, title, 0, 0, HEADER)
    for k, name in enumerate(classes):
        y, x = tile_origin(k, size, len(classes))
        t = None if truth is None else truth[k]
        p = None if pred is None else pred[k]
        canvas[y : y + size[0], x : x + size[1]] = tile(image, t, p, OKABE_ITO[k], size)
        cy = y + size[0]
        cv2.rectangle(canvas, (x, cy + 3), (x + 10, cy + CAPTION - 4), OKABE_ITO[k], -1)
        _text(canvas, caption(name, t, p), cy, x + 12, CAPTION)
    legend = (
        "fill: prediction   outline: truth"
        if truth is not None and pred is not None
        else ("fill: prediction" if pred is not None else "outline: truth" if truth is not None else "no masks")
    )
    _text(canvas, legend, height - LEGEND, 0, LEGEND, (200, 200, 200))
    return canvas


def write_png(path: str | Path, rgb: np.ndarray) -> None:
    """Write an (H, W, 3) RGB image as a compressed PNG, atomically."""
    ok, data = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise DataError(f"{path}: cannot encode the image as PNG")
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.tobytes())


def figure(width: float = 6.0, height: float = 3.6):
    """A matplotlib Figure of width x height inches at 100 dpi, laid out to fit its labels."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, no display needed

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def save_figure(fig, path: Path) -> None:
    """Write a matplotlib Figure as a PNG."""
    fig.savefig(path, format="png", metadata={"Software": None})  # no version stamp: same data, same bytes
