"""Build a TensorRT engine from the exported ONNX model, or refuse clearly.

TensorRT ships only for machines with an NVIDIA GPU, so it is an optional extra
(``pip install 'tensorguard[gpu]'``). Everything TensorRT-specific is imported
inside the functions here; on a machine without TensorRT 10+ or without a CUDA
device the entry points raise :class:`TensorRTUnavailableError` listing every
missing requirement and how to provide it. They never write a placeholder engine.

The build uses the TensorRT 10 builder API: an explicit-batch network filled by the
ONNX parser, one optimization profile for the dynamic ``input_ids`` axes, FP16
kernels when requested and the platform has fast FP16, and
``build_serialized_network``. The serialized engine is deserialized once before it
is published, so a written engine is always loadable on the building GPU.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tensorguard.digest import sha256_file
from tensorguard.durable import atomic_directory
from tensorguard.errors import ConfigurationError
from tensorguard.optimize.errors import TensorRTBuildError, TensorRTUnavailableError
from tensorguard.optimize.onnx_export import INPUT_NAME

SUPPORTED_TENSORRT_MAJOR = 10
ENGINE_FILE_NAME = "model.engine"
DEFAULT_WORKSPACE_BYTES = 1 << 30
_INSTALL_HINT = "install the GPU extra with `pip install 'tensorguard[gpu]'`"


@dataclass(frozen=True)
class InputShapeProfile:
    """Smallest, typical and largest ``(batch, sequence)`` the engine must serve."""

    min_shape: tuple[int, int] = (1, 1)
    opt_shape: tuple[int, int] = (1, 128)
    max_shape: tuple[int, int] = (8, 512)

    def __post_init__(self) -> None:
        for axis in range(2):
            low, typical, high = (
                self.min_shape[axis],
                self.opt_shape[axis],
                self.max_shape[axis],
            )
            if not 1 <= low <= typical <= high:
                raise ConfigurationError(
                    f"shape profile axis {axis} must satisfy 1 <= min <= opt <= max, "
                    f"got {low}, {typical}, {high}"
                )


@dataclass(frozen=True)
class TensorRTEnvironment:
    """A usable TensorRT installation and the CUDA device it will build for."""

    tensorrt: Any
    version: str
    device_name: str
    compute_capability: tuple[int, int]


@dataclass(frozen=True)
class TensorRTBuildResult:
    """A published engine and the facts that make it reproducible to a reader."""

    path: Path
    engine_path: Path
    size_bytes: int
    sha256: str
    tensorrt_version: str
    device_name: str
    compute_capability: str
    fp16_enabled: bool
    profile: InputShapeProfile
    build_seconds: float


def require_tensorrt() -> TensorRTEnvironment:
    """Return the TensorRT module and CUDA device, or refuse with a remediation.

    Checks that ``tensorrt`` imports, that its major version is 10 (the 10.x
    builder API; TensorRT 11 removed the weakly typed FP16 flag), and that PyTorch
    sees a CUDA device. All failures are reported together.
    """
    problems: list[str] = []
    tensorrt: Any = None
    version = "absent"
    try:
        tensorrt = importlib.import_module("tensorrt")
    except ImportError as exc:
        problems.append(f"the `tensorrt` package is not importable ({exc}); {_INSTALL_HINT}")
    else:
        version = str(getattr(tensorrt, "__version__", "unknown"))
        if _major_version(version) != SUPPORTED_TENSORRT_MAJOR:
            problems.append(
                f"TensorRT {version} is installed but this build needs TensorRT "
                f"{SUPPORTED_TENSORRT_MAJOR}.x (10+ builder API; 11 removed the FP16 builder "
                f"flag and platform_has_fast_fp16 it uses); {_INSTALL_HINT}, which pins "
                "tensorrt>=10,<11"
            )
    if not torch.cuda.is_available() or torch.cuda.device_count() < 1:
        problems.append(
            "no CUDA device is visible: TensorRT engines are built on an NVIDIA GPU, which "
            "needs the NVIDIA driver and a CUDA-enabled PyTorch build; run the `gpu_export` "
            "job on such a machine"
        )
    if problems:
        raise TensorRTUnavailableError(
            "cannot build a TensorRT engine here: " + "; ".join(problems)
        )
    device = torch.cuda.current_device()
    return TensorRTEnvironment(
        tensorrt=tensorrt,
        version=version,
        device_name=torch.cuda.get_device_name(device),
        compute_capability=torch.cuda.get_device_capability(device),
    )


def build_tensorrt_engine(
    onnx_path: Path,
    destination: Path,
    *,
    fp16: bool = True,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    profile: InputShapeProfile | None = None,
) -> TensorRTBuildResult:
    """Build ``destination/model.engine`` from ``onnx_path`` (external data beside it).

    Raises :class:`TensorRTUnavailableError` when TensorRT 10+ or a CUDA device is
    missing, :class:`TensorRTBuildError` when parsing or building fails.
    """
    environment = require_tensorrt()
    if not onnx_path.is_file():
        raise TensorRTBuildError(f"ONNX model not found: {onnx_path}; run the ONNX export first")
    shape_profile = profile or InputShapeProfile()
    trt = environment.tensorrt
    logger = trt.Logger(trt.Logger.WARNING)
    started = time.perf_counter()
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    _parse_onnx(trt, network, logger, onnx_path)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
    fp16_enabled = fp16 and bool(builder.platform_has_fast_fp16)
    if fp16_enabled:
        config.set_flag(trt.BuilderFlag.FP16)
    optimization_profile = builder.create_optimization_profile()
    optimization_profile.set_shape(
        INPUT_NAME, shape_profile.min_shape, shape_profile.opt_shape, shape_profile.max_shape
    )
    config.add_optimization_profile(optimization_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise TensorRTBuildError(
            f"TensorRT {environment.version} could not build an engine from {onnx_path}; "
            "see the TensorRT log above for the failing layer"
        )
    engine_bytes = bytes(serialized)
    if trt.Runtime(logger).deserialize_cuda_engine(engine_bytes) is None:
        raise TensorRTBuildError("the freshly built engine does not deserialize on this GPU")
    build_seconds = time.perf_counter() - started
    with atomic_directory(destination) as staging:
        (staging / ENGINE_FILE_NAME).write_bytes(engine_bytes)
    engine_path = destination / ENGINE_FILE_NAME
    major, minor = environment.compute_capability
    return TensorRTBuildResult(
        path=destination,
        engine_path=engine_path,
        size_bytes=engine_path.stat().st_size,
        sha256=sha256_file(engine_path),
        tensorrt_version=environment.version,
        device_name=environment.device_name,
        compute_capability=f"{major}.{minor}",
        fp16_enabled=fp16_enabled,
        profile=shape_profile,
        build_seconds=build_seconds,
    )


def _parse_onnx(trt: Any, network: Any, logger: Any, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = [str(parser.get_error(index)) for index in range(parser.num_errors)]
    raise TensorRTBuildError(
        f"the TensorRT ONNX parser rejected {onnx_path}: " + "; ".join(errors or ["no detail"])
    )


def _major_version(version: str) -> int:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else 0
