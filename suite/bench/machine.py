"""What machine a bench ran on, for its header and its JSON: enough to tell two machines with the same
model name apart. A virtual machine often names its CPU only "Intel(R) Xeon(R) Processor"; family,
model and stepping still identify the generation, the flags say which vector units the guest sees,
and the compiled kernels depend on the vector ISA inductor compiles for and on the C++ compiler.
Every field degrades to None (or "unknown") where a platform does not offer it."""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
FLAG_PREFIXES = ("avx512", "amx")  # the vector and matrix units the compiled kernels and matmuls can use


def parse_cpuinfo(text: str) -> dict[str, object]:
    """The first processor's vendor, family / model / stepping, model name and its AVX-512 / AMX flags
    from /proc/cpuinfo text (x86 Linux; other layouts give None where a field is missing)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and fields:
            break  # end of the first processor's block
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())

    def number(key: str) -> int | None:
        return int(fields[key]) if fields.get(key, "").isdigit() else None
    flags = fields.get("flags", fields.get("Features", "")).split()
    return {"cpu_model": fields.get("model name", "unknown"), "cpu_vendor": fields.get("vendor_id"),
            "cpu_family": number("cpu family"), "cpu_model_number": number("model"), "cpu_stepping": number("stepping"),
            "avx512f": "avx512f" in flags, "cpu_flags": sorted(f for f in flags if f.startswith(FLAG_PREFIXES))}


def inductor_isa() -> dict[str, object]:
    """The vector ISA torch.compile's C++ code is built for on this machine (None if it vectorises none)."""
    try:
        from torch._inductor import cpu_vec_isa
        isa = cpu_vec_isa.pick_vec_isa()
    except Exception:  # a private module: its absence or failure must not stop a bench
        return {"inductor_vec_isa": None, "inductor_vec_bits": None, "inductor_arch_flags": None}
    if not isa:
        return {"inductor_vec_isa": None, "inductor_vec_bits": None, "inductor_arch_flags": None}
    return {"inductor_vec_isa": f"{isa} ({type(isa).__name__})", "inductor_vec_bits": isa.bit_width(),
            "inductor_arch_flags": isa.build_arch_flags()}


def cxx() -> dict[str, str | None]:
    """The C++ compiler inductor builds with and the first line of its --version (None if there is none)."""
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        compiler = get_cpp_compiler()
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30, check=True).stdout
    except Exception:
        return {"cxx": None, "cxx_version": None}
    return {"cxx": compiler, "cxx_version": out.splitlines()[0] if out else None}


def describe(cpuinfo: str | None = None) -> dict[str, object]:
    """Every machine fact the bench records; cpuinfo: /proc/cpuinfo's text (read here by default)."""
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text() if CPUINFO.exists() else ""
    cpu = parse_cpuinfo(cpuinfo)
    if cpu["cpu_model"] == "unknown" and platform.processor():
        cpu["cpu_model"] = platform.processor()
    return {**cpu, "machine": platform.machine(), "vector_isa": torch.backends.cpu.get_cpu_capability(),
            **inductor_isa(), **cxx(), "torch": torch.__version__, "cores": os.cpu_count(),
            "threads": torch.get_num_threads()}


def header(m: dict[str, object]) -> str:
    """Two lines naming the machine, for the top of the bench's output."""
    ident = " ".join(f"{label} {m[key]}" for label, key in
                     (("family", "cpu_family"), ("model", "cpu_model_number"), ("stepping", "cpu_stepping"))
                     if m[key] is not None)
    flags = " ".join(m["cpu_flags"]) or "no AVX-512 / AMX"
    isa = f"{m['inductor_vec_isa']}, {m['inductor_vec_bits']}-bit" if m["inductor_vec_isa"] else "none"
    return (f"torch {m['torch']} on {m['cpu_model']} ({m['cpu_vendor'] or m['machine']} {ident}), {m['cores']} cores, "
            f"{m['threads']} threads\n"
            f"flags: {flags}; torch dispatches {m['vector_isa']}; inductor compiles for {isa}; "
            f"C++: {m['cxx_version'] or 'none found'}")
