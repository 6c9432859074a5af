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
from .cpu import LN2_HI, LN2_LO, CpuBackend, PreparedModel, _split_z, positive_log
from .model import SemiMarkovModel


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


def _device_chunk(chunk, device) -> DeviceChunk:
    if isinstance(chunk, DeviceChunk):
        return chunk
    import torch

    def put(a, dtype):
        # np.array copies: a reversed one-row chunk can carry a negative stride.
        return torch.from_numpy(np.array(a, dtype=dtype, order="C")).to(device)[None]

    step = -1 if getattr(chunk, "reverse", False) else 1   # backward pass: rows last to first
    return DeviceChunk(put(chunk.x[::step], np.float64), put(chunk.f[::step], np.float64),
                       put(chunk.k[::step], np.int64))


class _DeviceState:
    """Common plumbing: a dict of (1, ...) device tensors and host views on demand."""

    _host_fields: tuple = ()
    scale_offset = (0, 0.0)   # as cpu._KernelState.scale_offset
    _guess_E = 0.0

    def as_guess(self, t: int) -> None:
        """As cpu._KernelState.as_guess: a fresh state becomes a guess at boundary t."""
        self.dev["istate"][0, 0] = t
        self.dev["istate"][0, 1] = 0
        self.dev["E"].fill_(self._guess_E)
        self._host = {}

    def _carried(self):
        return [self.ring.ravel(), self.tail, self.A, self.E]

    def junction_view(self):
        """As the CPU states' junction_view (log values; exponent or 0; tail starts or None)."""
        return np.concatenate(self._carried()), 0, None

    def copy(self):
        """An independent copy (a checkpoint): the device tensors are cloned."""
        return self._clone_into(type(self).__new__(type(self)))

    def _clone_into(self, out):
        out.dm = self.dm
        out.dev = {key: v.clone() for key, v in self.dev.items()}
        out._host = {}
        out.scale_offset = self.scale_offset
        return out

    def _host_view(self, key):
        if key not in self._host:
            # A copy: under the interpreter .cpu() aliases the live tensor.
            self._host[key] = self.dev[key][0].cpu().numpy().copy()
        return self._host[key]

    @property
    def istate(self) -> np.ndarray:
        return self._host_view("istate")

    @property
    def t(self) -> int:
        return int(self.istate[0])

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

    def _n(self, dc):
        import torch

        return torch.tensor([dc.x.shape[1]], dtype=torch.int64, device=self.dm.device)


def _new_state(dm: DeviceModel, fill_ring: float, E0: np.ndarray, sexp0: int, C: int, K: int):
    import torch

    dev = dm.device
    return {
        "ring": torch.full((1, C, K), fill_ring, dtype=torch.float64, device=dev),
        "tail": torch.full((1, C), fill_ring, dtype=torch.float64, device=dev),
        "A": torch.full((1, C), fill_ring, dtype=torch.float64, device=dev),
        "E": torch.tensor(np.array(E0, dtype=np.float64), device=dev)[None].contiguous(),
        "istate": torch.tensor([[0, sexp0]], dtype=torch.int64, device=dev),
    }


class GpuLinearState(_DeviceState):
    """Certified linear-space forward state on the device (see triton/linear.py)."""

    def __init__(self, dm: DeviceModel):
        import torch

        pm = dm.pm
        self.dm = dm
        self.dev = _new_state(dm, 0.0, pm.init_m, pm.init_k, pm.C, pm.K)
        self.dev["ghost"] = torch.full((1, pm.C), -math.inf, dtype=torch.float64, device=dm.device)
        self._host = {}

    @property
    def ghost(self) -> np.ndarray:
        return self._host_view("ghost")

    _guess_E = 1.0

    def set_ghost(self, ghost: np.ndarray) -> None:
        import torch

        self.dev["ghost"][0] = torch.as_tensor(np.asarray(ghost, dtype=np.float64), device=self.dm.device)
        self._host = {}

    def junction_view(self):
        return np.concatenate([positive_log(v) for v in self._carried()]), int(self.istate[1]), None

    def advance(self, chunk, store=None) -> int:
        from .triton.linear import linear_forward

        dc = _device_chunk(chunk, self.dm.device)
        dstore = _device_store(dc, self.dm, store)
        with _launch_turn:
            status = linear_forward(dc.x, dc.f, dc.k, self._n(dc), self.dev, self.dm.linear, dstore)
        self._host = {}
        _copy_store_back(dstore, store)
        return int(status[0])

    def log_partition(self) -> tuple[float, float, int]:
        zm = float(np.dot(self.A, self.dm.pm.final_m))
        return _split_z(zm, int(self.istate[1]) + self.dm.pm.final_k)

    def log_ring_entry(self, c: int, slot: int) -> float:
        """log of the ring value (start (-slot) mod K's running product) of label c."""
        v = self.ring[c, slot]
        return math.log(v) + int(self.istate[1]) * math.log(2.0) if v > 0 else -math.inf

    def lost_at_end(self, log_z: float) -> float:
        pm = self.dm.pm
        g = self.ghost
        ok = np.isfinite(g) & np.isfinite(pm.final)
        return float(np.sum(pm.mw[ok] * np.exp(g[ok] + pm.final[ok] - log_z)))


