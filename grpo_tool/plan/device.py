"""The device a plan is for: a GPU known by name (its data-sheet throughput and bandwidth) or by memory alone, or this
machine's CPU with its matmul rate and copy bandwidth measured now.

    assert Device.gpu(24).name == "L4" and Device.gpu(80, "NVIDIA H100 80GB HBM3").tflops == 989
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

GB = 1024**3
MB = 1024**2


# bf16 dense tensor-core TFLOPS, memory GiB, bandwidth TB/s, from the vendors' data sheets.
GPUS = {
    "H200": (989, 141, 4.8), "H100": (989, 80, 3.35), "A100-SXM4-80GB": (312, 80, 2.0), "A100": (312, 40, 1.56),
    "L40S": (362, 48, 0.86), "A6000": (155, 48, 0.77), "RTX 4090": (165, 24, 1.0), "RTX 3090": (71, 24, 0.94),
    "A10G": (70, 24, 0.6), "A10": (125, 24, 0.6), "L4": (121, 24, 0.3), "T4": (65, 16, 0.32),
}


# Assumed when only --gpu-memory is given: the common GPU of that size.
GPU_BY_MEMORY = ((16, "T4"), (24, "L4"), (48, "L40S"), (80, "H100"), (float("inf"), "H200"))


@dataclass(frozen=True)
class Device:
    kind: str  # cpu or cuda
    memory: float  # bytes the run may use
    name: str
    tflops: float  # matmul throughput, TFLOPS, in the training precision
    bandwidth: float  # TB/s
    how: str  # where these figures came from

    @staticmethod
    def gpu(memory_gb: float, name: str | None = None) -> Device:
        if name is None:
            name = next(gpu for limit, gpu in GPU_BY_MEMORY if memory_gb <= limit)
            how = f"--gpu-memory {memory_gb:g}: throughput of a {name}-class GPU assumed"
        else:
            how = f"detected {name}"
        key = next((known for known in sorted(GPUS, key=len, reverse=True) if known.lower() in name.lower()), "A100")
        tflops, _, bandwidth = GPUS[key]
        return Device("cuda", memory_gb * GB, name, tflops, bandwidth, how)

    @staticmethod
    def cpu_here() -> Device:
        """This machine's available memory, and its fp32 matmul rate and copy bandwidth measured now (~0.3 s)."""
        import torch

        size = 512
        a, b = torch.randn(size, size), torch.randn(size, size)
        torch.mm(a, b)
        start, rounds = time.perf_counter(), 20
        for _ in range(rounds):
            torch.mm(a, b)
        tflops = 2 * size**3 * rounds / (time.perf_counter() - start) / 1e12
        big = torch.empty(64 * MB // 4)
        start = time.perf_counter()
        for _ in range(5):
            big.clone()
        bandwidth = 2 * big.numel() * 4 * 5 / (time.perf_counter() - start) / 1e12
        return Device("cpu", available_memory(), f"CPU ({os.cpu_count()} cores)", tflops, bandwidth,
                      f"measured here: {tflops * 1000:.0f} GFLOP/s fp32 matmul, {bandwidth * 1000:.0f} GB/s copy")

    @staticmethod
    def detect(gpu_memory_gb: float | None) -> Device:
        """--gpu-memory plans for such a GPU wherever this runs; otherwise this machine's GPU, or its CPU."""
        if gpu_memory_gb is not None:
            return Device.gpu(gpu_memory_gb)
        import torch  # not patched by Unsloth, so importing it before a later run is safe

        if torch.cuda.is_available():
            properties = torch.cuda.get_device_properties(0)
            return Device.gpu(properties.total_memory / GB, properties.name)
        return Device.cpu_here()


def available_memory() -> float:
    """Bytes this machine can give a new process: MemAvailable, else the physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def resident_memory() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
