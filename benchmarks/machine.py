"""What a benchmark records of the machine it ran on: CPUs, platform, Python, and the 1-minute load average before
and after (timings taken under load are upper bounds)."""

import os
import platform
from typing import Dict


def machine(load_before: float, load_after: float) -> Dict:
    """The machine record of a benchmark's JSON (load averages: 1-minute, as ``os.getloadavg()[0]``)."""
    return {
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_before": round(float(load_before), 2),
        "load_after": round(float(load_after), 2),
    }


def machine_line(record: Dict, detail: str = "") -> str:
    """One printed line of a :func:`machine` record, ``detail`` (e.g. the server's threads) after the Python
    version."""
    detail = f", {detail}" if detail else ""
    return (
        f"machine: {record['machine']}, {record['cpus']} CPUs, Python {record['python']}{detail}; load average "
        f"{record['load_before']:.2f} before, {record['load_after']:.2f} after"
    )
