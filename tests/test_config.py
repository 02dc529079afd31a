import dataclasses
import importlib

import pytest
import yaml
from helpers import REPO

from cloudcli.config import FoldConfig, Params, build, load_params, read_yaml
from cloudcli.errors import ConfigError


def write(tmp_path, params: dict):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_repository_params_load() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.data.raw_size == (1400, 2100) and params.data.score_size == (350, 525)
    assert params.data.classes == ("Fish", "Flower", "Gravel", "Sugar")  # dvc.yaml's plots read the list
    assert isinstance(params.fold, FoldConfig)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.fold.seed = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: p["fold"].update(n_split=5), r"unknown key 'fold.n_split'; did you mean 'fold.n_splits'\?"),
        (lambda p: p.update(folds={}), r"unknown key 'folds'; did you mean 'fold'"),
        (lambda p: p["fold"].pop("seed"), r"missing key 'fold.seed'"),
        (lambda p: p["preprocess"].update(workers="two"), r"preprocess.workers must be an integer, got 'two'"),
        (lambda p: p["preprocess"].update(workers=True), r"preprocess.workers must be an integer"),
        (lambda p: p["data"].update(raw_size=[1400]), r"data.raw_size must be a list of 2 values"),
        (lambda p: p["data"].update(raw_size=[1400, "x"]), r"data.raw_size\[1\] must be an integer"),
        (lambda p: p["data"].update(raw=3), r"data.raw must be a string"),
        (
            lambda p: p["data"].update(classes=["Fish", "Sugar"]),
            r"data.classes must be \['Fish', 'Flower', 'Gravel', 'Sugar'\] \(or null\) for kaggle_clouds, got",
        ),
        (
            lambda p: p["preprocess"].update(cache_size=[100, 288]),
            r"preprocess.cache_size must be positive multiples of 32",
        ),
        (lambda p: p["fold"].update(n_splits=1), r"fold.n_splits must be >= 2, got 1"),
        (
            lambda p: p["fold"].update(stratify=["location", "coverage"], group="location"),
            r"fold.stratify lists 'location', which is fold.group: .* remove it from fold.stratify",
        ),
        (lambda p: p["fold"].update(group=["location"]), r"fold.group must be a string"),
        (lambda p: p["pseudo"].update(models=[]), r"pseudo.models must name at least one model"),
        (lambda p: p.update(fold=[1, 2]), r"fold. must be a mapping|fold must be a mapping"),
        (
            lambda p: p["augment"].update(transpose=0.5),
            r"augment.transpose needs square inputs, seg1 trains at 64x96; set it to 0.0",
        ),
        (
            lambda p: (
                p["augment"].update(rotate90=0.5),
                p["preprocess"].update(cache_size=[64, 64]),
                p["models"]["seg2"]["train"].update(input_size=[64, 96]),
            ),
            r"augment.rotate90 needs square inputs, seg2 trains at 64x96",
        ),
        (lambda p: p["augment"].update(rotate90=1.5), r"augment.rotate90 must be a probability in \[0, 1\], got 1.5"),
    ],
)
def test_bad_params_name_the_key(tmp_path, change, message: str) -> None:
    params = repo_params()
    change(params)
    path = write(tmp_path, params)
    with pytest.raises(ConfigError, match=message) as info:
        load_params(path)
    assert str(info.value).startswith(str(path))


def test_float_written_as_string_gets_a_hint() -> None:
    @dataclasses.dataclass(frozen=True)
    class Train:
        lr: float

    assert build(Train, {"lr": 1}, "train.").lr == 1.0  # an int is a fine float
    with pytest.raises(ConfigError, match=r"train.lr must be a number, got '5e-4'.*write 5.0e-4"):
        build(Train, {"lr": "5e-4"}, "train.")


