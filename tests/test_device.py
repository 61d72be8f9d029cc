"""Device selection and the mixed-precision / runtime policy (hierloc.utils.device), run on the CPU with CUDA mocked."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hierloc.extraction import GlobalExtractor
from hierloc.models import build_model
from hierloc.utils import device as device_policy
from hierloc.utils.device import (
    autocast,
    precision_dtype,
    resolve_device,
    resolve_precision,
    resolve_runtime,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_policy, "_mps_available", lambda: False)


@pytest.fixture
def two_cuda_devices(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_auto_is_the_cpu_without_cuda(no_cuda):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_is_cuda_when_present(two_cuda_devices):
    assert resolve_device("auto") == torch.device("cuda")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device(" CUDA ") == torch.device("cuda")


def test_absent_or_unknown_devices_are_clear_errors(no_cuda):
    with pytest.raises(RuntimeError, match="no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(RuntimeError, match="MPS"):
        resolve_device("mps")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("gpu")


def test_cuda_index_is_checked_against_the_device_count(two_cuda_devices):
    with pytest.raises(RuntimeError, match="2 CUDA devices"):
        resolve_device("cuda:2")


def test_mps_when_available(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_policy, "_mps_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    assert resolve_device("auto") == torch.device("cpu")  # MPS only when asked for


def test_auto_precision_per_device(monkeypatch):
    assert resolve_precision("auto", torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("mps")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "fp16"
    assert resolve_precision("bf16", torch.device("cpu")) == "bf16"
    with pytest.raises(ValueError, match="unknown precision"):
        resolve_precision("int4", torch.device("cpu"))


def test_bf16_on_cuda_needs_a_card_that_has_it(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *args: "Tesla T4")
    with pytest.raises(RuntimeError, match="Tesla T4"):
        resolve_precision("bf16", torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("bf16", torch.device("cuda")) == "bf16"


def test_autocast_context_per_precision():
    assert precision_dtype("bf16") is torch.bfloat16 and precision_dtype("fp16") is torch.float16
    layer = torch.nn.Linear(4, 4)
    x = torch.ones(1, 4)
    with autocast(torch.device("cpu"), "fp32"):
        assert layer(x).dtype == torch.float32
    with autocast(torch.device("cpu"), "bf16"):
        assert layer(x).dtype == torch.bfloat16


def test_runtime_policy():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_runtime("auto", cpu, "fp32") == device_policy.CPU_DEFAULT_RUNTIME
    assert resolve_runtime("auto", cuda, "fp16") == "torch"
    assert resolve_runtime("auto", cpu, "bf16") == "torch"
    assert resolve_runtime("onnxruntime", cpu, "fp32") == "onnxruntime"
    with pytest.raises(ValueError, match="fp32 on the CPU only"):
        resolve_runtime("onnxruntime", cuda, "fp32")
    with pytest.raises(ValueError, match="fp32 on the CPU only"):
        resolve_runtime("onnxruntime", cpu, "bf16")
    with pytest.raises(ValueError, match="unknown runtime"):
        resolve_runtime("tensorrt", cpu, "fp32")


def test_absent_runtime_package_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(device_policy, "runtime_available", lambda runtime: runtime == "torch")
    with pytest.raises(RuntimeError, match="pip install openvino"):
        resolve_runtime("openvino", torch.device("cpu"), "fp32")
    assert resolve_runtime("auto", torch.device("cpu"), "fp32") == "torch"


def test_extractor_refuses_cuda_without_it_and_follows_the_policy(no_cuda):
    model = build_model("mobilenetvlad", endpoint="layer_4", num_clusters=4, reduction_dim=8)
    with pytest.raises(RuntimeError, match="no CUDA device"):
        GlobalExtractor(model, device="cuda")
    extractor = GlobalExtractor(model, device="auto")
    assert extractor.device.type == "cpu" and extractor.precision == "fp32"
    assert GlobalExtractor(model, device="cpu", fast=False).runtime == "torch"  # the eager reference


def test_onnxruntime_engine_gives_the_eager_descriptors():
    model = build_model("mobilenetvlad", endpoint="layer_6", num_clusters=4, reduction_dim=16).eval()
    generator = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.normal_(0, 0.1, generator=generator)
            module.running_var.uniform_(0.5, 2.0, generator=generator)
    engine = GlobalExtractor(model, device="cpu", runtime="onnxruntime", threads=1)
    eager = GlobalExtractor(model, device="cpu", fast=False)
    rng = np.random.default_rng(0)
    for shape in ((48, 64), (47, 65, 3)):  # odd sizes: TF-SAME padding fused into the ONNX convolutions
        image = rng.integers(0, 256, shape, dtype=np.uint8)
        np.testing.assert_allclose(engine.describe(image), eager.describe(image), atol=1e-5)
    assert engine.runtime == "onnxruntime"
    # Changed weights: reset() drops the exported engine, the next run exports the new network.
    with torch.no_grad():
        model.aggregation.reduction.weight.mul_(-1)
    engine.reset()
    image = rng.integers(0, 256, (48, 64), dtype=np.uint8)
    np.testing.assert_allclose(engine.describe(image), eager.describe(image), atol=1e-5)


def test_openvino_engine_gives_the_eager_descriptors_when_installed():
    pytest.importorskip("openvino")
    model = build_model("mobilenetvlad", endpoint="layer_4", num_clusters=4, reduction_dim=8).eval()
    engine = GlobalExtractor(model, device="cpu", runtime="openvino", threads=1)
    eager = GlobalExtractor(model, device="cpu", fast=False)
    image = np.random.default_rng(1).integers(0, 256, (45, 61), dtype=np.uint8)
    np.testing.assert_allclose(engine.describe(image), eager.describe(image), atol=1e-5)
    assert engine.runtime == "openvino"
