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


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def keep_freed_chunks(mmap_below: int = 64 << 20, trim_above: int = 128 << 20) -> bool:
    """Ask glibc to serve arrays below ``mmap_below`` bytes from the heap and to
    keep up to ``trim_above`` bytes of freed heap: the passes allocate and free
    a few chunk-sized arrays (megabytes) per chunk, and left to its dynamic
    threshold glibc may map each afresh, so that every one page-faults in
    again (a quarter of an EM iteration went to the kernel that way). True
    where it took effect (glibc); elsewhere nothing changes."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, int(mmap_below))) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_above)))
