"""GPU backend: the Triton kernels behind the chunk driver's state interface.

The driver (``driver.py``) sees the same objects as from the CPU backend:
``fwd``/``bwd`` (host-side :class:`~flashseg.core.cpu.PreparedModel`, which
the driver's trackers and sampler read), ``forward_state(backward=)``,
``viterbi_state()`` and ``posterior_chunk``. The states keep their ring,
tail and messages on the device and advance them with one kernel launch per
chunk; stores (E, A, L, sexp, ghost rows; Viterbi pointers) are produced on
the device and copied into the driver's ForwardStore/ViterbiStore.

The per-bin combination (``posterior_chunk``: gamma, b, chg) runs on the
device on the rows the kernels left there (triton/posterior.py, linear or
log space for the exact fallback). Posterior samples walk on the
device too, all samples of a contig in one launch per chunk
(triton/sample.py, :meth:`GpuBackend.walk_chunk`), their uniforms drawn on
the host from each sample's generator. The certificate and the segment
trackers run on the host, on the rows copied back, and emission chunks come
from the host. Device-resident chunks
(:class:`DeviceChunk`) are accepted by ``advance`` too (the benchmark
synthesises emissions on the device). The launchers take batches of
sequences (one program each); the chunk driver runs one contig per worker
thread instead, each on its own CUDA stream (:func:`contig_stream`), and,
chunk-parallel (parallel.py), each chunk in flight on a pool thread with a
stream of its own (:func:`worker_stream`), so one contig fills many
multiprocessors.

Nothing here imports torch or triton at module level: :func:`gpu_available`
must answer False on a machine without an NVIDIA device without them.
"""
from __future__ import annotations

import contextlib
import glob
import math
import os
import shutil
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import DeviceError
from .backend import Backend
from .chunks import ForwardStore
from .model import SemiMarkovModel
from .numeric import (LN2_HI, LN2_LO, WALK_CHUNK_DONE, WALK_NEED_RING, WALK_NEED_SPACE, WALK_NEED_UNIFORMS,
                      WALK_ZERO, positive_log, split_partition)
from .prepared import PreparedModel


def interpreting() -> bool:
    """True when Triton runs its kernels in the CPU interpreter (tests)."""
    return os.environ.get("TRITON_INTERPRET", "") not in ("", "0")


def nvidia_device_possible() -> bool:
    """Cheap check, no torch: could this process see an NVIDIA GPU at all?"""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return False
    if glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/nvidiactl"):
        return True
    return shutil.which("nvidia-smi") is not None


def _unusable_reason() -> str | None:
    """None if a CUDA GPU with triton is usable, else why not (imports torch only if a GPU may exist)."""
    if not nvidia_device_possible():
        return "no NVIDIA device visible"
    import importlib.util

    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("triton") is None:
        return "torch and triton are not installed; pip install 'flashseg[gpu]'"
    import torch

    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


def gpu_available() -> bool:
    """True when a CUDA GPU and triton are usable; never imports torch without a device."""
    return _unusable_reason() is None


def resolve_device(device: str) -> str:
    """"auto" | "cpu" | "cuda" -> "cpu" | "cuda" (DeviceError for cuda without a GPU)."""
    if device == "cpu":
        return "cpu"
    if device == "auto":
        return "cuda" if gpu_available() else "cpu"
    if device == "cuda":
        if interpreting():
            return "cuda"
        why = _unusable_reason()
        if why is not None:
            raise DeviceError(f"--device cuda: no usable CUDA GPU ({why})")
        return "cuda"
    raise ValueError(f"unknown device {device!r}")


def contig_stream(device: str):
    """Context for one contig's GPU work on its own CUDA stream (a no-op on CPU).

    Contigs decoded on worker threads then run their kernels concurrently on
    the GPU's multiprocessors instead of queueing on the shared default
    stream. Everything of the contig (model upload, states, launches,
    copies) happens inside, so no cross-stream synchronisation is needed.
    """
    if device == "cpu" or interpreting():
        return contextlib.nullcontext()
    if device == "auto" and resolve_device("auto") == "cpu":
        return contextlib.nullcontext()
    import torch

    return torch.cuda.stream(torch.cuda.Stream())


# Per launch of the device walk: uniforms held for each sample, and segments
# each may find before the host collects them (larger means fewer launches).
WALK_UNIFORMS = 8192
WALK_SEGMENTS = 4096

_worker = threading.local()
# A kernel's first launch compiles it, and Triton's compile is not safe from
# several threads at once (triton-lang/triton#5933): launches take turns. A
# launch only enqueues work (tens of microseconds), so this costs little.
# Under the interpreter a launch runs the kernel, which patches
# triton.language meanwhile: there the turns keep kernels apart, as they must.
_launch_turn = threading.Lock()


@contextlib.contextmanager
def worker_stream():
    """Work of a chunk-parallel pass on a pool thread: the thread's own CUDA
    stream, drained on exit, so the state it leaves is complete when another
    thread (another stream) reads it. A no-op under the interpreter."""
    if interpreting():
        yield
        return
    import torch

    stream = getattr(_worker, "stream", None)
    if stream is None:
        stream = _worker.stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        yield
    stream.synchronize()


