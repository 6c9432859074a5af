"""``flashseg fit``: learn a model from observations with EM (docs/algorithms.md, "Fitting: EM")."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import time

import click

from ._common import FiniteFloat, command_line, default_threads, existing_file, load_model_spec
from ._common import INT32_MAX, MAX_DURATION, MAX_LABELS

log = logging.getLogger(__name__)

DEFAULT_FAMILY = {"binary": "bernoulli", "count": "poisson", "continuous": "gaussian"}
# Bins of the sample that k-means sees when a fit starts without --init.
_SAMPLE_BINS = 100_000
# Iterations of the HMM fit a semi-Markov fit without --init starts from.
_WARM_ITERATIONS = 30


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--observations", "observations", multiple=True, required=True, type=existing_file(),
              help="Training observations HDF5 (repeatable: fitted jointly, statistics summed).")
@click.option("--states", type=click.IntRange(1, MAX_LABELS), help="Number of labels (E1..EN) [required without --init].")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model YAML to write.")
@click.option("--max-duration", type=click.IntRange(1, MAX_DURATION), default=None,
              help="K: durations up to K bins as a table, a geometric tail beyond; 1 fits a plain HMM "
                   "[default: 64].")
@click.option("--emission", type=click.Choice(["bernoulli", "poisson", "negative_binomial", "gaussian"]),
              default=None, help="Emission family [default: bernoulli for binary, poisson for count, "
                                 "gaussian for continuous observations].")
@click.option("--init", "init_path", type=existing_file(),
              help="Start from this model (with an emissions section): its labels, K, tail and family.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the initialisation.")
@click.option("--restarts", type=click.IntRange(1, INT32_MAX), default=1, show_default=True,
              help="Fits from different seeds (seed, seed+1, ...); the best training log-likelihood wins.")
@click.option("--max-iter", type=click.IntRange(1, INT32_MAX), default=200, show_default=True)
@click.option("--tol", type=FiniteFloat(min=0), default=1e-4, show_default=True,
              help="Stop when the training log-likelihood changes by less than this, relative.")
@click.option("--validation", "validation", multiple=True, type=existing_file(),
              help="Held-out observations: their log-likelihood is reported every iteration (repeatable).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False),
              help="TSV of every iteration: restart, iteration, training and validation log-likelihood, seconds.")
@click.option("--threads", type=click.IntRange(1, INT32_MAX), default=None,
              help="Threads [default: CPUs this process may use]: contigs and files in parallel.")
@click.option("--chunk-size", type=click.IntRange(1, INT32_MAX), default=32768, show_default=True,
              help="Bins per streaming chunk.")
def fit(observations, states, output, max_duration, emission, init_path, seed, restarts, max_iter, tol,
        validation, log_path, threads, chunk_size):
    """Learn a model from observations with EM on exact expected counts.

    Without --init, states start from k-means++ on a sample of bins (fixed by
    --seed), ordered by their mean signal and named E1..EN; a semi-Markov fit
    (K > 1) starts from a short plain-HMM fit of its own. The model written
    has `final: free`, duration tables with their tails, and the fit's
    provenance in comments.
    """
    from ..io.output import claim, publishing

    ctx = click.get_current_context()
    given = {name for name in ("states", "max_duration", "emission")
             if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE}
    init = load_model_spec(init_path) if init_path else None
    if init is not None:
        if init.emissions is None:
            raise click.UsageError(f"--init {init_path} has no emissions section: fit needs one to start from")
        conflicts = []
        if "states" in given and states != init.n_labels:
            conflicts.append(f"--states {states} (the init model has {init.n_labels} labels)")
        if "max_duration" in given and max_duration != init.max_duration:
            conflicts.append(f"--max-duration {max_duration} (the init model has {init.max_duration})")
        if "emission" in given and emission != init.emissions.family:
            conflicts.append(f"--emission {emission} (the init model's is {init.emissions.family})")
        if conflicts:
            raise click.UsageError("--init sets the labels, K, tail and family; conflicting: " + "; ".join(conflicts))
    elif states is None:
        raise click.UsageError("give --states N (or --init MODEL)")
    claim([("-o/--output", output, []), ("--log", log_path, [])],
          [("--observations", p, []) for p in observations] + [("--validation", p, []) for p in validation]
          + [("--init", p, []) for p in (init.input_files if init is not None else [])])
    with publishing():
        run_fit(observations=observations, validation=validation, output=output, log_path=log_path,
                states=states, max_duration=64 if max_duration is None else max_duration, family=emission,
                init=init, seed=seed, restarts=restarts, max_iter=max_iter, tol=tol,
                threads=threads or default_threads(), chunk_size=chunk_size)


def _open_data(paths, features=None, what="--observations"):
    """Open observation files that agree on kind, bin size and features (by name);
    returns (files, sequences, features, kind, bin_size)."""
    from ..core.fit import Sequence
    from ..errors import DataError
    from ..io.observations import open_observations

    files = [open_observations(p) for p in paths]
    first = files[0]
    features = list(features) if features is not None else list(first.features)
    sequences = []
    for f in files:
        if f.kind != first.kind:
            raise DataError(f"kind {f.kind} differs from {first.path}'s {first.kind}", file=f.path)
        if f.bin_size != first.bin_size:
            raise DataError(f"bin_size {f.bin_size} differs from {first.path}'s {first.bin_size}", file=f.path)
        missing = [m for m in features if m not in f.features]
        if missing:
            raise DataError(f"feature {missing[0]} is not in the file ({what}; the file has "
                            f"{', '.join(f.features)})", file=f.path)
        columns = [f.features.index(m) for m in features]
        for name in f.contigs:
            n = f.n_bins(name)
            if n:
                sequences.append(Sequence(f"{f.path}:{name}", n,
                                          (lambda f, name, columns: lambda a, b: f.read(name, a, b, columns))(
                                              f, name, columns)))
    return files, sequences, features, first.kind, first.bin_size


class _Report:
    """Iteration lines on stderr (one live line on a terminal) and the --log TSV."""

    def __init__(self, log_handle, quiet: bool):
        self.handle = log_handle
        self.quiet = quiet
        self.live = sys.stderr.isatty() and not quiet
        self.restart = 0
        self.stage = ""

    def __call__(self, iteration, train, held, seconds):
        line = (f"{self.stage}iteration {iteration}: log-likelihood {train:.10g}"
                + ("" if held is None else f", validation {held:.10g}") + f" ({seconds:.2f} s)")
        if not self.quiet:
            if self.live:
                sys.stderr.write("\r\033[K" + line)
                sys.stderr.flush()
            else:
                sys.stderr.write(line + "\n")
        if self.handle is not None:
            self.handle.write(f"{self.restart}\t{self.stage.strip() or 'em'}\t{iteration}\t{train!r}\t"
                              f"{'NA' if held is None else repr(held)}\t{seconds:.3f}\n")

    def end_line(self):
        if self.live:
            sys.stderr.write("\n")


def run_fit(*, observations, validation, output, log_path, states, max_duration, family, init, seed, restarts,
            max_iter, tol, threads, chunk_size):
    import hashlib

    import numpy as np

    from .._version import __version__
    from ..core import fit as em
    from ..core.api import warm_up
    from ..core.emissions import KIND_FAMILIES
    from ..errors import DataError
    from ..io.chromhmm import PALETTE
    from ..io.model import model_text
    from ..io.output import open_text_output, write_text
    from ._common import check_memory, compile_notice, wrote

    features = list(init.emissions.features) if init is not None else None
    files, sequences, features, kind, bin_size = _open_data(observations, features)
    held_files = []
    try:
        held = []
        if validation:
            held_files, held, _, held_kind, held_bin = _open_data(validation, features, "--validation")
            if held_kind != kind or held_bin != bin_size:
                raise DataError(f"kind/bin size {held_kind}/{held_bin} differ from the training data's "
                                f"{kind}/{bin_size}", file=validation[0])
        if not sequences:
            raise DataError("no bins to fit", file=observations[0])
        if init is not None:
            family, C, K = init.emissions.family, init.n_labels, init.max_duration
            if init.bin_size != bin_size:
                raise DataError(f"bin_size {bin_size} differs from the init model's {init.bin_size}",
                                file=observations[0])
            names, colors = init.label_names, [lab.color for lab in init.labels]
            allowed = np.isfinite(init.model.transition)
        else:
            family = family or DEFAULT_FAMILY[kind]
            C, K = states, max_duration
            names = [f"E{i + 1}" for i in range(C)]
            colors = [PALETTE[i % len(PALETTE)] for i in range(C)]
            allowed = np.ones((C, C), dtype=bool) if K == 1 else ~np.eye(C, dtype=bool)
        if family not in KIND_FAMILIES[kind]:
            raise DataError(f"{kind} observations cannot be fitted with {family} emissions (use "
                            f"{' or '.join(KIND_FAMILIES[kind])})", file=observations[0])
        from ..core.model import SemiMarkovModel

        shape = SemiMarkovModel(np.zeros((K, C)), None, np.zeros((C, C)), np.zeros(C), np.zeros(C))
        check_memory(shape, chunk_size, threads, "this fit", n_bins=max(seq.n_bins for seq in sequences))
        with compile_notice():
            warm_up("posterior")
        quiet = not log.isEnabledFor(logging.WARNING)
        with open_text_output(log_path, tabix_preset=None) if log_path else contextlib.nullcontext() as log_handle:
            if log_handle is not None:
                log_handle.write("#restart\tstage\titeration\tlog_likelihood\tvalidation\tseconds\n")
            report = _Report(log_handle, quiet)
            best = None
            t_start = time.perf_counter()
            for r in range(restarts):
                report.restart = r + 1
                run_seed = (seed + r) % 2**64   # any --seed, taken mod 2**64 as decode does
                common = dict(threads=threads, chunk_size=chunk_size, validation=held, report=report, tol=tol)
                if init is not None:
                    state = em.FitState(init.model, init.emissions)
                    psd = em.pooled_sd(em.sample_rows(sequences, _SAMPLE_BINS, np.random.default_rng(run_seed)))
                else:
                    start, psd = em.initial_state(sequences, family, features, C, 1 if K > 1 else K,
                                                  seed=run_seed,
                                                  allowed=np.ones((C, C), dtype=bool) if K > 1 else allowed,
                                                  sample_size=_SAMPLE_BINS)
                    state = start
                    if K > 1:
                        report.stage = "hmm "
                        state = em.em(state, sequences, allowed=np.ones((C, C), dtype=bool), pooled_sd=psd,
                                      max_iter=min(_WARM_ITERATIONS, max_iter), **common)
                        state = em.FitState(em.semi_markov_from_hmm(state.model, K, allowed), state.emissions)
                        report.stage = ""
                state = em.em(state, sequences, allowed=allowed, pooled_sd=psd, max_iter=max_iter, **common)
                report.end_line()
                if best is None or state.log_likelihood > best.log_likelihood:
                    best = state
            seconds = time.perf_counter() - t_start
        last = best.history[-1]
        iterations = len(best.history)
        converged = best.converged
        sums = []
        for path in list(observations) + list(validation):
            digest = hashlib.sha256()
            try:
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        digest.update(block)
            except OSError as exc:
                raise DataError(f"cannot read: {exc.strerror}", file=path) from None
            sums.append(f"{'validation' if path in validation else 'training'} {path} sha256={digest.hexdigest()}")
        comments = [f"Fitted by flashseg {__version__} (flashseg fit, EM on exact expected counts).",
                    f"command: {command_line()}", *sums,
                    f"training log-likelihood: {last[1]!r}" + ("" if last[2] is None else
                                                              f"; validation: {last[2]!r}"),
                    f"iterations: {iterations} ({'converged, --tol ' + repr(tol) if converged else 'stopped at --max-iter'})"
                    f"; restarts: {restarts}; seed: {seed}; {seconds:.1f} s"]
        text = model_text(name=os.path.splitext(os.path.basename(output))[0],
                          description=f"{C} labels fitted to {', '.join(os.path.basename(p) for p in observations)}"
                                      f" ({family} emissions, K = {K})",
                          bin_size=bin_size, labels=names, colors=colors, model=best.model,
                          emissions=best.emissions, comments=comments)
        write_text(output, text)
        wrote(f"wrote {output} ({C} labels, K = {K}; log-likelihood {last[1]:.10g} after {iterations} "
              f"iterations, {seconds:.1f} s)")
    finally:
        for f in files + held_files:
            f.close()