class GpuLogSpaceState(_DeviceState):
    """Exact log-space forward state on the device (see triton/logspace.py)."""

    def __init__(self, dm: DeviceModel):
        pm = dm.pm
        self.dm = dm
        self.dev = _new_state(dm, -math.inf, pm.initial, 0, pm.C, pm.K)
        self._host = {}

    @property
    def ghost(self) -> np.ndarray:
        return np.full(self.dm.pm.C, -math.inf)

    def advance(self, chunk, store=None) -> int:
        from .triton.logspace import logspace_forward

        dc = _device_chunk(chunk, self.dm.device)
        dstore = _device_store(dc, self.dm, store)
        with _launch_turn:
            status = logspace_forward(dc.x, self._n(dc), self.dev, self.dm.log, dstore)
        self._host = {}
        _copy_store_back(dstore, store)
        return int(status[0])

    def log_partition(self) -> tuple[float, float, int]:
        v = self.A + self.dm.pm.final
        m = v.max()
        if not np.isfinite(m):
            return -math.inf, 0.0, 0
        k = int(math.floor(m / math.log(2.0)))
        return _split_z(float(np.sum(np.exp(v - k * math.log(2.0)))), k)

    def log_ring_entry(self, c: int, slot: int) -> float:
        return float(self.ring[c, slot])

    def lost_at_end(self, log_z: float) -> float:
        return 0.0


class GpuViterbiState(_DeviceState):
    """Max-plus forward state on the device (see triton/viterbi.py)."""

    def __init__(self, dm: DeviceModel):
        import torch

        pm = dm.pm
        self.dm = dm
        self.dev = _new_state(dm, -math.inf, pm.initial, 0, pm.C, pm.K)
        self.dev["tail_start"] = torch.full((1, pm.C), -1, dtype=torch.int64, device=dm.device)
        self._host = {}

    @property
    def tail_start(self) -> np.ndarray:
        return self._host_view("tail_start")

    def junction_view(self):
        return (np.concatenate(self._carried()), 0,
                np.where(np.isfinite(self.tail), self.tail_start, -1))

    def advance(self, chunk, store=None) -> int:
        import torch

        from .triton.viterbi import viterbi_forward

        dc = _device_chunk(chunk, self.dm.device)
        dstore = None
        if store is not None:
            rows = dc.x.shape[1] + 1
            C = self.dm.pm.C
            dstore = {key: torch.empty((1, rows, C), dtype=torch.int64, device=self.dm.device)
                      for key in ("a_start", "e_prev")}
        with _launch_turn:
            viterbi_forward(dc.x, self._n(dc), self.dev, self.dm.log, dstore)
        self._host = {}
        if store is not None:
            store.a_start[:] = dstore["a_start"][0].cpu().numpy()
            store.e_prev[:] = dstore["e_prev"][0].cpu().numpy()
        return -1

    def best_final(self) -> tuple[float, int]:
        v = self.A + self.dm.pm.final
        c = int(np.argmax(v))  # lowest label on ties
        return float(v[c]), c


def _device_store(dc: DeviceChunk, dm: DeviceModel, store):
    if store is None:
        return None
    import torch

    rows = dc.x.shape[1] + 1
    C = dm.pm.C
    out = {key: torch.empty((1, rows, C), dtype=torch.float64, device=dm.device)
           for key in ("E", "A", "L", "ghost")}
    out["sexp"] = torch.empty((1, rows), dtype=torch.int64, device=dm.device)
    return out


def _copy_store_back(dstore, store) -> None:
    if store is None:
        return
    store.device_rows = {key: dstore[key] for key in (("E", "A", "L", "sexp") if store.with_tail else
                                                      ("E", "A", "sexp"))}
    store.device_reversed = False
    store.E[:] = dstore["E"][0].cpu().numpy()
    store.A[:] = dstore["A"][0].cpu().numpy()
    if store.with_tail:
        store.L[:] = dstore["L"][0].cpu().numpy()
    store.ghost[:] = dstore["ghost"][0].cpu().numpy()
    store.ghost_flag[:] = np.isfinite(store.ghost).any(axis=1)
    store.sexp[:] = dstore["sexp"][0].cpu().numpy()


