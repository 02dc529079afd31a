import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from helpers import REPO, load_maps, train_each_fold

from cloudcli import CLASSES
from cloudcli.config import load_params, resolve_model
from cloudcli.data.cache import open_cache, unpack_masks
from cloudcli.engine.predict import _cropped, _scaled_input, load_fold_net, memory_format, scaled_size
from cloudcli.errors import ConfigError
from cloudcli.stages import infer


@pytest.fixture(scope="module")
def trained(tiny_cache, tmp_path_factory):
    """seg1 and classifier trained 1 epoch on each of the 3 folds of the tiny cache."""
    root = tmp_path_factory.mktemp("trained")
    p = load_params(tiny_cache / "params.yaml")
    for name in ("seg1", "classifier"):
        train_each_fold(tiny_cache, resolve_model(name, p.network, p.train, p.models), root)
    return root


def run_infer(tiny_cache, trained, model: str, **changes):
    p = load_params(tiny_cache / "params.yaml")
    cfg = dataclasses.replace(p.infer, **changes)
    out = trained / "predictions" / model
    infer.run(
        model,
        cfg,
        p.cv,
        trained / "models",
        tiny_cache / "artifacts/preprocessed",
        tiny_cache / "artifacts/folds.csv",
        out,
    )
    return out


def test_oof_covers_every_train_image_once_and_matches_a_hand_computation(tiny_cache, trained) -> None:
    out = run_infer(tiny_cache, trained, "seg1", tta=("none", "hflip"))
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    index = pd.read_csv(out / "oof.csv", dtype={"image_id": str})
    assert sorted(index["image_id"]) == sorted(cache.train["image_id"]) and index["image_id"].is_unique
    folds = pd.read_csv(tiny_cache / "artifacts/folds.csv", dtype={"image_id": str}).set_index("image_id")["fold"]
    assert (index["fold"].to_numpy() == folds.loc[index["image_id"]].to_numpy()).all()
    oof, test = load_maps(out), load_maps(out, "test")
    assert oof.shape == (24, 4, 32, 48) and oof.dtype == np.uint8 and test.shape == (6, 4, 32, 48)
    fold_rows = [np.flatnonzero(folds.loc[cache.train["image_id"]].to_numpy() == k) for k in (0, 1, 2)]
    expected_order = cache.train["image_id"].to_numpy()[np.concatenate(fold_rows)]
    assert list(index["image_id"]) == list(expected_order)  # grouped by fold, cache order within
    truth = unpack_masks(cache.array("train_truth")[np.concatenate(fold_rows)], 4) != 0
    hist = np.load(out / "oof_hist.npy")  # what later stages read instead of the maps
    assert hist.shape == (24, 4, 2, 256) and hist.dtype == np.int32
    for i in range(24):
        for k in range(4):
            assert (hist[i, k, 0] == np.bincount(oof[i, k].ravel(), minlength=256)).all()
            assert (hist[i, k, 1] == np.bincount(oof[i, k][truth[i, k]], minlength=256)).all()

    row = 5  # by hand: the row's own fold model, mean of plain and flipped-back predictions
    image_id, fold = index["image_id"][row], int(index["fold"][row])
    net, settings = load_fold_net(trained / "models/seg1" / f"fold{fold}", torch.device("cpu"))
    i = int(np.flatnonzero(cache.train["image_id"] == image_id)[0])
    mean, std = (torch.tensor(settings["normalization"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = (torch.from_numpy(cache.array("train_images")[i].copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        probs = (torch.sigmoid(net(x)) + torch.sigmoid(net(x.flip(-1))).flip(-1)) / 2
    expected = (F.interpolate(probs, size=(32, 48), mode="bilinear", align_corners=False) * 255).round()
    assert np.abs(oof[row].astype(int) - expected[0].numpy().astype(int)).max() <= 1


def test_classifier_tables(tiny_cache, trained) -> None:
    out = run_infer(tiny_cache, trained, "classifier")
    oof, test = pd.read_csv(out / "oof.csv"), pd.read_csv(out / "test.csv")
    assert len(oof) == 24 and len(test) == 6 and not (out / "oof.zarr").exists() and not (out / "oof_hist.npy").exists()
    probs = oof[["Fish", "Flower", "Gravel", "Sugar"]].to_numpy()
    assert ((probs > 0) & (probs < 1)).all()


def test_transpose_needs_square_inputs(tiny_cache, trained) -> None:
    with pytest.raises(ConfigError, match="transpose needs square inputs"):
        run_infer(tiny_cache, trained, "seg1", tta=("none", "transpose"))
    assert not (trained / "predictions/seg1_t").exists()


@pytest.mark.parametrize("scales", [(1.0,), (1.0, 1.5)])
@pytest.mark.parametrize("model", ["seg1", "classifier"])
def test_stacked_tta_views_give_the_sequential_answer(tiny_cache, trained, model, scales) -> None:
    flips = ("none", "hflip", "vflip", "hvflip")
    split = "oof.csv"
    out = run_infer(tiny_cache, trained, model, tta=flips, stack_tta=False, scales=scales)
    sequential = load_maps(out) if model == "seg1" else pd.read_csv(out / split)
    out = run_infer(tiny_cache, trained, model, tta=flips, stack_tta=True, scales=scales)
    if model == "seg1":
        assert np.abs(load_maps(out).astype(int) - sequential.astype(int)).max() <= 1
    else:
        stacked = pd.read_csv(out / split)
        np.testing.assert_allclose(stacked[list(CLASSES)], sequential[list(CLASSES)], atol=1e-5)


@pytest.mark.parametrize("model", ["seg1", "classifier"])
def test_scale_tta_averages_the_views_of_each_resized_input(tiny_cache, trained, model) -> None:
    """infer.scales (1.0, 1.5): by hand for one row, the mean over the input and the input resized
    to scaled_size (48x96 for the 32x64 cache, padded to 64x96 by repeating its last row), each plain
    and flipped, of the sigmoid masks cut back to 48x96 and resized to the input's size (or of the
    class probabilities); not the answer of scale 1.0 alone."""
    read = (lambda out: load_maps(out).astype(int)) if model == "seg1" else (
        lambda out: pd.read_csv(out / "oof.csv")[list(CLASSES)].to_numpy()
    )  # fmt: skip
    plain = read(run_infer(tiny_cache, trained, model, tta=("none", "hflip")))
    out = run_infer(tiny_cache, trained, model, tta=("none", "hflip"), scales=(1.0, 1.5))
    assert json.loads((out / "meta.json").read_text())["scales"] == [1.0, 1.5]
    scaled = read(out)
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    index = pd.read_csv(out / "oof.csv", dtype={"image_id": str})
    row = 7
    net, settings = load_fold_net(trained / "models" / model / f"fold{int(index['fold'][row])}", torch.device("cpu"))
    i = int(np.flatnonzero(cache.train["image_id"] == index["image_id"][row])[0])
    mean, std = (torch.tensor(settings["normalization"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = (torch.from_numpy(cache.array("train_images")[i].copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    assert scaled_size(x.shape, 1.5) == (48, 96)

    def run(view: torch.Tensor, scaled: bool) -> torch.Tensor:
        if not scaled:
            return torch.sigmoid(net(view))
        small = F.interpolate(view, size=(48, 96), mode="bilinear", align_corners=False)
        if model != "seg1":  # a classifier pools the scaled input as it is
            return torch.sigmoid(net(small))
        padded = torch.cat([small, small[..., -1:, :].expand(-1, -1, 16, -1)], -2)  # 64 rows: 16 copies of the last
        probs = torch.sigmoid(net(padded))
        return F.interpolate(probs[..., :48, :], size=(32, 64), mode="bilinear", align_corners=False)

    views = []
    with torch.no_grad():
        for scaled_view in (False, True):
            views.append(run(x, scaled_view))
            flipped = run(x.flip(-1), scaled_view)
            views.append(flipped.flip(-1) if model == "seg1" else flipped)
    expected = torch.stack(views).mean(0)
    if model == "seg1":
        expected = (F.interpolate(expected, size=(32, 48), mode="bilinear", align_corners=False) * 255).round()
        assert np.abs(scaled[row] - expected[0].numpy().astype(int)).max() <= 1
        assert np.abs(scaled - plain).max() > 2
    else:
        np.testing.assert_allclose(scaled[row], expected[0].numpy(), atol=1e-5)
        assert np.abs(scaled - plain).max() > 1e-3


@pytest.mark.parametrize(
    ("size", "scale", "expected"),
    [
        ((32, 64), 1.0, (32, 64)),
        ((32, 64), 1.5, (48, 96)),
        ((64, 96), 1.25, (80, 120)),
        ((2, 3, 320, 480), 0.75, (240, 360)),  # the last two of a batch's shape
        ((350, 525), 1.1, (385, 578)),  # 577.5 rounds to the even 578
        ((32, 64), 0.01, (1, 1)),  # never under a pixel
    ],
)
def test_scaled_sizes_keep_the_scale(size, scale, expected) -> None:
    assert scaled_size(size, scale) == expected


def test_scaled_inputs_are_padded_to_multiples_of_32_and_outputs_cut_back() -> None:
    x = torch.arange(2 * 3 * 48 * 96, dtype=torch.float32).reshape(2, 3, 48, 96)
    padded = _scaled_input(x, (48, 96))  # its own size: no resize, only the padding
    assert padded.shape == (2, 3, 64, 96) and torch.equal(padded[..., :48, :], x)
    assert torch.equal(padded[..., 48:, :], x[..., -1:, :].expand(-1, -1, 16, -1))  # edge rows repeated
    assert torch.equal(_scaled_input(x[..., :32, :], (32, 96)), x[..., :32, :])  # multiples of 32: as it is
    masks, classes = torch.zeros(2, 4, 64, 96), torch.zeros(2, 4)
    cut = _cropped((masks, classes), (48, 96))
    assert cut[0].shape == (2, 4, 48, 96) and cut[1] is classes
    assert _cropped(classes, (48, 96)) is classes  # a classifier's (B, C): nothing to cut


@pytest.mark.parametrize(
    ("scales", "message"),
    [
        ((1.0, 1.0), r"infer.scales must list distinct scales, e.g. \[1.0, 1.25\], got \[1.0, 1.0\]"),
        ((), r"infer.scales must list distinct scales"),
        ((1.0, 5.0), r"infer.scales must be in \[0.25, 4.0\], got 5.0"),
        ((0.2,), r"infer.scales must be in \[0.25, 4.0\], got 0.2"),
    ],
)
def test_bad_scales_name_the_key(scales, message) -> None:
    cfg = load_params(REPO / "params.yaml").infer
    assert cfg.scales == (1.0,)
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(cfg, scales=scales)


def test_worker_processes_give_the_same_predictions(tiny_cache, trained) -> None:
    single = load_maps(run_infer(tiny_cache, trained, "seg1", workers=0))
    assert np.array_equal(load_maps(run_infer(tiny_cache, trained, "seg1", workers=2)), single)


def test_inputs_take_the_memory_format_the_model_trained_with() -> None:
    assert memory_format({"train_config": {"channels_last": False}}) == torch.contiguous_format
    assert memory_format({"train_config": {"channels_last": True}}) == torch.channels_last
    assert memory_format({}) == torch.channels_last  # checkpoints that do not say: as they always ran


@pytest.mark.parametrize("model", ["seg1", "classifier"])
def test_each_fold_models_test_predictions_and_their_mean(tiny_cache, trained, model) -> None:
    """infer.fold_test: test_fold<k> holds fold k's model alone (checked against that model run by
    hand on one image), and test averages them; off, no test_fold<k> is written."""
    out = run_infer(tiny_cache, trained, model, tta=("none",))
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    read = (lambda f: load_maps(out, f).astype(float)) if model == "seg1" else (
        lambda f: pd.read_csv(out / f"{f}.csv")[list(CLASSES)].to_numpy()
    )  # fmt: skip
    folds = [read(f"test_fold{k}") for k in (0, 1, 2)]
    for k in (0, 1, 2):
        ids = pd.read_csv(out / f"test_fold{k}.csv", dtype={"image_id": str})["image_id"]
        assert list(ids) == list(cache.test["image_id"])
    tolerance = 1.0 if model == "seg1" else 1e-5  # uint8 maps: each is rounded on its own
    assert np.abs(read("test") - np.mean(folds, 0)).max() <= tolerance
    assert np.abs(folds[0] - folds[1]).max() > 2 * tolerance  # the fold models differ

    row, fold = 3, 2
    net, settings = load_fold_net(trained / "models" / model / f"fold{fold}", torch.device("cpu"))
    mean, std = (torch.tensor(settings["normalization"][k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    x = (torch.from_numpy(cache.array("test_images")[row].copy()).permute(2, 0, 1)[None].float() / 255 - mean) / std
    with torch.no_grad():
        probs = torch.sigmoid(net(x))
    if model == "seg1":
        expected = (F.interpolate(probs, size=(32, 48), mode="bilinear", align_corners=False) * 255).round()
        assert np.abs(folds[fold][row] - expected[0].numpy()).max() <= 1
    else:
        np.testing.assert_allclose(folds[fold][row], probs[0].numpy(), atol=1e-5)

    off = run_infer(tiny_cache, trained, model, tta=("none",), fold_test=False)
    assert not list(off.glob("test_fold*")) and np.abs(read("test") - np.mean(folds, 0)).max() <= tolerance


@pytest.mark.parametrize("model", ["seg1", "classifier"])
def test_fold_models_in_turn_write_the_same_bits_as_all_at_once(tiny_cache, trained, model) -> None:
    """infer.fold_models: one (each fold model on the device in turn, over 64 test images at a time,
    with batches of 4 so a chunk spans several batches and the 6 test images end mid-chunk) writes
    exactly what all of them at once write: the test mean, each fold's test maps, the OOF maps."""

    def outputs(out) -> dict:
        if model == "classifier":
            return {f: pd.read_csv(out / f"{f}.csv") for f in ("oof", "test", "test_fold0", "test_fold2")}
        return {f: load_maps(out, f) for f in ("oof", "test", "test_fold0", "test_fold2")}

    together = outputs(run_infer(tiny_cache, trained, model, fold_models="all", batch_size=4))
    in_turn = outputs(run_infer(tiny_cache, trained, model, fold_models="one", batch_size=4))
    for name, expected in together.items():
        if model == "classifier":
            pd.testing.assert_frame_equal(in_turn[name], expected)
        else:
            np.testing.assert_array_equal(in_turn[name], expected, err_msg=name)


def test_auto_keeps_every_fold_model_on_a_cpu() -> None:
    cfg = load_params(REPO / "params.yaml").infer
    assert cfg.fold_models == "auto"
    assert not infer._one_at_a_time(cfg, [torch.nn.Linear(4, 4)], torch.device("cpu"))
    assert infer._one_at_a_time(dataclasses.replace(cfg, fold_models="one"), [], torch.device("cpu"))


def with_nodata(folder, out):
    """A copy of the cache at `folder` as preprocess writes it with data.nodata: a no-data corner
    (bigger on some images, none on others) in valid.npy / valid_score.npy, truth cleared under it."""
    import json
    import shutil

    shutil.copytree(folder, out)
    meta = json.loads((out / "train/meta.json").read_text())
    for part in ("train", "test"):
        images = np.load(out / part / "images.npy", mmap_mode="r")
        n, h, w = images.shape[:3]
        valid, score = np.ones((n, h, w), np.uint8), np.ones((n, 32, 48), np.uint8)
        for i in range(n):
            valid[i, : (i % 3) * 8, : (i % 3) * 16] = 0
            score[i, : (i % 3) * 8, : (i % 3) * 12] = 0
        np.save(out / part / "valid.npy", valid), np.save(out / part / "valid_score.npy", score)
        if part == "train":
            truth = np.load(out / "train/truth.npy")
            np.save(out / "train/truth.npy", truth * score)
            meta["arrays"] |= {"train_valid": list(valid.shape), "train_valid_score": list(score.shape)}
    (out / "train/meta.json").write_text(json.dumps(meta))
    return out


def test_no_data_pixels_are_0_in_every_map_and_in_neither_histogram(tiny_cache, trained, tmp_path) -> None:
    plain = run_infer(tiny_cache, trained, "seg1", tta=("none",))
    oof_plain, test_plain = load_maps(plain), load_maps(plain, "test")
    p = load_params(tiny_cache / "params.yaml")
    folder = with_nodata(tiny_cache / "artifacts/preprocessed", tmp_path / "cache")
    out = tmp_path / "pred"
    cfg = dataclasses.replace(p.infer, tta=("none",))
    infer.run("seg1", cfg, p.cv, trained / "models", folder, tiny_cache / "artifacts/folds.csv", out)
    cache = open_cache(folder)
    index = pd.read_csv(out / "oof.csv", dtype={"image_id": str})
    rows = np.array([list(cache.train["image_id"]).index(i) for i in index["image_id"]])
    oof, test, hist = load_maps(out), load_maps(out, "test"), np.load(out / "oof_hist.npy")
    valid = cache.valid("train")[rows][:, None].astype(bool).repeat(4, 1)
    np.testing.assert_array_equal(oof, np.where(valid, oof_plain, 0))  # the model's maps, 0 without data
    np.testing.assert_array_equal(test, test_plain * cache.valid("test")[:, None])
    truth = unpack_masks(cache.array("train_truth")[rows], 4) != 0
    for i in range(24):
        for k in range(4):  # by brute force: the pixels with data alone
            assert (hist[i, k, 0] == np.bincount(oof[i, k][valid[i, k]], minlength=256)).all()
            assert (hist[i, k, 1] == np.bincount(oof[i, k][valid[i, k] & truth[i, k]], minlength=256)).all()
    assert hist[:, 0, 0].sum(1).tolist() == valid[:, 0].sum((1, 2)).tolist() and not valid.all()


@pytest.mark.parametrize("model", ["seg1", "classifier"])
def test_excluded_images_are_predicted_like_test_images(tiny_cache, trained, tmp_path, model) -> None:
    """data.exclude: the excluded training images get no OOF row but an excluded split, the mean of
    every fold model (by hand for one image: each fold model run alone, averaged) and, with
    infer.fold_test, excluded_fold<k>; the test split is bit for bit the same. Without excluded
    images (no column, or all 0) infer writes no excluded file."""
    cache = open_cache(tiny_cache / "artifacts/preprocessed")
    table = pd.read_csv(tiny_cache / "artifacts/folds.csv", dtype={"image_id": str})
    rows = [1, 4, 9, 17]  # cache rows; every fold keeps images
    out_ids = list(cache.train["image_id"].to_numpy()[rows])
    table.assign(excluded=table["image_id"].isin(out_ids).astype(int)).to_csv(tmp_path / "folds.csv", index=False)
    p = load_params(tiny_cache / "params.yaml")
    cfg = dataclasses.replace(p.infer, tta=("none",))
    out = tmp_path / "pred"
    infer.run(model, cfg, p.cv, trained / "models", cache.folder, tmp_path / "folds.csv", out)
    plain = run_infer(tiny_cache, trained, model, tta=("none",))
    names = ["excluded", *(f"excluded_fold{k}" for k in (0, 1, 2))]
    for name in names:
        assert list(pd.read_csv(out / f"{name}.csv", dtype={"image_id": str})["image_id"]) == out_ids
    oof = pd.read_csv(out / "oof.csv", dtype={"image_id": str})
    assert len(oof) == 20 and not set(oof["image_id"]) & set(out_ids)
    read = (lambda f, s: load_maps(f, s).astype(float)) if model == "seg1" else (
        lambda f, s: pd.read_csv(f / f"{s}.csv")[list(CLASSES)].to_numpy()
    )  # fmt: skip
    for split in ("test", "test_fold0", "test_fold2"):
        np.testing.assert_array_equal(read(out, split), read(plain, split))

    j = 2  # the excluded image at cache row 9, by hand: each fold model alone, then their mean
    each = []
    for k in (0, 1, 2):
        net, settings = load_fold_net(trained / "models" / model / f"fold{k}", torch.device("cpu"))
        mean, std = (torch.tensor(settings["normalization"][n]).view(1, 3, 1, 1) for n in ("mean", "std"))
        x = torch.from_numpy(cache.array("train_images")[rows[j]].copy()).permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            each.append(torch.sigmoid(net((x - mean) / std)))
    tolerance = 1.0 if model == "seg1" else 1e-5  # uint8 maps: rounded once
    if model == "seg1":
        each = [(F.interpolate(e, size=(32, 48), mode="bilinear", align_corners=False) * 255) for e in each]
    final = (lambda t: t.round().numpy()) if model == "seg1" else (lambda t: t.numpy())
    assert np.abs(read(out, "excluded")[j] - final(torch.stack(each).mean(0)[0])).max() <= tolerance
    for k in (0, 1, 2):
        assert np.abs(read(out, f"excluded_fold{k}")[j] - final(each[k][0])).max() <= tolerance
    assert (each[0] - each[1]).abs().max().item() > 2 * tolerance  # the fold models differ: the mean is not any one
    assert not list(plain.glob("excluded*"))

    none = tmp_path / "none"
    table.assign(excluded=0).to_csv(tmp_path / "folds0.csv", index=False)
    infer.run(model, dataclasses.replace(cfg, fold_test=False), p.cv, trained / "models", cache.folder,
              tmp_path / "folds0.csv", none)  # fmt: skip
    assert not list(none.glob("excluded*")) and not list(none.glob("test_fold*"))
    np.testing.assert_array_equal(read(none, "test"), read(plain, "test"))
