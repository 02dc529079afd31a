"""benchmarks/gpu.py: its CPU smoke run writes every number, and its FLOP count is exact."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import procs
import pytest
import torch
from helpers import REPO
from torch import nn

SCRIPT = REPO / "benchmarks/gpu.py"
MEASURED = {"images_per_s", "images_timed", "warmup_s", "peak_memory_bytes"}


@pytest.fixture(scope="module")
def gpu():
    """benchmarks/gpu.py as a module (its imports of timing.py and train_throughput.py resolve)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("benchmarks_gpu", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclass looks its module up there
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("benchmarks_gpu", None)
        sys.path.remove(str(SCRIPT.parent))


def conv_flops_by_hand(net: nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one forward + backward of `net` on `x` from the closed form of each convolution:
    forward 2 * Cin/groups * Cout * kh * kw * Hout * Wout * B (2 * weight.numel() per output pixel);
    backward the same again for the weight gradient, and again for the input gradient when the input
    needs one (not for the first convolution, which sees the image)."""
    total = 0

    def hook(module: nn.Conv2d, inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        forward = 2 * module.weight.numel() * out.shape[0] * out.shape[2] * out.shape[3]
        total += forward * (3 if inputs[0].requires_grad else 2)

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert not any(isinstance(m, nn.Linear | nn.ConvTranspose2d) for m in net.modules())  # none to count by hand
    try:
        net(x).sum().backward()
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.mark.parametrize(
    ("c_in", "c_out", "k", "h", "w", "b", "groups"),
    [(3, 8, 3, 10, 12, 2, 1), (16, 32, 1, 7, 5, 3, 1), (8, 8, 5, 9, 9, 1, 4)],
)
def test_count_flops_of_one_convolution_is_the_closed_form(gpu, c_in, c_out, k, h, w, b, groups) -> None:
    """Forward: 2 * Cin/groups * Cout * k * k * H * W * B ('same' padding: H, W kept). Forward and
    backward with an input that needs its gradient: three such products (output, input gradient,
    weight gradient); checked for groups == 1 only."""
    torch.manual_seed(0)
    conv = nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False)
    x = torch.randn(b, c_in, h, w)
    closed_form = 2 * c_in // groups * c_out * k * k * h * w * b
    with torch.no_grad():
        assert gpu.count_flops(lambda: conv(x)) == closed_form
    x.requires_grad_(True)
    if groups == 1:  # torch's counter overcounts grouped backward convolutions (see count_flops)
        assert gpu.count_flops(lambda: conv(x).sum().backward()) == 3 * closed_form


@pytest.mark.parametrize(
    ("name", "peak"),
    [("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A100 80GB PCIe", 312.0),
     ("NVIDIA L40S", 362.0), ("NVIDIA L4", 121.0), ("NVIDIA A10G", 70.0), ("NVIDIA GeForce RTX 4090", 165.0),
     ("NVIDIA H100 PCIe", None), ("NVIDIA H200 NVL", None), ("NVIDIA GeForce RTX 3090", None)],
)  # fmt: skip
def test_peak_table_matches_whole_device_names(gpu, name: str, peak: float | None) -> None:
    assert gpu.peak_for_name(name) == peak


def test_tiny_cpu_run_writes_every_number(gpu, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, SCRIPT, "--device", "cpu", "--tiny", "--out", tmp_path]
    result = procs.run(cmd, REPO, env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    r = json.loads((tmp_path / "gpu.json").read_text())
    assert set(r) == {"device", "settings", "flops", "peak", "loader", "train", "infer", "bound", "seconds"}
    assert r["device"]["type"] == "cpu" and {"name", "torch", "segmentation_models_pytorch"} <= set(r["device"])
    s = r["settings"]
    assert (s["arch"], s["encoder"], s["size"], s["batch"], s["workers"]) == ("FPN", "resnet18", [64, 96], 4, 0)
    assert r["peak"]["bf16_tflops"] is None and "--peak-tflops" in r["peak"]["source"]  # unknown on a CPU
    timed = [r["loader"], *(i for i in r["infer"])]
    for t in r["train"]:
        if t["compile"]:  # compiled on CUDA only
            assert t["skipped"] and "step" not in t
            continue
        assert t["autocast"] is None  # the CPU trains in fp32
        assert t["step"]["tflops"] > 0 and t["step"]["fraction_of_peak"] is None
        timed += [t["step"], t["loader_and_step"]]
    assert len(timed) == 1 + 5 + 2 * 2
    for m in timed:
        assert set(m) >= MEASURED and m["images_per_s"] > 0 and m["peak_memory_bytes"] is None
        assert m["images_timed"] == s["batch"] * s["timed_batches"]
    assert [(i["tta"], i["stacked"]) for i in r["infer"]] == [
        (["none"], False), (["none", "hflip"], False), (["none", "hflip"], True),
        (["none", "hflip", "vflip"], False), (["none", "hflip", "vflip"], True),
    ]  # fmt: skip
    assert r["bound"]["by"] in ("loader", "model step")
    assert "| part | setting | images/s |" in result.stdout and "| train step | fp32 |" in result.stdout
    assert f"bound by the {r['bound']['by']}" in result.stdout
    # The counted FLOPs are those of the benchmarked network, size and batch: the convolutions' closed form.
    assert r["flops"]["train_step"] > 0 and r["flops"]["per_image"] * s["batch"] == r["flops"]["train_step"]
    from cloudcli.config import NetworkConfig
    from cloudcli.models.factory import build_network

    torch.manual_seed(0)
    net = build_network("seg1", NetworkConfig("FPN", "resnet18", None, 0), 3, 4)
    by_hand = conv_flops_by_hand(net, torch.zeros(s["batch"], 3, *s["size"]))
    assert r["flops"]["train_step"] == pytest.approx(by_hand, rel=0.01)
