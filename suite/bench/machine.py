"""What machine a bench ran on, for the header and the JSON."""
from __future__ import annotations

import os
from pathlib import Path

import torch


def cpu_info() -> dict[str, object]:
    """CPU model, the vector ISA torch dispatches to, and the AVX-512 flag, for the table header."""
    model, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.exists() else []:
        key, _, value = line.partition(":")
        if key.strip() == "model name" and model == "unknown":
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return {"cpu_model": model, "vector_isa": torch.backends.cpu.get_cpu_capability(),
            "avx512f": "avx512f" in flags, "cores": os.cpu_count(), "threads": torch.get_num_threads()}
