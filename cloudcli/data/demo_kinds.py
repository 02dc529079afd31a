"""Synthetic datasets of the other kinds, deterministic for a seed (cloudcli demo-data --kind).

chips (On Cloud N layout): 4 uint16 GeoTIFF bands B02/B03/B04/B08 per chip (Sentinel-2 L2A
reflectance x 10000, nodata 0), one uint8 label GeoTIFF per chip (1 = cloud). The land comes from
six locations of distinct reflectance; clouds are bright and flat in every band, so blue (B02)
tells them from bright sand, and some chips have a nodata wedge. train_metadata.csv gives each
chip's location and datetime.

image_mask (building footprints): RGB PNG tiles of fields and roads with rectangular buildings
(roof colours, a shadow), one PNG mask per tile (1 = building).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from cloudcli.data.demo import DemoSpec, generate
from cloudcli.errors import CloudcliError, DataError
from cloudcli.io import atomic_path
from cloudcli.parallel import pmap
from cloudcli.ui import info

BANDS = ("B02", "B03", "B04", "B08")  # blue, green, red, near infrared
LOCATIONS = {  # land reflectance (x 10000) per band
    "Amazon": (250, 500, 300, 3200),  # forest: dark, bright NIR
    "Sahara": (1800, 2600, 3300, 3900),  # sand: bright, little blue
    "Lagos": (900, 1100, 1200, 2200),  # city
    "Baikal": (500, 600, 400, 150),  # water: dark NIR
    "Punjab": (600, 900, 800, 2800),  # farmland
    "Andes": (1200, 1400, 1600, 2400),  # rock
}
CLOUD = (6500, 6300, 6200, 6000)  # bright and flat across bands


@dataclass(frozen=True)
class KindSpec:
    n_train: int
    n_test: int
    seed: int
    height: int
    width: int


def _noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-blurred white noise scaled to 0..1."""
    field = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), sigma)
    return (field - field.min()) / max(float(np.ptp(field)), 1e-6)


