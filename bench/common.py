"""What every benchmark records about the machine it ran on (timings are only comparable on the same one)."""

from __future__ import annotations

import os
import platform


def machine_facts() -> dict:
    """Load before the run, CPU count, architecture and library versions."""
    import tensorflow as tf

    return {
        "load_average_1m_before": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
    }
