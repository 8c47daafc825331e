"""The machine a benchmark ran on (CPU, cores, ISA flags, library versions) and its measured matmul peak."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

# the ISA features that decide which precision is fast here (bf16 needs AVX512-BF16 or AMX on CPUs)
RELEVANT_FLAGS: tuple[str, ...] = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile", "amx_int8")


def _cpuinfo(path: str | os.PathLike = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """(model name, flags) of the first CPU listed in /proc/cpuinfo; ('unknown', {}) elsewhere."""
    model, flags = "", set()
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = set(value.split())
        if model and flags:
            break
    return model or platform.processor() or "unknown", flags


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def machine_info(cpuinfo_path: str | os.PathLike = "/proc/cpuinfo") -> dict[str, Any]:
    """CPU model, usable cores, relevant ISA flags, GPUs, and Python/TF/Keras/numpy/OpenCV versions."""
    model, flags = _cpuinfo(cpuinfo_path)
    info: dict[str, Any] = {
        "cpu_model": model,
        "cores": usable_cores(),
        "flags": {f: f in flags for f in RELEVANT_FLAGS},
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import psutil  # optional: total memory

        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        info["memory_gib"] = None
    versions: dict[str, str | None] = {}
    for name in ("tensorflow", "keras", "numpy", "cv2"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError:
            versions[name] = None
    info["versions"] = versions
    try:
        import tensorflow as tf

        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        info["gpus"] = []
    info["onednn"] = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86)")
    return info


def has_fast_bf16(info: dict[str, Any]) -> bool:
    """True if the CPU has native bf16 math, by the same flags `--precision auto` uses to pick bf16."""
    from cxr_utils.gan.device import BF16_CPU_FLAGS

    flags = info.get("flags", {})
    return any(flags.get(f) for f in BF16_CPU_FLAGS)


def matmul_peak(dtype: str = "float32", n: int = 2048, repeats: int = 5) -> dict[str, Any]:
    """Best FLOP/s of an n x n x n matmul in `dtype` (float32 | bfloat16 | float16), 2*n^3 FLOPs per call."""
    import tensorflow as tf

    dt = tf.as_dtype(dtype)
    g = tf.random.Generator.from_seed(0)
    a = tf.cast(g.normal([n, n]), dt)
    b = tf.cast(g.normal([n, n]), dt)

    @tf.function
    def mm(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        # reduce to a scalar so timing excludes copying the product out
        return tf.reduce_sum(tf.cast(tf.matmul(a, b)[:1, :1], tf.float32))

    mm(a, b).numpy()  # trace + warm the oneDNN primitive cache
    times: list[float] = []
    while len(times) < repeats:
        t0 = time.perf_counter()
        mm(a, b).numpy()
        times.append(time.perf_counter() - t0)
    flops = 2.0 * n**3
    best = min(times)
    return {
        "dtype": dt.name,
        "n": n,
        "flops_per_call": flops,
        "best_seconds": best,
        "median_seconds": sorted(times)[len(times) // 2],
        "calls": len(times),
        "flops_per_second": flops / best,
    }