def settle_stream() -> None:
    """Drain this thread's current stream (after work another thread will read)."""
    if interpreting():
        return
    import torch

    torch.cuda.current_stream().synchronize()


def _torch_device():
    import torch

    if interpreting():
        return torch.device("cpu")
    return torch.device("cuda")


def gpu_backend(model: SemiMarkovModel, exact: bool = False) -> "GpuBackend":
    """The Triton backend for ``model``; DeviceError when no GPU can run it.

    With TRITON_INTERPRET=1 the kernels run on CPU tensors (tests).
    """
    if not interpreting():
        why = _unusable_reason()
        if why is not None:
            raise DeviceError(f"--device cuda: no usable CUDA GPU ({why})")
    return GpuBackend(model, exact=exact)


class DeviceModel:
    """One orientation's model arrays as device tensors, in the kernels' layouts."""

    def __init__(self, pm: PreparedModel, device):
        import torch

        def f64(a):
            return torch.tensor(np.ascontiguousarray(a, dtype=np.float64), device=device).contiguous()

        def i8(a):
            return torch.tensor(np.ascontiguousarray(a, dtype=np.int8), device=device).contiguous()

        self.pm = pm
        self.device = device
        self.linear = {
            "wcirc": f64(pm.wcirc), "wpos": i8(pm.wpos), "wK": f64(pm.wK),
            "phiKf": i8(pm.phiK_finite), "rho": f64(pm.rho),
            "TrT": f64(pm.Tr.T), "trposT": i8(pm.trpos.T),
        }
        self.log = {
            "phicirc": f64(pm.phicirc), "phiK": f64(pm.phiK), "lrho": f64(pm.lrho),
            "transT": f64(pm.trans.T), "final": f64(pm.final),
        }


@dataclass
class DeviceChunk:
    """Emissions of one chunk already on the device: x, f (1, n, C) fp64, k (1, n) int64."""

    x: object
    f: object
    k: object

    @classmethod
    def from_log(cls, x):
        """Device twin of ``EmissionChunk.from_log`` (same k and f, computed on the device)."""
        import torch

        x = x.to(torch.float64)
        if x.dim() == 2:
            x = x[None]
        m = x.max(dim=2).values
        finite = torch.isfinite(m)
        k = torch.where(finite, torch.round(m / math.log(2.0)), torch.zeros_like(m)).to(torch.int64)
        kf = k.to(torch.float64)[..., None]
        f = torch.exp((x - kf * LN2_HI) - kf * LN2_LO)
        return cls(x.contiguous(), f.contiguous(), k.contiguous())


