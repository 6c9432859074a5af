"""Compile the kernels for a GPU that is not there (ahead of time, no driver).

The Triton interpreter runs the kernels' Python and misses what only the
compiler rejects (a non-constexpr global, a type it cannot lower, an op with
no fp64 form). :func:`compile_launch` runs a launcher (``linear_forward``
and friends) on CPU tensors with its kernel swapped for a recorder, turns the
recorded arguments into the kernel's signature and compiles it for ``target``
(default sm_90, the H100/H200) with the ptxas that ships inside triton. The
tests use it so that CI, which has no GPU, still compiles every kernel the
way a GPU run would; ``python tests/triton_aot.py`` prints the registers
and spills ptxas reports for every kernel at the standard shapes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_DTYPES = {torch.float64: "fp64", torch.float32: "fp32", torch.int64: "i64", torch.int32: "i32",
           torch.int16: "i16", torch.int8: "i8", torch.uint8: "u8", torch.bool: "i1"}


@dataclass
class Compiled:
    """What ptxas reported for one compiled launch."""

    kernel: str
    constants: dict
    num_warps: int
    registers: int
    spills: int
    shared_bytes: int
    ring_label_warps: int | None   # warps along the label axis of the 3-D ring tile (None: no such tile)


class _Recorder:
    """Stands in for a ``@triton.jit`` kernel: ``kernel[grid](*args, **kw)`` records the call."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def __getitem__(self, grid):
        def record(*args, **kwargs):
            self.calls.append((args, kwargs))
        return record


def _arg_type(value) -> str:
    if isinstance(value, torch.Tensor):
        return "*" + _DTYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    raise TypeError(f"cannot type kernel argument {value!r}")


def compile_recorded(fn, args, kwargs, target: GPUTarget) -> Compiled:
    """Compile one recorded launch of the jit function ``fn`` for ``target``."""
    kwargs = dict(kwargs)
    options = {key: kwargs.pop(key) for key in ("num_warps", "num_stages") if key in kwargs}
    names = [p.name for p in fn.params]
    values = dict(zip(names, args)) | kwargs
    signature, constants = {}, {}
    for p in fn.params:
        if p.is_constexpr:
            signature[p.name] = "constexpr"
            constants[p.name] = values[p.name]
        else:
            signature[p.name] = _arg_type(values[p.name])
    src = ASTSource(fn=fn, signature=signature, constexprs=constants)
    kernel = triton.compile(src, target=target, options=options)
    registers, spills = _ptxas_report(kernel.asm["ptx"], target)
    return Compiled(fn.__name__, constants, options.get("num_warps", 4), registers, spills,
                    kernel.metadata.shared, _ring_label_warps(kernel.asm["ttgir"], constants))


def _ring_label_warps(ttgir: str, constants: dict) -> int | None:
    """How many warps the compiler put on the label axis of the ring tile.

    Read off the layout of the first 3-D load (the ring state). The kernels
    are only fast when this equals num_warps (``common.ring_rows_axis``).
    """
    import re

    if "ROWS_AXIS" not in constants:
        return None
    m = re.search(r"tt\.load [^:]*: tensor<\d+x\d+x\d+x!tt\.ptr<\w+>, (#[\w]+)>", ttgir)
    if m is None:
        return None
    layout = re.search(r"^" + re.escape(m.group(1)) + r" = .*warpsPerCTA = \[(\d+), (\d+), (\d+)\]", ttgir,
                       re.M)
    warps = [int(v) for v in layout.groups()]
    label_axis = 1 if constants["ROWS_AXIS"] == 0 else 0
    return warps[label_axis]


