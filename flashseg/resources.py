"""What this process may use: CPUs (its affinity mask where the OS has one, so
SLURM allocations and taskset limits hold) and memory (the smaller of the
machine's available memory and the cgroup's limit, as under SLURM or Docker)."""
from __future__ import annotations

import os


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as handle:
            text = handle.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_memory() -> int | None:
    """Bytes this process could still allocate, or None where the OS does not say."""
    free = None
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        free = None
    limit = _read_int("/sys/fs/cgroup/memory.max")            # cgroup v2
    used = _read_int("/sys/fs/cgroup/memory.current")
    if limit is None:
        limit = _read_int("/sys/fs/cgroup/memory/memory.limit_in_bytes")   # cgroup v1
        used = _read_int("/sys/fs/cgroup/memory/memory.usage_in_bytes")
    if limit is not None and limit < (1 << 60):
        room = max(0, limit - (used or 0))
        free = room if free is None else min(free, room)
    return free
