"""TensorRT engines in the runtime: deserialize a ``.plan`` and run it on the GPU.

Building and refitting engines live in :mod:`taskfold.export.tensorrt`. The buffers here are
PyTorch CUDA tensors (TensorRT's Python API takes device pointers; torch is what this project
already depends on for CUDA memory), so this runner is the one runtime path that imports torch.
"""

from __future__ import annotations

from pathlib import Path

from taskfold.errors import ExportError

from .backends import TENSORRT


def cuda_available() -> bool:
    """Whether a CUDA GPU is here for the engines (seen through PyTorch, which holds their buffers)."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def engine_runner(engine_path: str | Path):
    """A function ``inputs -> first output`` (numpy in, numpy out) over a TensorRT engine on the GPU.

    Buffers are PyTorch CUDA tensors; TensorRT 10 API: ``Runtime.deserialize_cuda_engine``,
    ``engine.num_io_tensors`` / ``get_tensor_name(i)`` / ``get_tensor_mode(name)`` /
    ``get_tensor_dtype(name)``, ``engine.create_execution_context()``,
    ``context.set_input_shape(name, shape)``, ``context.get_tensor_shape(name)``,
    ``context.set_tensor_address(name, ptr)``, ``context.execute_async_v3(stream)``.
    """
    import numpy as np
    import torch

    trt = TENSORRT.check_installed("backend", ExportError)
    if not torch.cuda.is_available():
        raise ExportError("running a TensorRT engine needs a CUDA GPU, and PyTorch sees none")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise ExportError(f"{Path(engine_path).name} is not an engine this TensorRT and GPU can load")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if n not in inputs]
    dtypes = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16, trt.DataType.INT64: torch.int64,
              trt.DataType.INT32: torch.int32}

    def run(feed: dict) -> np.ndarray:
        keep = []
        for n in inputs:
            x = torch.as_tensor(np.ascontiguousarray(feed[n])).to("cuda", dtypes[engine.get_tensor_dtype(n)])
            context.set_input_shape(n, tuple(x.shape))
            context.set_tensor_address(n, x.data_ptr())
            keep.append(x)
        result = {}
        for n in outputs:
            y = torch.empty(tuple(context.get_tensor_shape(n)), dtype=dtypes[engine.get_tensor_dtype(n)], device="cuda")
            context.set_tensor_address(n, y.data_ptr())
            result[n] = y
        stream = torch.cuda.current_stream()
        if not context.execute_async_v3(stream.cuda_stream):
            raise ExportError(f"TensorRT failed to run {Path(engine_path).name}")
        stream.synchronize()
        return result[outputs[0]].float().cpu().numpy()

    return run