def test_missing_file_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("fold: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_a_key_written_twice_names_the_key_and_its_lines(tmp_path) -> None:
    text = (REPO / "params.yaml").read_text()
    lines = text.splitlines(keepends=True)
    first = next(i for i, line in enumerate(lines) if line.startswith("  lr: ")) + 1
    path = tmp_path / "params.yaml"
    path.write_text(text.replace("  lr: ", "  lr: 3.0e-4\n  lr: ", 1))  # yaml.safe_load keeps the second
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert str(info.value) == (
        f"{path}: line {first + 1}: key 'lr' is written twice in one mapping (first on line {first}); "
        "YAML would keep only the last: delete one"
    )
    path.write_text("a: &x {b: 1}\nc:\n  <<: *x\n  b: 2\n")  # a merge key may be overridden
    assert read_yaml(path.read_text()) == {"a": {"b": 1}, "c": {"b": 2}}


def test_dvc_stages_declare_exactly_the_sections_they_read() -> None:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    same_as = {"train_pl": "train", "infer_pl": "infer"}  # the pseudo-label models run the same commands
    for name, stage in stages.items():
        module = importlib.import_module(f"cloudcli.stages.{same_as.get(name, name)}")
        expected = module.PARAMS
        stage = stage.get("do", stage)  # foreach stages
        declared = tuple(p.replace("${item.model}", "{model}").replace("${key}", "<round>") for p in stage["params"])
        assert declared == expected, name
        assert {p.split(".")[0] for p in expected} <= {f.name for f in dataclasses.fields(Params)}


def test_model_overrides_apply_on_the_shared_defaults() -> None:
    from cloudcli.config import resolve_model

    params = repo_params()
    params["models"]["seg2"]["network"] = {"encoder": "densenet121"}
    params["models"]["seg2"]["train"] = {"lr": 1.0e-4, "input_size": [128, 192]}
    path = REPO / "tests" / ".override.yaml"
    try:
        path.write_text(yaml.safe_dump(params))
        p = load_params(path)
    finally:
        path.unlink()
    seg2 = resolve_model("seg2", p.network, p.train, p.models)
    seg1 = resolve_model("seg1", p.network, p.train, p.models)
    assert seg2.network.encoder == "densenet121" and seg2.train.lr == 1e-4 and seg2.train.input_size == (128, 192)
    assert seg1.network.encoder == p.network.encoder and seg1.train.lr == p.train.lr  # untouched


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda p: p["models"]["seg2"].update(train={"lrr": 1.0}),
            r"unknown key 'models.seg2.train.lrr'; did you mean 'models.seg2.train.lr'",
        ),
        (lambda p: p["models"]["seg2"].update(network={"encoder": 3}), r"models.seg2.network.encoder must be a string"),
        (lambda p: p["models"]["seg2"].update(train={"epochs": 0}), r"models.seg2: train.epochs must be >= 1"),
        (
            lambda p: p["models"]["seg1"].update(loss={"dice_poss": 1.0}),
            r"models.seg1.loss has unknown loss 'dice_poss'",
        ),
        (
            lambda p: p["models"]["classifier"].update(loss={"dice": 1.0}),
            r"unknown loss 'dice' for role classifier; choose from bce, bce_balanced",
        ),
        (
            lambda p: p["models"]["classifier"].update(role="cls"),
            r"models.classifier.role must be one of 'seg1', 'seg2', 'classifier'",
        ),
        (lambda p: p["cv"].update(models=["seg1", "seg3"]), r"unknown model 'seg3'.*did you mean 'seg\d'"),
        (lambda p: p["cv"].update(folds=[0, 5]), r"cv.folds must be fold numbers 0..2 \(fold.n_splits\), got \[0, 5\]"),
        (lambda p: p["tune"].update(seg1="classifier"), r"tune.seg1 must be a segmentation model listed in cv.models"),
        (lambda p: p["tune"].update(shape="classifier"), r"tune.shape must be ensemble, a segmentation model"),
        (
            lambda p: p["ensemble"].update(members=["seg2", "classifier"]),
            r"ensemble.members 'classifier' is not a segmentation model",
        ),
        (lambda p: p["ensemble"].update(min_votes=4), r"ensemble.min_votes must be in 1..3"),
        (lambda p: p["ensemble"].update(vote="mean", weights=[1.0]), r"ensemble.weights must give 3 weights"),
        (lambda p: p["ensemble"].update(weights=[1.0, 2.0]), r"ensemble.weights applies to vote: mean only"),
        (
            lambda p: p["tune"].update(classifier=None, class_score="mean"),
            r"tune.class_score mean needs tune.classifier",
        ),
        (
            lambda p: p["tune"].update(classifier="seg2"),
            r"tune.classifier must be a classifier listed in cv.models, a segmentation model .* or null",
        ),
        (
            lambda p: p["pseudo"].update(models=["seg2"]),
            r"pseudo.models 'seg2' is also in cv.models; give the pseudo-label variant its own name",
        ),
        (lambda p: p["pseudo"].update(models=["nope"]), r"unknown model 'nope'"),
        (
            lambda p: p["pseudo"].update(shape=["seg2_pl"]),
            r"pseudo.shape 'seg2_pl' is not a segmentation model of cv.models .*pseudo labels come from base models",
        ),
        (lambda p: p["pseudo"].update(seg1="classifier"), r"pseudo.seg1 must be a segmentation model of cv.models"),
        (
            lambda p: p["pseudo"].update(classifier="seg1"),
            r"pseudo.classifier must be a classifier listed in cv.models",
        ),
        (
            lambda p: p["pseudo"].update(classifier=None),
            r"pseudo.rule classifier needs pseudo.classifier; name one, or use rule: pixels",
        ),
        (lambda p: p["pseudo"].update(low=0.8), r"pseudo.low and pseudo.high must satisfy 0 <= low <= high <= 1"),
        (lambda p: p["pseudo"].update(pixel_high=1.5), r"pseudo.pixel_low and pseudo.pixel_high must satisfy"),
        (lambda p: p["pseudo"].update(min_share=1.0), r"pseudo.min_share must be in \[0, 1\), got 1.0"),
        (lambda p: p["pseudo"].update(rule="both"), r"pseudo.rule must be one of 'classifier', 'pixels'"),
        (
            lambda p: p["pseudo"].update(sources=["test", "excluded"]),
            r"pseudo.sources lists excluded, but data.exclude is null: .* or set pseudo.sources: \[test\]",
        ),
        (lambda p: p["pseudo"].update(sources=[]), r"pseudo.sources must list at least one value, each once"),
        (lambda p: p["pseudo"].update(sources=["test", "test"]), r"pseudo.sources must list at least one value"),
        (lambda p: p["pseudo"].update(sources=["train"]), r"pseudo.sources\[0\] must be one of 'test', 'excluded'"),
        (lambda p: p["pseudo_rounds"]["r1"].update(after="r2"), r"pseudo_rounds.r1.after must be base or an earlier"),
        (
            lambda p: p["pseudo_rounds"].update(base={"after": "base", "relabel": {}}),
            r"pseudo_rounds.base a round's name is a folder name",
        ),
        (
            lambda p: p["pseudo_rounds"].update(seg2={"after": "base", "relabel": {}}),
            r"pseudo_rounds.seg2 a round's name is a folder name: .*not a model's name",
        ),
        (lambda p: p["pseudo_rounds"].update({"R 2": {"after": "r1", "relabel": {}}}), r"pseudo_rounds.R 2 a round's"),
        (
            lambda p: p["pseudo_rounds"]["r1"].update(relabel={"seg2": "seg2_pl"}),
            r"pseudo_rounds.r1.relabel needs after: <an earlier round>",
        ),
        (lambda p: p["pseudo_rounds"]["r1"].update(rounds=2), r"unknown key 'pseudo_rounds.r1.rounds'"),
        (lambda p: p["pseudo"].update(models=[]), r"pseudo.models must name at least one model to train in each round"),
        (
            lambda p: p["ensemble"].update(members=["seg2", "seg2_pl@r2"]),
            r"ensemble.members 'seg2_pl@r2' is not a segmentation model of cv.models or <pseudo model>@<round> "
            r"\(seg1, seg2, seg2_unet, seg2_pl@r1\)",
        ),
        (
            lambda p: p["ensemble"].update(members=["seg2", "seg2_pl"]),
            r"ensemble.members 'seg2_pl' is not a segmentation model",
        ),
        (
            lambda p: p["report"].update(models=["ensemble", "classifier"]),
            r"report.models 'classifier' is not ensemble or a segm",
        ),
        (lambda p: p["report"].update(models=["seg2", "seg2"]), r"report.models must be distinct"),
        (lambda p: p["report"].update(worst=-1), r"report.worst must be >= 0, got -1"),
        (lambda p: p["report"].update(tile=[16, 300]), r"report.tile must be at least \[32, 32\] pixels"),
        (
            lambda p: p["pseudo_rounds"].update(r2={"after": "r1", "relabel": {}}),
            r"pseudo_rounds.r2.relabel is empty: with after: r1 it would keep and label the same images",
        ),
        (
            lambda p: p["pseudo_rounds"].update(r2={"after": "r1", "relabel": {"seg2_unet": "seg2_pl", "tune": "x"}}),
            r"pseudo_rounds.r2.relabel.tune 'tune' does not make the labels; relabel pseudo.seg1, pseudo.shape or",
        ),
        (
            lambda p: p["pseudo_rounds"].update(r2={"after": "r1", "relabel": {"classifier": "seg2_pl"}}),
            r"pseudo_rounds.r2.relabel.classifier must name a classifier of pseudo.models \(seg2_pl\), got 'seg2_pl'",
        ),
        (
            lambda p: p["pseudo_rounds"].update(r2={"after": "r1", "relabel": {"seg1": "seg2"}}),
            r"pseudo_rounds.r2.relabel.seg1 must name a segmentation model of pseudo.models \(seg2_pl\), got 'seg2'",
        ),
        (
            lambda p: p["ensemble"].update(members=["seg2", "classifier"]),
            r"ensemble.members 'classifier' is not a segmentation model of cv.models or <pseudo model>@<round>",
        ),
        (lambda p: p["train"].update(lr="1e-3"), r"train.lr must be a number, got '1e-3'.*write 5.0e-4"),
        (
            lambda p: p["train"].update(optimizer="adamax"),
            r"train.optimizer must be one of 'adam', 'adamw', 'radam', 'sgd'",
        ),
    ],
)
def test_bad_model_params_name_the_key(tmp_path, change, message: str) -> None:
    params = repo_params()
    change(params)
    with pytest.raises(ConfigError, match=message):
        load_params(write(tmp_path, params))


