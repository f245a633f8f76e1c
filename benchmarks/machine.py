"""The machine a benchmark ran on: what it is, how much memory a process holds, and its matmul peak.

Every number in a report stands beside the machine that produced it (:func:`describe`).
The matmul peak is *measured*, not taken from a data sheet: the best of a few large
single-precision (or, on a GPU, half-precision) matrix products through the same engines
the benchmark times — ONNX Runtime's MatMul kernel and PyTorch's — so "how far is a UNet
call from the floor" compares like with like.
"""

from __future__ import annotations

import os
import platform
import statistics
import time

import numpy as np


def _cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _total_memory_gib() -> float | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def describe(provider: str = "cpu") -> dict:
    """CPU model, usable cores, memory, OS and (for CUDA) the GPU."""
    out = {"cpu": _cpu_model(), "cores": usable_cores(), "memory_gib": _total_memory_gib(),
           "os": f"{platform.system()} {platform.release()}", "machine": platform.machine(),
           "python": platform.python_version()}
    if provider == "cuda":
        import torch

        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            out["gpu"] = f"{p.name}, {p.total_memory / 2**30:.0f} GiB"
    return out


def one_line(machine: dict) -> str:
    mem = f", {machine['memory_gib']:.0f} GiB" if machine.get("memory_gib") else ""
    gpu = f", GPU {machine['gpu']}" if machine.get("gpu") else ""
    return f"{machine['cpu']}, {machine['cores']} cores{mem}{gpu}, {machine['os']}"


# --- Resident memory -----------------------------------------------------------------------------

def _status_kib(key: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_bytes() -> int | None:
    """Resident set size of this process now (Linux; ``None`` elsewhere)."""
    kib = _status_kib("VmRSS:")
    return None if kib is None else kib * 1024


def peak_rss_bytes() -> int | None:
    """Peak resident set size of this process so far."""
    kib = _status_kib("VmHWM:")
    if kib is not None:
        return kib * 1024
    try:
        import resource

        r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return r if platform.system() == "Darwin" else r * 1024
    except (ImportError, OSError):
        return None


# --- Matmul peak ---------------------------------------------------------------------------------

def _best_gflops(fn, flops: int, repeats: int) -> tuple[float, float]:
    fn()  # warm-up (kernel selection, weight packing)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return flops / min(times) / 1e9, flops / statistics.median(times) / 1e9


def ort_matmul_peak(n: int | None = None, threads: int | None = None, provider: str = "cpu", repeats: int = 5) -> dict:
    """GFLOP/s of one ``[n, n] x [n, n]`` MatMul node in ONNX Runtime (fp32 on CPU, fp16 on CUDA with the
    operands kept on the GPU). ``n`` defaults to 2048 on the CPU and 8192 on a GPU."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    n = n or (8192 if provider == "cuda" else 2048)
    dtype = np.float16 if provider == "cuda" else np.float32
    elem = TensorProto.FLOAT16 if provider == "cuda" else TensorProto.FLOAT
    rng = np.random.default_rng(0)
    b = numpy_helper.from_array(rng.standard_normal((n, n)).astype(dtype), "B")
    graph = helper.make_graph([helper.make_node("MatMul", ["A", "B"], ["Y"])], "matmul",
                              [helper.make_tensor_value_info("A", elem, [n, n])],
                              [helper.make_tensor_value_info("Y", elem, [n, n])], [b])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    providers = ["CUDAExecutionProvider"] if provider == "cuda" else ["CPUExecutionProvider"]
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=providers)
    a = rng.standard_normal((n, n)).astype(dtype)
    if provider == "cuda":
        binding = sess.io_binding()
        a_dev = ort.OrtValue.ortvalue_from_numpy(a, "cuda", 0)
        binding.bind_ortvalue_input("A", a_dev)
        binding.bind_output("Y", "cuda")

        def fn():
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()
    else:
        def fn():
            sess.run(None, {"A": a})
    best, median = _best_gflops(fn, 2 * n ** 3, repeats)
    return {"engine": "onnxruntime MatMul", "n": n, "dtype": np.dtype(dtype).name, "best_gflops": best,
            "median_gflops": median}


def torch_matmul_peak(n: int | None = None, device: str = "cpu", repeats: int = 5) -> dict:
    """GFLOP/s of ``torch.matmul`` on ``[n, n]`` matrices (fp32 on CPU, fp16 on CUDA; n 2048 / 8192)."""
    import torch

    n = n or (8192 if device == "cuda" else 2048)
    dtype = torch.float16 if device == "cuda" else torch.float32
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)

    def fn():
        with torch.inference_mode():
            torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()

    best, median = _best_gflops(fn, 2 * n ** 3, repeats)
    return {"engine": "torch.matmul", "n": n, "dtype": str(dtype).removeprefix("torch."), "best_gflops": best,
            "median_gflops": median}