class _DeviceState:
    """Common plumbing: a dict of (B, ...) device tensors and host views on demand.

    B = 1 for the driver's states. The chunk-parallel passes advance a batch of
    chunks' states in one launch (:meth:`advance_rows`) and then hand out one
    state per row (:meth:`rows`), each a view of the batch's tensors.
    """

    _host_fields: tuple = ()
    scale_offset = (0, 0.0)   # as cpu._KernelState.scale_offset
    _guess_E = 0.0

    @property
    def batch(self) -> int:
        return int(self.dev["t_sexp"].shape[0])

    def as_guess(self, t: int) -> None:
        """As cpu._KernelState.as_guess: a fresh state becomes a guess at boundary t."""
        self.as_guess_rows([t])

    def as_guess_rows(self, ts) -> None:
        """:meth:`as_guess` for the rows whose entry of ``ts`` is a boundary (None: left fresh)."""
        import torch

        rows = [b for b, t in enumerate(ts) if t is not None]
        if not rows:
            return
        dev = self.dm.device
        idx = torch.tensor(rows, dtype=torch.int64, device=dev)
        self.dev["t_sexp"][idx] = torch.tensor([[int(ts[b]), 0] for b in rows], dtype=torch.int64, device=dev)
        self.dev["E"][idx] = self._guess_E
        self._host = {}

    def _carried(self):
        return [self.ring.ravel(), self.tail, self.A, self.E]

    def junction_view(self):
        """As the CPU states' junction_view (log values in units of 2**sexp; sexp; tail starts or None)."""
        return np.concatenate(self._carried()), int(self.t_sexp[1]), None

    def copy(self):
        """An independent copy (a checkpoint): the device tensors are cloned."""
        return self._clone_into(type(self).__new__(type(self)))

    def _clone_into(self, out):
        out.dm = self.dm
        out.dev = {key: v.clone() for key, v in self.dev.items()}
        out._host = dict(self._host)   # host views are never written in place
        out.scale_offset = self.scale_offset
        return out

    def rows(self, host: bool = False) -> list:
        """One state per row of a batch, each a view of this one's tensors. With
        ``host``, every field comes to the host in one copy for the whole batch
        (the chunk-parallel chain reads each row's junction view)."""
        fetched = {key: _to_host(v) for key, v in self.dev.items()} if host else {}
        out = []
        for b in range(self.batch):
            s = type(self).__new__(type(self))
            s.dm = self.dm
            s.dev = {key: v[b:b + 1] for key, v in self.dev.items()}
            s._host = {key: v[b] for key, v in fetched.items()}
            s.scale_offset = self.scale_offset
            out.append(s)
        return out

    def _host_view(self, key):
        if key not in self._host:
            self._host[key] = _to_host(self.dev[key][0])
        return self._host[key]

    @property
    def t_sexp(self) -> np.ndarray:
        return self._host_view("t_sexp")

    @property
    def t(self) -> int:
        return int(self.t_sexp[0])

    @property
    def ring(self) -> np.ndarray:
        return self._host_view("ring")

    @property
    def tail(self) -> np.ndarray:
        return self._host_view("tail")

    @property
    def A(self) -> np.ndarray:
        return self._host_view("A")

    @property
    def E(self) -> np.ndarray:
        return self._host_view("E")

    def advance(self, chunk, store=None) -> int:
        """Advance over one chunk (host EmissionChunk or DeviceChunk), filling ``store``."""
        if self.batch != 1:
            raise ValueError("advance() takes one state; a batch advances with advance_rows()")
        dc = chunk if isinstance(chunk, DeviceChunk) else None
        if dc is None:
            if len(chunk.x) == 0:
                return -1
            dc, n = _upload_chunks([chunk], self.dm.device)
        else:
            import torch

            n = torch.tensor([dc.x.shape[1]], dtype=torch.int64, device=self.dm.device)
        return int(self._launch(dc, n, None if store is None else [store])[0])

    def advance_rows(self, chunks, stores=None) -> np.ndarray:
        """Advance row b of a batch over ``chunks[b]`` (None or empty: the row stays
        as it is) in one launch, filling ``stores[b]`` where given. Returns the
        rows' statuses (-1, or the first local bin where all mass vanished)."""
        if len(chunks) != self.batch:
            raise ValueError(f"{len(chunks)} chunks for a batch of {self.batch}")
        dc, n = _upload_chunks(chunks, self.dm.device)
        if dc is None:
            return np.full(self.batch, -1, dtype=np.int64)
        if stores is not None:
            stores = [st if c is not None and len(c.x) else None for c, st in zip(chunks, stores)]
        return self._launch(dc, n, stores)


def _to_host(v, pinned: bool = False) -> np.ndarray:
    """A host copy of a tensor (under the interpreter ``.cpu()`` would alias it);
    ``pinned`` for large copies from a GPU (page-locked memory copies several
    times faster, and the block is reused once the array is gone)."""
    if v.device.type == "cpu":
        return v.numpy().copy()
    if not pinned:
        return v.cpu().numpy()
    import torch

    out = torch.empty(v.shape, dtype=v.dtype, pin_memory=True)
    out.copy_(v)
    return out.numpy()


def _upload_chunks(chunks, device):
    """Chunks of a batch (host EmissionChunks, None for none) as one padded
    DeviceChunk (B, NMAX, C) and the bins per row (B,); (None, None) if all are
    empty. Reversed chunks go last row first (the backward pass). On a GPU the
    rows are gathered in pinned memory and copied without blocking the host."""
    import torch

    ns = [0 if c is None else len(c.x) for c in chunks]
    nmax = max(ns)
    if nmax == 0:
        return None, None
    B = len(chunks)
    C = next(c for c in chunks if c is not None).x.shape[1]
    pin = device.type == "cuda"
    x = torch.empty((B, nmax, C), dtype=torch.float64, pin_memory=pin)
    f = torch.empty((B, nmax, C), dtype=torch.float64, pin_memory=pin)
    k = torch.empty((B, nmax), dtype=torch.int64, pin_memory=pin)
    xv, fv, kv = x.numpy(), f.numpy(), k.numpy()
    for b, c in enumerate(chunks):
        n = ns[b]
        if n:
            step = -1 if getattr(c, "reverse", False) else 1
            xv[b, :n] = c.x[::step]
            fv[b, :n] = c.f[::step]
            kv[b, :n] = c.k[::step]
        # The kernels never use padding (they prefetch row 0 of an empty row): zeros keep it defined.
        xv[b, n:] = 0.0
        fv[b, n:] = 0.0
        kv[b, n:] = 0
    n = torch.tensor(ns, dtype=torch.int64, pin_memory=pin)
    put = (lambda t: t.to(device, non_blocking=True)) if pin else (lambda t: t)
    return DeviceChunk(put(x), put(f), put(k)), put(n)


def _new_state(dm: DeviceModel, fill_ring: float, E0: np.ndarray, sexp0: int, C: int, K: int, batch: int = 1):
    import torch

    dev = dm.device
    return {
        "ring": torch.full((batch, C, K), fill_ring, dtype=torch.float64, device=dev),
        "tail": torch.full((batch, C), fill_ring, dtype=torch.float64, device=dev),
        "A": torch.full((batch, C), fill_ring, dtype=torch.float64, device=dev),
        "E": torch.tensor(np.array(E0, dtype=np.float64), device=dev)[None].repeat(batch, 1).contiguous(),
        "t_sexp": torch.tensor([[0, sexp0]] * batch, dtype=torch.int64, device=dev),
    }