def test_third_place_preset_loads_and_names_real_encoders(tmp_path) -> None:
    import segmentation_models_pytorch as smp

    from cloudcli.config.presets import params_text

    (tmp_path / "params.yaml").write_text(params_text("3rd_place"))
    params = load_params(tmp_path / "params.yaml")
    encoders = {name: resolve(params, name).network.encoder for name in (*params.cv.models, *params.pseudo.models)}
    assert encoders == {
        "seg1": "densenet121",
        "seg2_b5_unet": "efficientnet-b5",
        "seg2_irv2_fpn": "inceptionresnetv2",
        "seg2_b7_unet": "efficientnet-b7",
        "seg2_b7_fpn": "efficientnet-b7",
        "seg2_b7_fpn_pl": "efficientnet-b7",
        "classifier": "efficientnet-b1",
    }
    assert set(encoders.values()) <= set(smp.encoders.get_encoder_names())
    assert params.network.encoder_weights == "imagenet" and params.infer.tta == ("none", "hflip", "vflip")
    assert params.ensemble.members[-1] == "seg2_b7_fpn_pl@r1" and params.pseudo.models == ("seg2_b7_fpn_pl",)


def resolve(params, name):
    from cloudcli.config import resolve_model

    return resolve_model(name, params.network, params.train, params.models)


