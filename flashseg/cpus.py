"""How many CPUs this process may use: its affinity mask where the OS has one
(so SLURM allocations and taskset limits hold), else the machine's count."""
from __future__ import annotations

import os


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