def render_chip(rng: np.random.Generator, location: str, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 4) uint16 bands and (H, W) uint8 cloud label of one chip."""
    h, w = size
    land = np.asarray(LOCATIONS[location], np.float32)
    texture = 0.6 + 0.8 * _noise(rng, size, max(h, w) / 24)  # fields, dunes, blocks
    bands = land * texture[..., None] * rng.uniform(0.85, 1.15, 4).astype(np.float32)
    coverage = 0.0 if rng.random() < 0.3 else rng.uniform(0.05, 0.95)
    label = np.zeros(size, np.uint8)
    if coverage > 0:
        field = _noise(rng, size, max(h, w) / rng.uniform(6, 14))
        label = (field >= np.quantile(field, 1 - coverage)).astype(np.uint8)
        soft = cv2.GaussianBlur(label.astype(np.float32), (0, 0), 1.5)  # cloud edges fade into the land
        thickness = rng.uniform(0.5, 1.0) * (0.75 + 0.25 * _noise(rng, size, max(h, w) / 40)) * soft  # thin to thick
        bands = bands * (1 - thickness[..., None]) + np.asarray(CLOUD, np.float32) * thickness[..., None]
    bands += rng.normal(0, 60, bands.shape).astype(np.float32)  # sensor noise
    bands = np.clip(bands, 1, 12000).astype(np.uint16)  # 0 is nodata
    if rng.random() < 0.15:  # a nodata wedge at the swath edge
        yy, xx = np.mgrid[0:h, 0:w]
        wedge = xx + yy * rng.uniform(0.2, 1.0) < rng.uniform(0.1, 0.4) * w
        bands[wedge], label[wedge] = 0, 0
    return bands, label


def write_geotiff(path: Path, array: np.ndarray, nodata: int | None = None) -> None:
    """A single-band GeoTIFF (UTM zone 33N, 10 m pixels) written with tifffile."""
    import tifffile

    geokeys = (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633)  # projected, pixel is area, EPSG:32633
    tags = [
        (33550, "d", 3, (10.0, 10.0, 0.0), True),  # ModelPixelScale
        (33922, "d", 6, (0.0, 0.0, 0.0, 500000.0, 4600000.0, 0.0), True),  # ModelTiepoint
        (34735, "H", len(geokeys), geokeys, True),  # GeoKeyDirectory
    ]
    if nodata is not None:
        tags.append((42113, "s", 0, str(nodata), True))  # GDAL_NODATA
    tifffile.imwrite(path, array, photometric="minisblack", compression="zlib", extratags=tags)


def _write_chip(job: tuple) -> dict:
    root, split, chip_id, seed, code, i, size = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, code, i]))
    location = list(LOCATIONS)[rng.integers(len(LOCATIONS))]
    bands, label = render_chip(rng, location, size)
    folder = root / f"{split}_features" / chip_id
    folder.mkdir()
    for k, band in enumerate(BANDS):
        write_geotiff(folder / f"{band}.tif", bands[..., k], nodata=0)
    write_geotiff(root / f"{split}_labels" / f"{chip_id}.tif", label)
    day = pd.Timestamp("2019-01-01") + pd.Timedelta(days=int(rng.integers(0, 730)), hours=int(rng.integers(8, 16)))
    return {"chip_id": chip_id, "location": location, "datetime": day.isoformat(), "coverage": float(label.mean())}


def generate_chips(out: Path, spec: KindSpec, workers: int) -> None:
    rng = np.random.default_rng(spec.seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    names: list[str] = []
    while len(names) < spec.n_train + spec.n_test:  # 4-letter chip ids, as On Cloud N's
        name = "".join(rng.choice(letters, 4))
        names += [name] if name not in names else []
    splits = {"train": sorted(names[: spec.n_train]), "test": sorted(names[spec.n_train :])}
    with atomic_path(out, is_dir=True) as tmp:
        rows = {}
        for code, (split, ids) in enumerate(splits.items()):
            (tmp / f"{split}_features").mkdir(), (tmp / f"{split}_labels").mkdir()
            jobs = [(tmp, split, c, spec.seed, code, i, (spec.height, spec.width)) for i, c in enumerate(ids)]
            rows[split] = pd.DataFrame(pmap(_write_chip, jobs, workers, f"demo {split} chips", "chips"))
        for split, frame in rows.items():
            frame.drop(columns="coverage").to_csv(tmp / f"{split}_metadata.csv", index=False, lineterminator="\n")
    cover = rows["train"]["coverage"]
    info(
        f"demo chips: {spec.n_train} train + {spec.n_test} test chips of {spec.height}x{spec.width}, bands "
        f"{', '.join(BANDS)} in {out}; cloud cover {cover.mean():.0%} of pixels, {(cover == 0).mean():.0%} clear chips"
    )


def render_tile(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB tile and (H, W) uint8 building mask (1 = building)."""
    h, w = size
    ground = np.array([(70, 110, 50), (120, 105, 80), (95, 120, 70)][rng.integers(3)], np.float32)
    image = ground * (0.75 + 0.5 * _noise(rng, size, max(h, w) / 16))[..., None]
    for _ in range(rng.integers(0, 3)):  # roads: grey lines, not buildings
        p = rng.integers(0, (w, h), size=(2, 2))
        cv2.line(image, tuple(map(int, p[0])), tuple(map(int, p[1])), (128, 128, 128), int(rng.integers(3, 7)))
    mask = np.zeros(size, np.uint8)
    for _ in range(rng.integers(0, 9)):
        bh, bw = rng.integers(max(h // 16, 3), max(h // 5, 5)), rng.integers(max(w // 16, 3), max(w // 5, 5))
        y, x = rng.integers(0, h - bh), rng.integers(0, w - bw)
        if mask[max(y - 2, 0) : y + bh + 2, max(x - 2, 0) : x + bw + 2].any():
            continue  # buildings do not touch
        roof = np.array([(170, 170, 175), (165, 70, 55), (120, 90, 70), (210, 205, 195)][rng.integers(4)], np.float32)
        s = max(2, bh // 4)
        image[y + s : y + bh + s, x + s : x + bw + s] *= 0.55  # shadow, down and right
        image[y : y + bh, x : x + bw] = roof * rng.uniform(0.9, 1.1)
        mask[y : y + bh, x : x + bw] = 1
    image += rng.normal(0, 5, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _write_tile(job: tuple) -> float:
    root, split, tile_id, seed, code, i, size = job
    image, mask = render_tile(np.random.default_rng(np.random.SeedSequence([seed, code, i])), size)
    cv2.imwrite(str(root / split / "images" / f"{tile_id}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / split / "masks" / f"{tile_id}.png"), mask)
    return float(mask.mean())


def generate_tiles(out: Path, spec: KindSpec, workers: int) -> None:
    ids = [f"tile_{i:04d}" for i in range(spec.n_train + spec.n_test)]
    splits = {"train": ids[: spec.n_train], "test": ids[spec.n_train :]}
    with atomic_path(out, is_dir=True) as tmp:
        cover = []
        for code, (split, names) in enumerate(splits.items()):
            (tmp / split / "images").mkdir(parents=True), (tmp / split / "masks").mkdir()
            jobs = [(tmp, split, t, spec.seed, code, i, (spec.height, spec.width)) for i, t in enumerate(names)]
            cover += pmap(_write_tile, jobs, workers, f"demo {split} tiles", "tiles")
    info(
        f"demo tiles: {spec.n_train} train + {spec.n_test} test tiles of {spec.height}x{spec.width} in {out}; "
        f"buildings cover {np.mean(cover):.0%} of pixels"
    )


DEMO_SIZES = {  # kind -> (n_train, n_test, height, width) by default
    "kaggle_clouds": (120, 40, 1400, 2100),
    "chips": (160, 40, 128, 128),
    "image_mask": (160, 40, 128, 128),
}


def generate_demo(
    kind: str,
    out: str | Path,
    sizes: tuple[int | None, ...],
    seed: int,
    workers: int,
    force: bool,
    label_noise: float = 0.0,
) -> None:
    """`cloudcli demo-data`: a dataset of `kind`; `sizes` (n_train, n_test, height, width), None
    taking DEMO_SIZES's value; `label_noise` (kaggle_clouds) the share of training images mislabelled."""
    if kind not in DEMO_SIZES:
        raise CloudcliError(f"--kind: unknown dataset kind {kind!r}; choose from {', '.join(DEMO_SIZES)}")
    n_train, n_test, height, width = (g if g is not None else d for g, d in zip(sizes, DEMO_SIZES[kind]))
    if kind == "kaggle_clouds":
        generate(out, DemoSpec(n_train, n_test, seed, height, width, label_noise), max(workers, 1), force)
        return
    if label_noise:
        raise CloudcliError(f"--label-noise: only kaggle_clouds demo data has label noise, not {kind}; drop the option")
    generate_kind(kind, out, KindSpec(n_train, n_test, seed, height, width), max(workers, 1), force)


def generate_kind(kind: str, out: str | Path, spec: KindSpec, workers: int = 2, force: bool = False) -> None:
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise DataError(f"{out}: folder is not empty; pass --force to replace it")
    if spec.n_train < 1 or spec.n_test < 1 or min(spec.height, spec.width) < 16:
        raise DataError("demo data needs n_train >= 1, n_test >= 1 and images of at least 16x16 pixels")
    (generate_chips if kind == "chips" else generate_tiles)(out, spec, workers)