def test_pseudo_labels_switch_off_with_no_rounds(tmp_path) -> None:
    params = repo_params()
    params["pseudo_rounds"] = {}
    with pytest.raises(ConfigError, match=r"ensemble.members 'seg2_pl@r1' is not .* \(seg1, seg2, seg2_unet\)"):
        load_params(write(tmp_path, params))
    params["ensemble"]["members"] = ["seg2", "seg2_unet"]
    params["pseudo"]["models"] = []  # nothing to train when no round runs
    loaded = load_params(write(tmp_path, params))
    assert loaded.pseudo_rounds == {} and loaded.ensemble.members == ("seg2", "seg2_unet")


def test_excluded_images_are_candidates_with_data_exclude(tmp_path) -> None:
    params = repo_params()
    assert load_params(REPO / "params.yaml").pseudo.sources == ("test",)
    params["pseudo"]["sources"] = ["test", "excluded"]
    params["data"]["exclude"] = "labels/exclude.txt"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert load_params(tmp_path / "params.yaml").pseudo.sources == ("test", "excluded")
    del params["pseudo"]["sources"]  # params written before the key: test images only
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert load_params(tmp_path / "params.yaml").pseudo.sources == ("test",)


def test_rounds_keep_their_order_and_relabel_after_an_earlier_round(tmp_path) -> None:
    params = repo_params()
    params["pseudo_rounds"]["r2"] = {"after": "r1", "relabel": {"seg2": "seg2_pl"}}
    params["ensemble"]["members"] = ["seg2", "seg2_unet", "seg2_pl@r2"]
    loaded = load_params(write(tmp_path, params))
    assert list(loaded.pseudo_rounds) == ["r1", "r2"]
    assert loaded.pseudo_rounds["r2"].after == "r1" and loaded.pseudo_rounds["r2"].relabel == {"seg2": "seg2_pl"}


