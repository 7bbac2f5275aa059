"""TensorRT: refusal paths on machines without TensorRT 10+ or a CUDA device.

TensorRT cannot be installed on the CI machines, so the build itself is not run
here; these tests pin down that every missing requirement is reported with its
remediation and that nothing is written when the build is refused.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest
import torch

from tensorguard.errors import ConfigurationError
from tensorguard.optimize import (
    InputShapeProfile,
    TensorRTUnavailableError,
    build_tensorrt_engine,
    require_tensorrt,
)


def _fake_tensorrt(version: str) -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__version__ = version  # type: ignore[attr-defined]
    return module


def test_missing_tensorrt_is_refused_with_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    onnx_path = tmp_path / "model.onnx"
    onnx_path.write_bytes(b"exported elsewhere")
    with pytest.raises(TensorRTUnavailableError) as caught:
        build_tensorrt_engine(onnx_path, tmp_path / "engine")
    message = str(caught.value)
    assert "`tensorrt` package is not importable" in message
    assert "pip install 'tensorguard[gpu]'" in message
    assert not (tmp_path / "engine").exists()


@pytest.mark.parametrize("version", ["8.6.1", "11.4.1"])
def test_tensorrt_other_than_10_is_refused(monkeypatch: pytest.MonkeyPatch, version: str) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt(version))
    with pytest.raises(TensorRTUnavailableError) as caught:
        require_tensorrt()
    assert f"TensorRT {version} is installed but this build needs TensorRT 10.x" in str(
        caught.value
    )
    assert "tensorrt>=10,<11" in str(caught.value)


def test_missing_cuda_device_is_refused_even_with_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", _fake_tensorrt("10.3.0"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRTUnavailableError) as caught:
        require_tensorrt()
    message = str(caught.value)
    assert "no CUDA device is visible" in message
    assert "NVIDIA driver" in message
    assert "not importable" not in message


def test_all_missing_requirements_are_reported_together(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TensorRTUnavailableError) as caught:
        require_tensorrt()
    assert "not importable" in str(caught.value)
    assert "no CUDA device" in str(caught.value)


def test_shape_profile_must_be_ordered() -> None:
    with pytest.raises(ConfigurationError, match="1 <= min <= opt <= max"):
        InputShapeProfile(min_shape=(1, 64), opt_shape=(1, 32), max_shape=(1, 128))
