import cv2
import numpy as np
import pytest

from cloudcli import CLASSES
from cloudcli.viz import ALPHA, OKABE_ITO, blend, outline, panel, panel_shape, tile_origin, write_png


def test_blend_mixes_the_colour_into_the_mask_pixels_only() -> None:
    image = np.full((4, 5, 3), 100, np.uint8)
    image[0, 0] = (10, 20, 30)
    mask = np.zeros((4, 5), np.uint8)
    mask[0, 0] = mask[2, 3] = 1
    out = blend(image, mask, (230, 159, 0), alpha=0.4)
    assert out[0, 0].tolist() == [round(0.6 * 10 + 0.4 * 230), round(0.6 * 20 + 0.4 * 159), round(0.6 * 30)]
    assert out[2, 3].tolist() == [152, 124, 60]  # 0.6 * 100 + 0.4 * (230, 159, 0), rounded
    untouched = np.ones((4, 5), bool)
    untouched[0, 0] = untouched[2, 3] = False
    assert (out[untouched] == 100).all() and (image[1, 1] == 100).all()  # input unchanged


def test_outline_draws_the_border_of_a_square_and_nothing_inside() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    mask = np.zeros((10, 10), np.uint8)
    mask[2:7, 3:8] = 1  # rows 2..6, cols 3..7
    out = outline(image, mask, (86, 180, 233))
    drawn = (out != 0).any(2)
    border = mask.astype(bool) & ~cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
    assert (drawn == border).all()
    assert out[2, 3].tolist() == [86, 180, 233] and out[4, 5].tolist() == [0, 0, 0]


def test_panel_draws_each_class_in_its_tile_in_its_colour() -> None:
    size = (40, 60)
    image = np.full((80, 120, 3), 90, np.uint8)  # downscaled 2x into the tiles
    pred = np.zeros((4, 80, 120), np.uint8)
    pred[1, 20:60, 40:100] = 1  # Flower: rows 10..29, cols 20..49 of its tile
    truth = np.zeros((4, 80, 120), np.uint8)
    truth[3, 0:40, 0:60] = 1  # Sugar: rows 0..19, cols 0..29 of its tile
    out = panel(image, truth, pred, "title", size, CLASSES)
    assert out.shape == (*panel_shape(size, len(CLASSES)), 3)
    y, x = tile_origin(CLASSES.index("Flower"), size, len(CLASSES))
    expected = np.rint(0.6 * 90 + ALPHA * np.array(OKABE_ITO[CLASSES.index("Flower")])).astype(int).tolist()
    assert (out[y + 10 : y + 30, x + 20 : x + 50] == expected).all()  # the fill, exactly
    assert (out[y : y + 10, x : x + size[1]] == 90).all()  # outside the mask: the image
    y, x = tile_origin(CLASSES.index("Sugar"), size, len(CLASSES))
    assert out[y + 19, x + 10].tolist() == list(OKABE_ITO[CLASSES.index("Sugar")])  # the truth outline, opaque
    assert (out[y + 5 : y + 15, x + 5 : x + 25] == 90).all()  # inside the outline: no fill
    y, x = tile_origin(CLASSES.index("Fish"), size, len(CLASSES))
    assert (out[y : y + size[0], x : x + size[1]] == 90).all()  # nothing predicted, nothing true


@pytest.mark.parametrize("masks", ["truth", "pred", "none"])
def test_panel_without_truth_or_prediction(masks) -> None:
    image = np.zeros((64, 96, 3), np.uint8)
    m = np.ones((4, 64, 96), np.uint8)
    out = panel(image, m if masks == "truth" else None, m if masks == "pred" else None, "x", (32, 48), CLASSES)
    assert out.shape == (*panel_shape((32, 48), len(CLASSES)), 3)


def test_write_png_round_trips(tmp_path) -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    write_png(tmp_path / "a/b.png", rgb)
    back = cv2.cvtColor(cv2.imread(str(tmp_path / "a/b.png")), cv2.COLOR_BGR2RGB)
    assert (back == rgb).all() and [p.name for p in (tmp_path / "a").iterdir()] == ["b.png"]