def test_square_inputs_may_transpose_and_rotate(tmp_path) -> None:
    params = repo_params()
    params["preprocess"]["cache_size"] = [320, 320]
    params["augment"].update(transpose=0.5, rotate90=0.25)
    loaded = load_params(write(tmp_path, params))
    assert (loaded.augment.transpose, loaded.augment.rotate90) == (0.5, 0.25)


def augment(**probabilities):
    from cloudcli.config import AugmentConfig

    return AugmentConfig(**{"hflip": 0, "vflip": 0, "shift_scale_rotate": 0, "shift_limit": 0.1, "scale_limit": 0.1,
                            "rotate_limit": 10, "grid_distortion": 0, "brightness_contrast": 0, **probabilities})  # fmt: skip


def tta(*views):
    from cloudcli.config import InferConfig

    return InferConfig(tta=views, batch_size=1, device="cpu", precision="fp32", stack_tta=False, workers=0)


def test_a_tta_view_training_never_shows_is_warned_about() -> None:
    from cloudcli.config import tta_warnings

    (line,) = tta_warnings(augment(), tta("none", "transpose"))
    assert line.startswith("infer.tta: training never shows the transpose view") and "augment.transpose > 0" in line
    assert tta_warnings(augment(transpose=0.5), tta("none", "transpose")) == []


@pytest.mark.parametrize(
    ("probabilities", "unseen"),
    [
        ({}, ["hflip", "vflip", "hvflip", "transpose"]),
        ({"hflip": 0.5, "vflip": 0.5}, ["transpose"]),
        ({"hflip": 0.5}, ["vflip", "hvflip", "transpose"]),
        ({"rotate90": 0.5}, ["hflip", "vflip", "transpose"]),  # 180 degrees is hvflip
        ({"rotate90": 0.5, "hflip": 0.5}, []),  # D4: a flip and the quarter turns
        ({"transpose": 0.5, "rotate90": 0.5}, []),
        ({"hflip": 1.0}, ["none", "vflip", "hvflip", "transpose"]),  # always flipped: the plain view never comes
    ],
)
def test_views_training_shows(probabilities: dict, unseen: list) -> None:
    from cloudcli.config import tta_warnings

    views = ("none", "hflip", "vflip", "hvflip", "transpose")
    lines = tta_warnings(augment(**probabilities), tta(*views))
    assert [v for v in views if any(f" the {v} view " in line for line in lines)] == unseen