class GpuLinearState(_DeviceState):
    """Certified linear-space forward state on the device (see triton/linear.py)."""

    def __init__(self, dm: DeviceModel, batch: int = 1):
        import torch

        pm = dm.pm
        self.dm = dm
        self.dev = _new_state(dm, 0.0, pm.init_m, pm.init_k, pm.C, pm.K, batch)
        self.dev["ghost"] = torch.full((batch, pm.C), -math.inf, dtype=torch.float64, device=dm.device)
        self._host = {}

    @property
    def ghost(self) -> np.ndarray:
        return self._host_view("ghost")

    _guess_E = 1.0

    def set_ghost(self, ghost: np.ndarray) -> None:
        """Every row's ghosts (per label) set to ``ghost``."""
        import torch

        g = np.array(ghost, dtype=np.float64)
        self.dev["ghost"][:] = torch.as_tensor(g, device=self.dm.device)
        self._host = dict(self._host, ghost=g)   # the other fields are unchanged

    def junction_view(self):
        return np.concatenate([positive_log(v) for v in self._carried()]), int(self.t_sexp[1]), None

    def _launch(self, dc, n, stores) -> np.ndarray:
        from .triton.linear import linear_forward

        dstore = _row_stores(dc, self.dm, stores)
        with _launch_turn:
            status = linear_forward(dc.x, dc.f, dc.k, n, self.dev, self.dm.linear, dstore)
        self._host = {}
        status = status.cpu().numpy()
        _hand_rows(dstore, stores, dc)
        return status

    def log_partition(self) -> tuple[float, float, int]:
        zm = float(np.dot(self.A, self.dm.pm.final_m))
        return split_partition(zm, int(self.t_sexp[1]) + self.dm.pm.final_k)

    def log_ring_entry(self, c: int, slot: int) -> float:
        """log of the ring value (start (-slot) mod K's running product) of label c."""
        v = self.ring[c, slot]
        return math.log(v) + int(self.t_sexp[1]) * math.log(2.0) if v > 0 else -math.inf

    def lost_at_end(self, log_z: float) -> float:
        pm = self.dm.pm
        g = self.ghost
        ok = np.isfinite(g) & np.isfinite(pm.final)
        return float(np.sum(pm.max_weight[ok] * np.exp(g[ok] + pm.final[ok] - log_z)))


class GpuLogSpaceState(_DeviceState):
    """Exact log-space forward state on the device (see triton/logspace.py)."""

    def __init__(self, dm: DeviceModel, batch: int = 1):
        pm = dm.pm
        self.dm = dm
        self.dev = _new_state(dm, -math.inf, pm.initial, 0, pm.C, pm.K, batch)
        self._host = {}

    @property
    def ghost(self) -> np.ndarray:
        return np.full(self.dm.pm.C, -math.inf)

    def _launch(self, dc, n, stores) -> np.ndarray:
        from .triton.logspace import logspace_forward

        dstore = _row_stores(dc, self.dm, stores)
        with _launch_turn:
            status = logspace_forward(dc.x, dc.k, n, self.dev, self.dm.log, dstore)
        self._host = {}
        status = status.cpu().numpy()
        _hand_rows(dstore, stores, dc)
        return status

    def log_partition(self) -> tuple[float, float, int]:
        v = self.A + self.dm.pm.final
        m = v.max()
        if not np.isfinite(m):
            return -math.inf, 0.0, 0
        k = int(math.floor(m / math.log(2.0)))
        return split_partition(float(np.sum(np.exp(v - k * math.log(2.0)))), k + int(self.t_sexp[1]))

    def log_ring_entry(self, c: int, slot: int) -> float:
        return float(self.ring[c, slot]) + int(self.t_sexp[1]) * math.log(2.0)

    def lost_at_end(self, log_z: float) -> float:
        return 0.0


