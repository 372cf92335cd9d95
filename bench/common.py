"""What every benchmark records about the machine it ran on (timings are only comparable on the same one)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# x86 vector extensions that decide how fast int8 and float kernels run (XNNPACK picks its kernels by them):
# on an AVX2-only CPU the integer model ran as fast as the float one, with VNNI about 1.6x faster
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def cpu_facts(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model name and which of SPEED_FLAGS it has: `cpu_flags` is None where /proc/cpuinfo is missing
    (not Linux), `cpu_model` "unknown" where neither it nor the platform names the CPU (e.g. most ARM boards)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {"cpu_model": platform.processor() or "unknown", "cpu_flags": None}
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    return {"cpu_model": fields.get("model name") or platform.processor() or "unknown",
            "cpu_flags": [flag for flag in SPEED_FLAGS if flag in flags]}  # fmt: skip


def machine_facts() -> dict:
    """Load before the run, CPU count, model and speed-relevant flags, architecture and library versions."""
    import tensorflow as tf

    return {
        "load_average_1m_before": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        **cpu_facts(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }
