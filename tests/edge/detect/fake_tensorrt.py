"""Stand-ins for `tensorrt` and `pycuda.driver`, which cannot be installed on these machines.

They implement the slice of the documented TensorRT 10 / pycuda API that the backend and the
engine builder use, with the same call shapes and return conventions (None from a failed build
or deserialisation, integer device pointers, `execute_async_v3(stream_handle=...)`). The
"engine" runs the ONNX graph with ONNX Runtime, reading and writing the fake device memory, so
the backend's buffer handling is exercised for real. The real path runs in the `gpu` tests.
"""

from __future__ import annotations

import itertools
import json
import sys
import types
from typing import Any, ClassVar

import numpy as np
import onnx
import onnxruntime as ort

MAGIC = b"FAKETRT1"


# --- pycuda.driver ---------------------------------------------------------------------------
class CudaState:
    memory: ClassVar[dict[int, np.ndarray]] = {}
    handles = itertools.count(0x1000, 0x1000)
    capability = (8, 7)
    context_depth = 0
    contexts_alive = 0
    fail_init: str | None = None
    free_bytes: int | None = None  # None: unlimited
    fail_execute = False

    @classmethod
    def reset(cls) -> None:
        cls.free_bytes = None
        cls.fail_execute = False
        cls.memory = {}
        cls.capability = (8, 7)
        cls.context_depth = 0
        cls.contexts_alive = 0
        cls.fail_init = None


class CudaMemoryError(Exception):
    """pycuda raises its own MemoryError type when the device is full."""


class LaunchError(Exception):
    """Stands in for pycuda's LaunchError / a failed kernel."""


class DeviceAllocation:
    def __init__(self, nbytes: int) -> None:
        if CudaState.free_bytes is not None:
            if nbytes > CudaState.free_bytes:
                raise CudaMemoryError("cuMemAlloc failed: out of memory")
            CudaState.free_bytes -= nbytes
        self.handle = next(CudaState.handles)
        CudaState.memory[self.handle] = np.zeros(nbytes, dtype=np.uint8)

    def __int__(self) -> int:
        return self.handle

    def free(self) -> None:
        CudaState.memory.pop(self.handle, None)


class Context:
    def __init__(self) -> None:
        CudaState.contexts_alive += 1
        CudaState.context_depth += 1  # make_context pushes

    def push(self) -> None:
        CudaState.context_depth += 1

    def pop(self) -> None:
        CudaState.context_depth -= 1

    def detach(self) -> None:
        CudaState.contexts_alive -= 1


class Device:
    def __init__(self, index: int) -> None:
        self.index = index

    def compute_capability(self) -> tuple[int, int]:
        return CudaState.capability

    def make_context(self) -> Context:
        return Context()


class Stream:
    handle = 77

    def synchronize(self) -> None:
        pass


def _write(dest: Any, host: np.ndarray) -> None:
    raw = np.ascontiguousarray(host).view(np.uint8).ravel()
    CudaState.memory[int(dest)][: raw.size] = raw


def cuda_init() -> None:
    if CudaState.fail_init:
        raise RuntimeError(CudaState.fail_init)


def make_pycuda() -> tuple[types.ModuleType, types.ModuleType]:
    driver = types.ModuleType("pycuda.driver")
    driver.init = cuda_init  # type: ignore[attr-defined]
    driver.Device = Device  # type: ignore[attr-defined]
    driver.Stream = Stream  # type: ignore[attr-defined]
    driver.mem_alloc = DeviceAllocation  # type: ignore[attr-defined]
    driver.pagelocked_empty = lambda n, dtype: np.empty(n, dtype=dtype)  # type: ignore[attr-defined]
    driver.memcpy_htod = _write  # type: ignore[attr-defined]
    driver.memcpy_htod_async = lambda dest, host, stream=None: _write(dest, host)  # type: ignore[attr-defined]

    def memcpy_dtoh_async(host: np.ndarray, src: Any, stream: Any = None) -> None:
        raw = CudaState.memory[int(src)][: host.nbytes]
        host[...] = raw.view(host.dtype).reshape(host.shape)

    driver.memcpy_dtoh_async = memcpy_dtoh_async  # type: ignore[attr-defined]
    package = types.ModuleType("pycuda")
    package.driver = driver  # type: ignore[attr-defined]
    return package, driver


# --- tensorrt --------------------------------------------------------------------------------
class BuildStats:
    builds = 0
    calibration_batches = 0
    phases: ClassVar[list[tuple[str, int]]] = []
    profiles: ClassVar[list[dict[str, Any]]] = []
    fail_build = False

    @classmethod
    def reset(cls) -> None:
        cls.profiles = []
        cls.builds = 0
        cls.calibration_batches = 0
        cls.phases = []
        cls.fail_build = False


class Logger:
    WARNING = 2

    def __init__(self, severity: int = 2) -> None:
        self.severity = severity


class MemoryPoolType:
    WORKSPACE = "WORKSPACE"


class BuilderFlag:
    FP16 = "FP16"
    INT8 = "INT8"


class TensorIOMode:
    INPUT = "INPUT"
    OUTPUT = "OUTPUT"


class IInt8EntropyCalibrator2:
    def __init__(self) -> None:
        pass


class IProgressMonitor:
    def __init__(self) -> None:
        pass


class Network:
    def __init__(self) -> None:
        self.onnx: bytes | None = None


class OnnxParser:
    def __init__(self, network: Network, logger: Logger) -> None:
        self.network = network
        self.errors: list[str] = []

    def parse(self, data: bytes) -> bool:
        try:
            onnx.load_from_string(data)
        except Exception as exc:
            self.errors.append(f"In node -1: {type(exc).__name__}: cannot parse")
            return False
        self.network.onnx = data
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]


class OptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
        self.shapes[name] = (tuple(low), tuple(opt), tuple(high))


class BuilderConfig:
    def __init__(self) -> None:
        self.flags: set[str] = set()
        self.pools: dict[str, int] = {}
        self.int8_calibrator: Any = None
        self.progress_monitor: Any = None
        self.profiles: list[OptimizationProfile] = []

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def set_flag(self, flag: str) -> None:
        self.flags.add(flag)

    def set_memory_pool_limit(self, pool: str, size: int) -> None:
        self.pools[pool] = size


class Builder:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def create_network(self, flags: int = 0) -> Network:
        return Network()

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig()

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes | None:
        if BuildStats.fail_build or network.onnx is None:
            return None
        monitor = config.progress_monitor
        if monitor is not None:
            monitor.phase_start("Building engine", None, 3)
            for step in range(3):
                assert monitor.step_complete("Building engine", step) is True
                BuildStats.phases.append(("Building engine", step))
            monitor.phase_finish("Building engine")
        calibrator = config.int8_calibrator
        if BuilderFlag.INT8 in config.flags:
            assert calibrator is not None, "INT8 without a calibrator"
            if not calibrator.read_calibration_cache():
                assert calibrator.get_batch_size() == 1
                while (ptrs := calibrator.get_batch(["images"])) is not None:
                    assert all(int(p) in CudaState.memory for p in ptrs)
                    BuildStats.calibration_batches += 1
                calibrator.write_calibration_cache(b"calibration-table")
        BuildStats.builds += 1
        version = sys.modules["tensorrt"].__version__
        profiles = [{k: list(v) for k, v in p.shapes.items()} for p in config.profiles]
        BuildStats.profiles = profiles
        header = json.dumps(
            {"flags": sorted(config.flags), "version": version, "profiles": profiles}
        ).encode()
        return MAGIC + header + b"\n" + network.onnx


class Engine:
    def __init__(self, onnx_bytes: bytes, profiles: list[dict[str, Any]] | None = None) -> None:
        # A dynamic dimension is only usable with an optimisation profile, as in TensorRT.
        self.profiles = profiles or []
        self.session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
        self.inputs = self.session.get_inputs()
        self.outputs = self.session.get_outputs()
        self.names = [t.name for t in self.inputs] + [t.name for t in self.outputs]
        self.shapes = {t.name: tuple(t.shape) for t in (*self.inputs, *self.outputs)}

    @property
    def num_io_tensors(self) -> int:
        return len(self.names)

    def get_tensor_name(self, index: int) -> str:
        return self.names[index]

    def get_tensor_mode(self, name: str) -> str:
        return TensorIOMode.INPUT if name in {t.name for t in self.inputs} else TensorIOMode.OUTPUT

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) else -1 for d in self.shapes[name])

    def get_tensor_dtype(self, name: str) -> str:
        return "FLOAT"

    def create_execution_context(self) -> ExecutionContext:
        return ExecutionContext(self)


class ExecutionContext:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.addresses: dict[str, int] = {}
        self.input_shapes: dict[str, tuple[int, ...]] = {}

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        profile = self.engine.profiles[0] if self.engine.profiles else {}
        if name not in profile:
            return False
        low, _, high = profile[name]
        if len(shape) != len(low) or any(
            not lo <= d <= hi for d, lo, hi in zip(shape, low, high, strict=True)
        ):
            return False
        self.input_shapes[name] = tuple(int(d) for d in shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        if name in self.input_shapes:
            return self.input_shapes[name]
        batch = next(iter(self.input_shapes.values()), (-1,))[0]
        shape = self.engine.get_tensor_shape(name)
        return tuple(batch if d < 0 else d for d in shape)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        assert isinstance(ptr, int)
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        if CudaState.fail_execute:
            raise LaunchError("cuLaunchKernel failed: unspecified launch failure")
        feeds = {}
        for t in self.engine.inputs:
            shape = self.input_shapes.get(t.name) or self.engine.shapes[t.name]
            if any(not isinstance(d, int) or d < 0 for d in shape):
                raise LaunchError(f"input {t.name!r} has a dynamic shape that was never set")
            n = int(np.prod(shape))
            raw = CudaState.memory[self.addresses[t.name]][: n * 4]
            feeds[t.name] = raw.view(np.float32).reshape(shape)
        results = self.engine.session.run(None, feeds)
        for t, value in zip(self.engine.outputs, results, strict=True):
            _write(self.addresses[t.name], value.astype(np.float32))
        return True


class Runtime:
    def __init__(self, logger: Logger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
        if not data.startswith(MAGIC):
            return None
        header, _, body = data[len(MAGIC) :].partition(b"\n")
        meta = json.loads(header)
        if meta["version"] != sys.modules["tensorrt"].__version__:
            return None
        return Engine(body, meta.get("profiles"))


def make_tensorrt(version: str = "10.3.0") -> types.ModuleType:
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version  # type: ignore[attr-defined]
    for name, value in {
        "Logger": Logger,
        "Builder": Builder,
        "OnnxParser": OnnxParser,
        "Runtime": Runtime,
        "MemoryPoolType": MemoryPoolType,
        "BuilderFlag": BuilderFlag,
        "TensorIOMode": TensorIOMode,
        "IInt8EntropyCalibrator2": IInt8EntropyCalibrator2,
        "IProgressMonitor": IProgressMonitor,
        "nptype": lambda dtype: np.float32,
    }.items():
        setattr(trt, name, value)
    return trt


def install(monkeypatch: Any, version: str = "10.3.0") -> types.ModuleType:
    """Put the stand-ins into sys.modules for one test (monkeypatch undoes it)."""
    CudaState.reset()
    BuildStats.reset()
    trt = make_tensorrt(version)
    package, driver = make_pycuda()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    return trt