class GpuViterbiState(_DeviceState):
    """Max-plus forward state on the device (see triton/viterbi.py)."""

    def __init__(self, dm: DeviceModel, batch: int = 1):
        import torch

        pm = dm.pm
        self.dm = dm
        self.dev = _new_state(dm, -math.inf, pm.initial, 0, pm.C, pm.K, batch)
        self.dev["tail_start"] = torch.full((batch, pm.C), -1, dtype=torch.int64, device=dm.device)
        self._host = {}

    @property
    def tail_start(self) -> np.ndarray:
        return self._host_view("tail_start")

    def junction_view(self):
        return (np.concatenate(self._carried()), 0,
                np.where(np.isfinite(self.tail), self.tail_start, -1))

    def _launch(self, dc, n, stores) -> np.ndarray:
        """Pointers come back to the host stores (ViterbiStore): the traceback walks them there."""
        import torch

        from .triton.viterbi import viterbi_forward

        B, nmax, C = dc.x.shape
        keep = stores is not None and any(st is not None for st in stores)
        dstore = None
        if keep:
            dstore = {key: torch.empty((B, nmax + 1, C), dtype=torch.int64, device=self.dm.device)
                      for key in ("a_start", "e_prev")}
        with _launch_turn:
            viterbi_forward(dc.x, n, self.dev, self.dm.log, dstore)
        self._host = {}
        if keep:
            host = {key: _to_host(v, pinned=True) for key, v in dstore.items()}
            for b, st in enumerate(stores):
                if st is not None:
                    rows = len(st.a_start)
                    st.a_start[:] = host["a_start"][b, :rows]
                    st.e_prev[:] = host["e_prev"][b, :rows]
        return np.full(B, -1, dtype=np.int64)

    def best_final(self) -> tuple[float, int]:
        v = self.A + self.dm.pm.final
        c = int(np.argmax(v))  # lowest label on ties
        return float(v[c]), c


def _row_stores(dc: DeviceChunk, dm: DeviceModel, stores):
    """Device rows for the rows of a batch that keep them (one (B, NMAX + 1, C) block each)."""
    if stores is None or all(st is None for st in stores):
        return None
    import torch

    B, nmax, C = dc.x.shape
    out = {key: torch.empty((B, nmax + 1, C), dtype=torch.float64, device=dm.device)
           for key in ("E", "A", "L", "ghost")}
    out["sexp"] = torch.empty((B, nmax + 1), dtype=torch.int64, device=dm.device)
    return out


def _hand_rows(dstore, stores, dc: DeviceChunk) -> None:
    """Give each store its rows: a :class:`GpuStore` keeps views of the device
    rows; any other ForwardStore (tests) gets host copies."""
    if dstore is None:
        return
    for b, st in enumerate(stores):
        if st is None:
            continue
        rows = st.rows
        view = {key: v[b:b + 1, :rows] for key, v in dstore.items()}
        if not st.with_tail:
            del view["L"]
        if isinstance(st, GpuStore):
            st.attach(view, dc.x[b:b + 1, :rows - 1])
            continue
        st.E[:] = _to_host(view["E"][0])
        st.A[:] = _to_host(view["A"][0])
        if st.with_tail:
            st.L[:] = _to_host(view["L"][0])
        st.ghost[:] = _to_host(view["ghost"][0])
        st.ghost_flag[:] = np.isfinite(st.ghost).any(axis=1)
        st.sexp[:] = _to_host(view["sexp"][0])