def _ptxas_report(ptx: str, target: GPUTarget) -> tuple[int, int]:
    """(registers per thread, spill-store bytes) from ``ptxas -v`` (the loaded-kernel
    attributes that report these need a driver)."""
    import os
    import re
    import subprocess
    import tempfile

    from triton.backends.nvidia.compiler import get_ptxas

    try:
        tool = get_ptxas(target.arch)
    except TypeError:   # older triton: no arch argument
        tool = get_ptxas()
    ptxas = tool.path if hasattr(tool, "path") else tool[0]
    arch = f"sm_{target.arch}a" if target.arch >= 90 else f"sm_{target.arch}"
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "k.ptx")
        with open(path, "w") as fh:
            fh.write(ptx)
        out = subprocess.run([ptxas, "-v", f"--gpu-name={arch}", path, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True, check=True)
    text = out.stderr + out.stdout
    registers = int(re.search(r"Used (\d+) registers", text).group(1))
    spill = re.search(r"(\d+) bytes spill stores", text)
    return registers, int(spill.group(1)) if spill else 0


@contextlib.contextmanager
def _recording(module, kernel_name):
    original = getattr(module, kernel_name)
    recorder = _Recorder(original)
    setattr(module, kernel_name, recorder)
    try:
        yield recorder
    finally:
        setattr(module, kernel_name, original)


def compile_launch(module, kernel_name: str, launch, target: GPUTarget | None = None) -> list[Compiled]:
    """Run ``launch()`` (which calls a launcher of ``module``) and compile each kernel call it made."""
    target = target or GPUTarget("cuda", 90, 32)
    with _recording(module, kernel_name) as recorder:
        launch()
    return [compile_recorded(recorder.fn, args, kwargs, target) for args, kwargs in recorder.calls]


def standard_launches(shapes=((3, 5), (8, 64), (8, 512), (16, 256), (32, 256)), n: int = 16):
    """(family, C, K, store, launch) for every kernel family at each (C, K), store on and off
    (the per-bin combination and the sampler, which only read stored rows, once per shape
    and, for the combination, per space).

    The launches run on CPU tensors (they are only recorded, never run).
    """
    from flashseg.core import gpu
    from flashseg.core.model import SemiMarkovModel
    from flashseg.core.triton import linear, logspace, posterior, sample, viterbi
    import numpy as np

    cpu = torch.device("cpu")
    for C, K in shapes:
        rng = np.random.default_rng(0)
        model = SemiMarkovModel(rng.normal(size=(K, C)), np.log(np.full(C, 0.9)),
                                np.log(rng.dirichlet(np.ones(C), size=C)), np.zeros(C), np.zeros(C))
        dm = gpu.DeviceModel(gpu.PreparedModel(model), cpu)
        dc = gpu.DeviceChunk.from_log(torch.randn(1, n, C, dtype=torch.float64))
        nn = torch.tensor([n])
        for store in (False, True):
            fstore = gpu._row_stores(dc, dm, [True]) if store else None
            vstore = ({key: torch.empty((1, n + 1, C), dtype=torch.int64) for key in ("a_start", "e_prev")}
                      if store else None)
            yield (linear, "linear_forward_kernel", C, K, store,
                   lambda: linear.linear_forward(dc.x, dc.f, dc.k, nn, gpu.GpuLinearState(dm).dev,
                                                 dm.linear, fstore))
            yield (logspace, "logspace_forward_kernel", C, K, store,
                   lambda: logspace.logspace_forward(dc.x, dc.k, nn, gpu.GpuLogSpaceState(dm).dev, dm.log, fstore))
            yield (viterbi, "viterbi_forward_kernel", C, K, store,
                   lambda: viterbi.viterbi_forward(dc.x, nn, gpu.GpuViterbiState(dm).dev, dm.log, vstore))
            if store:   # the combination reads stored rows only: linear, then log space
                rows = {key: fstore[key] for key in ("E", "A", "sexp")}
                for logs in ({}, {"log_rows": True, "trans": dm.log["transT"]}):
                    yield (posterior, "posterior_combine_kernel", C, K, store,
                           lambda logs=logs: posterior.posterior_combine(
                               rows, rows, torch.zeros(C, dtype=torch.float64), nn, torch.tensor([0]),
                               torch.zeros((1, C), dtype=torch.float64), 1.0, 0, b_reversed=True, **logs))
                # the sampler walks through stored rows too: once per shape
                yield (sample, "sample_walk_kernel", C, K, store,
                       lambda: sample.sample_walk(_walk_state(4, 64, 32), dict(
                           x=dc.x[0], lE=fstore["E"][0], lA=fstore["A"][0], lL=fstore["L"][0]),
                           torch.zeros((C, K), dtype=torch.float64), torch.zeros(C, dtype=torch.int64),
                           dm.log, 0, n))


def _walk_state(samples: int, uniforms: int, segments: int) -> dict:
    """The device walk's per-sample buffers (triton/sample.py), zeroed."""
    state = {"st_i": torch.zeros((samples, 4), dtype=torch.int64),
             "st_f": torch.zeros((samples, 2), dtype=torch.float64),
             "u": torch.zeros((samples, uniforms), dtype=torch.float64)}
    for key in ("u_len", "u_pos", "n_out", "code", "need"):
        state[key] = torch.zeros(samples, dtype=torch.int64)
    for key in ("out_s", "out_e", "out_c"):
        state[key] = torch.zeros((samples, segments), dtype=torch.int64)
    return state


def main(argv=None) -> int:
    """Compile every kernel family for sm_90 and print registers and spills per launch."""
    import argparse
    import time

    p = argparse.ArgumentParser(description="compile the Triton kernels for a GPU target, no GPU needed")
    p.add_argument("--arch", type=int, default=90)
    p.add_argument("--quick", action="store_true", help="two small shapes only")
    args = p.parse_args(argv)
    target = GPUTarget("cuda", args.arch, 32)
    shapes = ((3, 5), (8, 64)) if args.quick else ((3, 5), (8, 64), (8, 512), (16, 256), (32, 256))
    print(f"{'kernel':<26} {'C':>3} {'K':>4} {'store':>5} {'warps':>5} {'regs':>5} {'spill B':>7} "
          f"{'label warps':>11} {'s':>5}")
    for module, name, C, K, store, launch in standard_launches(shapes):
        t0 = time.perf_counter()
        for c in compile_launch(module, name, launch, target):
            print(f"{name:<26} {C:>3} {K:>4} {store!s:>5} {c.num_warps:>5} {c.registers:>5} {c.spills:>7} "
                  f"{c.ring_label_warps!s:>11} {time.perf_counter() - t0:5.1f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