class GpuBackend:
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
    worker_context = staticmethod(worker_stream)
    settle = staticmethod(settle_stream)

    def forward_state(self, backward: bool = False):
        dm = self.dev_bwd if backward else self.dev_fwd
        return GpuLogSpaceState(dm) if self.exact else GpuLinearState(dm)

    def viterbi_state(self) -> GpuViterbiState:
        return GpuViterbiState(self.dev_fwd)

    def new_store(self, n_rows: int, with_tail: bool = False):
        # Host rows in the CPU backend's layout (logs when exact): the driver's
        # trackers and sampler read them the same way for both backends.
        return CpuBackend.new_store(self, n_rows, with_tail)

    def sample_rows(self, store):
        """The walk's rows on the device: x comes with :meth:`walk_chunk`; here
        the logs of the store's E, A and L at true scale (as ForwardStore.log_E)."""
        k, r = store.log_offset
        rows = {}
        for key in ("E", "A", "L"):
            v = store.device_rows[key][0]
            if store.is_log:
                rows["l" + key] = (v - (k * LN2_HI + k * LN2_LO + r)).contiguous() if k or r else v
            else:
                scale = (store.device_rows["sexp"][0] - k).to(v.dtype) * math.log(2.0) - r
                rows["l" + key] = (v.log() + scale[:, None]).contiguous()
        return rows

    def walk_chunk(self, walks, rngs, a, b, chunk, rows, ring_log) -> None:
        """Every sample's walk through chunk [a, b) at once: one program per sample
        (triton/sample.py), relaunched until every walk has left the chunk. Between
        launches the host supplies what the programs asked for: uniforms from each
        sample's own generator, ring entries, and room (it collects the segments)."""
        import torch

        from . import cpu_kernels as kern
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
        # The walk reads the scores only (not the factors _device_chunk would upload too).
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
            if (code == kern.WALK_CHUNK_DONE).all():
                break
            if (code == kern.WALK_ZERO).any():
                raise AssertionError("sampling from an all-zero distribution")
            if (code == kern.WALK_NEED_SPACE).any():
                collect()
            hungry = np.flatnonzero(code == kern.WALK_NEED_UNIFORMS)
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
            for label in np.unique(state["need"].cpu().numpy()[code == kern.WALK_NEED_RING]):
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
        on them, linear or log space (the exact fallback); the linear path's
        certificate on the host from the ghost rows (most chunks have none).
        """
        dev_f, dev_b = fstore.device_rows, bstore.device_rows
        if dev_f is None or dev_b is None or fstore.device_reversed or n == 0:
            return CpuBackend.posterior_chunk(self, fstore, bstore, log_z, zm, zexp, carry,
                                              first_boundary, n, with_last, gamma, boundary, change)
        import torch

        from .triton.posterior import posterior_combine

        dev = self.device
        if not hasattr(self, "_tr_diag"):
            self._tr_diag = torch.tensor(np.ascontiguousarray(np.diag(self.fwd.Tr)), device=dev)
            self._trans = torch.tensor(np.ascontiguousarray(self.fwd.trans), device=dev)
        carry_dev = torch.tensor(carry, dtype=torch.float64, device=dev)[None].contiguous()
        n_dev = torch.tensor([n], dtype=torch.int64, device=dev)
        first_dev = torch.tensor([first_boundary], dtype=torch.int64, device=dev)
        with _launch_turn:
            g, b, c = posterior_combine(dev_f, dev_b, self._tr_diag, n_dev, first_dev, carry_dev,
                                        1.0 / zm if zm > 0 else 0.0, zexp, b_reversed=bstore.device_reversed,
                                        log_z=log_z if self.exact else None, trans=self._trans, nmax=n)
        gamma[:] = g[0].cpu().numpy()
        boundary[:] = b[0].cpu().numpy()
        change[:] = c[0].cpu().numpy()
        carry[:] = carry_dev[0].cpu().numpy()
        if self.exact:
            return 0.0
        return certificate_terms(fstore, bstore, self.fwd.mw, log_z, n + 1 if with_last else n)


def certificate_terms(fstore, bstore, mw, log_z, rows) -> float:
    """The certificate's sum over a chunk's rows (as cpu_kernels.posterior_chunk):
    forward losses continue at most like B, backward losses like E."""
    total = 0.0
    for lost, other in ((fstore, bstore), (bstore, fstore)):
        flagged = np.flatnonzero(lost.ghost_flag[:rows])
        if flagged.size == 0:
            continue
        ghost = lost.ghost[flagged]
        cont = other.E[flagged]
        ok = np.isfinite(ghost) & (cont > 0.0)
        with np.errstate(divide="ignore"):
            terms = mw[None, :] * np.exp(ghost + np.log(cont) + other.sexp[flagged][:, None] * math.log(2.0)
                                         - log_z)
        total += float(terms[ok].sum())
    return total


__all__ = ["gpu_available", "gpu_backend", "resolve_device", "interpreting", "GpuBackend", "contig_stream",
           "DeviceChunk", "DeviceModel", "nvidia_device_possible"]