class GpuStore(ForwardStore):
    """A chunk's rows left on the device by the kernels (``device_rows``: E, A,
    L with the tail, ghost (1, rows, C) and sexp (1, rows), in the order the pass
    computed them; ``device_x`` the scores it read). ForwardStore's host arrays
    are copied from there on first use; the combination, the certificate, the
    ghosts carried into a guessed chunk and the trackers' reads of single rows
    stay on the device, so a pass copies back only what is read."""

    def __init__(self, n_rows: int, C: int, is_log: bool = False, with_tail: bool = False):
        self.rows, self.C, self.is_log, self.with_tail = n_rows, C, is_log, with_tail
        self.log_offset = (0, 0.0)
        self.device_rows = None
        self.device_reversed = False
        self.device_x = None
        self._cache = {}

    def attach(self, rows: dict, x) -> None:
        self.device_rows, self.device_x = rows, x
        self.device_reversed = False
        self._cache = {}

    def _oriented(self, key):
        """Device rows of ``key`` in this store's row order (a copy when reversed)."""
        v = self.device_rows[key][0]
        return v.flip(0) if self.device_reversed else v

    def _host(self, key) -> np.ndarray:
        if key not in self._cache:
            if self.device_rows is None:
                # Not advanced yet: room for rows (as ForwardStore's np.empty).
                v = (np.zeros(self.rows, dtype=np.uint8) if key == "ghost_flag" else
                     np.empty(self.rows, dtype=np.int64) if key == "sexp" else np.empty((self.rows, self.C)))
            elif key == "ghost_flag":
                import torch

                v = _to_host(torch.isfinite(self.device_rows["ghost"][0]).any(dim=1).to(torch.uint8))
            else:
                v = _to_host(self.device_rows[key][0])
            self._cache[key] = v[::-1] if self.device_reversed and self.device_rows is not None else v
        return self._cache[key]

    E = property(lambda self: self._host("E"))
    A = property(lambda self: self._host("A"))
    sexp = property(lambda self: self._host("sexp"))
    ghost = property(lambda self: self._host("ghost"))
    ghost_flag = property(lambda self: self._host("ghost_flag"))

    @property
    def L(self):
        return self._host("L") if self.with_tail else np.empty((0, self.C))

    def head(self, rows: int) -> "GpuStore":
        return GpuStore(rows, self.C, self.is_log, self.with_tail)

    def flipped(self) -> "GpuStore":
        out = GpuStore(self.rows, self.C, self.is_log, self.with_tail)
        out.log_offset = self.log_offset
        out.device_rows, out.device_x = self.device_rows, self.device_x
        out.device_reversed = not self.device_reversed
        out._cache = {key: v[::-1] for key, v in self._cache.items()}
        return out

    def clear_flags(self) -> None:
        pass   # the kernel writes every row's ghosts

    def any_loss(self) -> bool:
        if "any_loss" not in self._cache:
            import torch

            self._cache["any_loss"] = bool(torch.isfinite(self.device_rows["ghost"]).any())
        return self._cache["any_loss"]

    def _gather(self, key, rows, cols=None) -> np.ndarray:
        """Host values of a few rows (trackers): gathered on the device unless copied already."""
        if key in self._cache or self.device_rows is None:
            v = self._host(key)
            return v[rows] if cols is None else v[rows, cols]
        import torch

        r = np.asarray(rows, dtype=np.int64)
        if self.device_reversed:
            r = self.rows - 1 - r
        v = self.device_rows[key][0]
        idx = torch.as_tensor(r, device=v.device)
        if cols is None:
            return _to_host(v[idx])
        return _to_host(v[idx, torch.as_tensor(np.asarray(cols, dtype=np.int64), device=v.device)])

    def _log(self, values, rows):
        k, r = self.log_offset
        exponent = self._gather("sexp", rows) - k
        if self.is_log:
            return values + (exponent * LN2_HI + exponent * LN2_LO - r)
        with np.errstate(divide="ignore"):
            return np.log(values) + exponent * math.log(2.0) - r

    def log_E(self, rows, cols):
        return self._log(self._gather("E", rows, cols), rows)

    def log_A(self, rows, cols):
        return self._log(self._gather("A", rows, cols), rows)

    def log_L(self, rows, cols):
        return self._log(self._gather("L", rows, cols), rows)

    def add_carried_ghost(self, ghost: np.ndarray, x=None) -> None:
        """ForwardStore.add_carried_ghost on the device rows (from ``device_x``;
        ``x``, the host scores, is not needed)."""
        if not np.isfinite(ghost).any():
            return
        import torch

        xs = self.device_x[0]
        g = self.device_rows["ghost"][0]
        carried = torch.zeros_like(g)
        torch.cumsum(xs, dim=0, out=carried[1:])
        carried += torch.as_tensor(np.asarray(ghost, dtype=np.float64), device=g.device)
        torch.logaddexp(g, carried, out=g)
        self._cache.pop("ghost", None)
        self._cache.pop("ghost_flag", None)
        self._cache.pop("any_loss", None)


def device_certificate(fstore: GpuStore, bstore: GpuStore, max_weight, tr_up, log_z: float, rows: int):
    """The certificate's terms of one chunk on the device rows, as
    ``cpu_kernels.posterior_chunk`` computes them (forward losses continue at
    most like B, backward losses like E, twice the losses that meet at one
    boundary; the largest log ratio of losses entering a label to the entering
    message computed there), with whether each store lost anything: a (4,)
    tensor [terms, log ratio, any forward loss, any backward loss]."""
    import torch

    ln2 = math.log(2.0)
    log_mw = torch.log(max_weight)
    total = None
    ratio = None
    ghosts = []
    for lost, other, links in ((fstore, bstore, tr_up), (bstore, fstore, tr_up.T)):
        ghost = lost._oriented("ghost")[:rows]
        ghosts.append(ghost)
        cont = other._oriented("E")[:rows]
        sexp = other._oriented("sexp")[:rows]
        ok = torch.isfinite(ghost) & (cont > 0.0)
        expo = torch.where(ok, ghost + torch.log(cont) + sexp[:, None].to(ghost.dtype) * ln2 - log_z, -math.inf)
        part = (max_weight[None, :] * torch.exp(expo)).sum()
        total = part if total is None else total + part
        # Losses entering each label (through the pass's own transitions, tr_up
        # the PreparedModel's upper bound) against the entering message that pass
        # computed there: a (rows, C) product, scaled by each row's largest loss.
        weighted = ghost + log_mw[None, :]
        top = weighted.max(dim=1).values
        top_safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        acc = torch.exp(weighted - top_safe[:, None]) @ links
        inflow = torch.where(acc > 0.0, top_safe[:, None] + torch.log(acc), torch.full_like(acc, -math.inf))
        own = lost._oriented("E")[:rows]
        own_log = torch.log(own) + lost._oriented("sexp")[:rows][:, None].to(own.dtype) * ln2
        r = torch.where(torch.isfinite(inflow),
                        torch.where(own > 0.0, inflow - own_log, torch.full_like(inflow, math.inf)),
                        torch.full_like(inflow, -math.inf))
        worst = r.max() if r.numel() else torch.tensor(-math.inf, dtype=ghost.dtype, device=ghost.device)
        ratio = worst if ratio is None else torch.maximum(ratio, worst)
    both = torch.isfinite(ghosts[0]) & torch.isfinite(ghosts[1])
    meet = torch.where(both, ghosts[0] + ghosts[1] - log_z, -math.inf)
    total = total + 2.0 * (max_weight[None, :] * torch.exp(meet)).sum()
    anyf = torch.isfinite(fstore.device_rows["ghost"]).any().to(total.dtype)
    anyb = torch.isfinite(bstore.device_rows["ghost"]).any().to(total.dtype)
    return torch.stack([total, ratio.to(total.dtype), anyf, anyb])


