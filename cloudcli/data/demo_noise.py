"""Label noise for the demo data (cloudcli demo-data --label-noise): some training images get wrong
masks, as crowd-sourced labels do, and an answer key says which.

Three kinds, one per corrupted image, drawn in turn (a shuffled cycle, so each kind gets a third):
  dropped  a class present in the truth is removed (only from an image with 2+ classes, so every
           image keeps a class; an image with one class is shifted instead);
  shifted  a present class's mask is translated by 20-35% of the image height and width (each
           direction at random), wrapped around the edges: same area, wrong place;
  swapped  a present class's mask is exchanged with another class's: two present classes swap
           their masks, or a present class is relabelled as an absent one.
Everything is drawn from the seed alone (not from the images), so the same seed corrupts the same
images the same way.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from cloudcli.rle import decode, encode

KINDS = ("dropped", "shifted", "swapped")
SHIFT = (0.20, 0.35)  # translation, as a share of the image size
STREAM = 7  # SeedSequence word that keeps the noise apart from the images' draws


def corrupt(
    image_ids: list[str], rles: list[list[str]], share: float, seed: int, size: tuple[int, int], classes: tuple
) -> tuple[list[list[str]], pd.DataFrame]:
    """(noisy rles, answer key): round(share * N) images corrupted, each by one of KINDS. `rles`
    (N, C) strings in `classes` order ('' = absent) is left as it is. The key has a row per
    corrupted image, in image order: image_id, kind, classes (the classes whose mask changed,
    space-separated), detail (the shift dy dx in pixels, or empty)."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, STREAM]))
    n = round(share * len(image_ids))
    chosen = np.sort(rng.choice(len(image_ids), size=n, replace=False))
    kinds = rng.permutation(np.arange(n) % len(KINDS))
    noisy, rows = [list(r) for r in rles], []
    for i, kind in zip(chosen, kinds):
        noisy[i], changed, kind, detail = _corrupt_one(rng, rles[i], KINDS[kind], size)
        rows.append((image_ids[i], kind, " ".join(classes[k] for k in changed), detail))
    return noisy, pd.DataFrame(rows, columns=["image_id", "kind", "classes", "detail"])


def _corrupt_one(
    rng: np.random.Generator, rles: list[str], kind: str, size: tuple[int, int]
) -> tuple[list[str], list[int], str, str]:
    """(new rles, changed class indices (sorted), kind done, detail) for one image's rles."""
    present = [k for k, r in enumerate(rles) if r]
    if kind == "dropped" and len(present) < 2:
        kind = "shifted"  # never leave an image without a class
    k = int(rng.choice(present))
    out = list(rles)
    if kind == "dropped":
        out[k] = ""
        return out, [k], kind, ""
    if kind == "swapped":
        other = int(rng.choice([j for j in range(len(rles)) if j != k]))
        out[k], out[other] = rles[other], rles[k]
        return out, sorted((k, other)), kind, ""
    h, w = size
    dy, dx = (rng.uniform(*SHIFT, 2) * (h, w) * rng.choice((-1, 1), 2)).round().astype(int)
    out[k] = encode(np.roll(decode(rles[k], size), (int(dy), int(dx)), axis=(0, 1)))
    return out, [k], kind, f"{dy} {dx}"