class GpuBackend(Backend):
    """Triton kernels on one CUDA device (or the Triton interpreter on CPU tensors)."""

    name = "cuda"

    def __init__(self, model: SemiMarkovModel, exact: bool = False):
        self.fwd = PreparedModel(model)
        self.bwd = PreparedModel(model.reversed())
        self.exact = exact or not self.fwd.linear_ok
        device = _torch_device()
        self.device = device
        self.dev_fwd = DeviceModel(self.fwd, device)
        self.dev_bwd = DeviceModel(self.bwd, device)

    # Chunk-parallel passes (parallel.py): each pool thread on its own stream.
    def worker_context(self):
        return worker_stream()

    def settle(self) -> None:
        settle_stream()

    def forward_state(self, backward: bool = False, batch: int = 1):
        dm = self.dev_bwd if backward else self.dev_fwd
        return GpuLogSpaceState(dm, batch) if self.exact else GpuLinearState(dm, batch)

    def viterbi_state(self, batch: int = 1) -> GpuViterbiState:
        return GpuViterbiState(self.dev_fwd, batch)

    def new_store(self, n_rows: int, with_tail: bool = False) -> GpuStore:
        # The CPU backend's layout (logs when exact), read from the device on demand.
        return GpuStore(n_rows, self.fwd.C, is_log=self.exact, with_tail=with_tail)

    # -- many chunks per launch (the chunk-parallel passes) -------------------
    @staticmethod
    def batch_size(workers: int) -> int:
        """Chunks per launch when ``workers`` chunks may be in flight: two
        batches are, so one is read and uploaded while the other runs."""
        return max(1, int(workers) // 2)

    @staticmethod
    def stack(states):
        """One batch of the given states' copies (rows in order)."""
        import torch

        first = states[0]
        out = type(first).__new__(type(first))
        out.dm = first.dm
        out.dev = {key: torch.cat([st.dev[key] for st in states]).contiguous() for key in first.dev}
        out._host = {}
        out.scale_offset = first.scale_offset
        return out

    def recompute_rows(self, states, chunks, stores) -> np.ndarray:
        """Rows of ``chunks[i]`` from ``states[i]`` (left as they are) into
        ``stores[i]``, every chunk in one launch; the statuses."""
        status = self.stack(states).advance_rows(chunks, stores)
        for store in stores:
            if isinstance(store, GpuStore):
                store.device_x = None   # from exact states: no ghosts to carry in, so the scores may go
        return status

    def sample_rows(self, store):
        """The walk's rows on the device: x comes with :meth:`walk_chunk`; here
        the logs of the store's E, A and L at true scale (as ForwardStore.log_E)."""
        k, r = store.log_offset
        rows = {}
        for key in ("E", "A", "L"):
            v = store.device_rows[key][0]
            exponent = (store.device_rows["sexp"][0] - k).to(v.dtype)
            scale = exponent * LN2_HI + exponent * LN2_LO - r
            rows["l" + key] = ((v if store.is_log else v.log()) + scale[:, None]).contiguous()
        return rows

    def walk_chunk(self, walks, rngs, a, b, chunk, rows, ring_log) -> None:
        """Every sample's walk through chunk [a, b) at once: one program per sample
        (triton/sample.py), relaunched until every walk has left the chunk. Between
        launches the host supplies what the programs asked for: uniforms from each
        sample's own generator, ring entries, and room (it collects the segments)."""
        import torch

        from .triton.sample import sample_walk

        if not walks:
            return
        dev = self.device
        S = len(walks)
        C, K = self.fwd.C, self.fwd.K
        left = [w.unused_uniforms() for w in walks]
        ucap = max(WALK_UNIFORMS, max(len(v) for v in left) + 2)
        u = np.zeros((S, ucap))
        for s, v in enumerate(left):
            u[s, :len(v)] = v

        def i64(values):
            return torch.tensor(np.asarray(values, dtype=np.int64), device=dev)

        state = {
            "st_i": i64(np.stack([w.st_i for w in walks])),
            "st_f": torch.tensor(np.stack([w.st_f for w in walks]), device=dev),
            "u": torch.tensor(u, device=dev), "u_len": i64([len(v) for v in left]), "u_pos": i64(np.zeros(S)),
            "n_out": i64(np.zeros(S)), "code": i64(np.zeros(S)), "need": i64(np.zeros(S)),
        }
        for key in ("out_s", "out_e", "out_c"):
            state[key] = torch.empty((S, WALK_SEGMENTS), dtype=torch.int64, device=dev)
        # The walk reads the scores only (not the factors a state's advance uploads too).
        x = (chunk.x[0].contiguous() if isinstance(chunk, DeviceChunk)
             else torch.from_numpy(np.ascontiguousarray(chunk.x, dtype=np.float64)).to(dev))
        launch_rows = dict(rows, x=x)
        ring = torch.full((C, K), -math.inf, dtype=torch.float64, device=dev)
        ready = i64(np.zeros(C))

        def collect():
            n_out = state["n_out"].cpu().numpy()
            if n_out.any():
                out = [state[key].cpu().numpy() for key in ("out_s", "out_e", "out_c")]
                for s in np.flatnonzero(n_out):
                    walks[s].add(*(v[s, :n_out[s]] for v in out))
                state["n_out"].zero_()

        while True:
            with _launch_turn:
                sample_walk(state, launch_rows, ring, ready, self.dev_fwd.log, a, b)
            code = state["code"].cpu().numpy()
            if (code == WALK_CHUNK_DONE).all():
                break
            if (code == WALK_ZERO).any():
                raise AssertionError("sampling from an all-zero distribution")
            if (code == WALK_NEED_SPACE).any():
                collect()
            hungry = np.flatnonzero(code == WALK_NEED_UNIFORMS)
            if len(hungry):
                u_pos = state["u_pos"].cpu().numpy()
                for s in hungry:
                    w = walks[s]
                    w.u, w.u_pos = left[s], int(u_pos[s])
                    rest = w.unused_uniforms()
                    w.u = left[s] = np.concatenate([rest, rngs[s].random(ucap - len(rest))])
                    state["u"][s] = torch.from_numpy(w.u).to(dev)
                state["u_len"][hungry] = ucap
                state["u_pos"][hungry] = 0
            for label in np.unique(state["need"].cpu().numpy()[code == WALK_NEED_RING]):
                ring[label] = torch.from_numpy(np.asarray(ring_log(int(label)), dtype=np.float64)).to(dev)
                ready[label] = 1
        collect()
        st_i, st_f, u_pos = (state[key].cpu().numpy() for key in ("st_i", "st_f", "u_pos"))
        for s, w in enumerate(walks):
            w.st_i[:], w.st_f[:] = st_i[s], st_f[s]
            w.u, w.u_pos = left[s], int(u_pos[s])

    def posterior_chunk(self, fstore, bstore, log_z, zm, zexp, carry, first_boundary, n,
                        with_last, gamma, boundary, change) -> float:
        """gamma, b and chg of one chunk (the CPU backend's contract).

        Rows still on the device: the Triton combination (triton/posterior.py)
        on them, linear or log space (the exact fallback), and the linear
        path's certificate beside it (:func:`device_certificate`); one copy
        brings gamma, b, chg, the carry and the certificate back.
        """
        if n == 0:
            return 0.0, -math.inf
        dev_f, dev_b = fstore.device_rows, bstore.device_rows
        import torch

        from .triton.posterior import posterior_combine

        dev = self.device
        if not hasattr(self, "_tr_diag"):
            self._tr_diag = torch.tensor(np.ascontiguousarray(np.diag(self.fwd.Tr)), device=dev)
            self._trans = torch.tensor(np.ascontiguousarray(self.fwd.trans), device=dev)
            self._tr_up = torch.tensor(self.fwd.tr_up, device=dev)
            self._max_weight = torch.tensor(np.ascontiguousarray(self.fwd.max_weight, dtype=np.float64), device=dev)
        C = self.fwd.C
        carry_dev = torch.tensor(carry, dtype=torch.float64, device=dev)[None].contiguous()
        n_dev = torch.tensor([n], dtype=torch.int64, device=dev)
        first_dev = torch.tensor([first_boundary], dtype=torch.int64, device=dev)
        with _launch_turn:
            g, b, c = posterior_combine(dev_f, dev_b, self._tr_diag, n_dev, first_dev, carry_dev,
                                        1.0 / zm if zm > 0 else 0.0, zexp, b_reversed=bstore.device_reversed,
                                        log_rows=self.exact, trans=self._trans, nmax=n)
        parts = [g[0].reshape(-1), b[0], c[0], carry_dev[0]]
        if not self.exact:
            parts.append(device_certificate(fstore, bstore, self._max_weight, self._tr_up, log_z,
                                            n + 1 if with_last else n))
        out = _to_host(torch.cat(parts), pinned=True)
        gamma[:] = out[:n * C].reshape(n, C)
        boundary[:] = out[n * C:n * C + n]
        change[:] = out[n * C + n:n * C + 2 * n]
        carry[:] = out[n * (C + 2):n * (C + 2) + C]
        if self.exact:
            return 0.0, -math.inf
        cert, log_ratio, anyf, anyb = out[-4:]
        fstore._cache["any_loss"], bstore._cache["any_loss"] = bool(anyf), bool(anyb)
        return float(cert), float(log_ratio)


__all__ = ["gpu_available", "gpu_backend", "resolve_device", "interpreting", "GpuBackend", "contig_stream",
           "DeviceChunk", "DeviceModel", "nvidia_device_possible"]
