"""The compiled %.6g renderer and the bedGraph writer built on it."""
import io

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flashseg.io.bedgraph import BedGraphSink
from flashseg.io.textformat import render_columns


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=50))
def test_matches_python_percent_g(values):
    values = [0.0 if v == 0 else v for v in values]   # -0.0 is written 0 on purpose
    text = render_columns("", "g", np.zeros((len(values), 0), dtype=np.int64), np.array(values)[:, None])
    assert text.split("\n")[:-1] == ["%.6g" % v for v in values]


def test_ties_and_edges_match_python():
    rng = np.random.default_rng(0)
    edge = [1e-4, 9.999995e-5, 0.1234565, 123456.5, 999999.5, 1234565.0, 1e22, 1e-300, 5e-324,
            1.7e308, 0.5, 1.0, 0.000123456789, 12.5, 0.0000125, 99999.95]
    values = np.concatenate([edge, rng.random(20000), 10 ** rng.uniform(-40, 40, 20000),
                             np.round(rng.random(5000), 7)])
    text = render_columns("", "g", np.zeros((len(values), 0), dtype=np.int64), values[:, None])
    assert text.split("\n")[:-1] == ["%.6g" % v for v in values]


def test_integer_columns():
    ints = np.array([[0, 7, -3], [123456789012, 10, 0]])
    text = render_columns("chrX\t", "iigi", ints, np.array([[0.25], [1e-7]]))
    assert text == "chrX\t0\t7\t0.25\t-3\nchrX\t123456789012\t10\t1e-07\t0\n"


def naive_bedgraph(values, contig, bin_size, length, min_posterior):
    out, run = [], None
    for i, v in enumerate(values):
        text = "%.6g" % v if i >= 1 and v >= min_posterior else None
        if run is not None and text == run[2]:
            run[1] = i + 1
            continue
        if run is not None:
            out.append(f"{contig}\t{run[0] * bin_size}\t{min(run[1] * bin_size, length)}\t{run[2]}\n")
        run = [i, i + 1, text] if text is not None else None
    if run is not None:
        out.append(f"{contig}\t{run[0] * bin_size}\t{min(run[1] * bin_size, length)}\t{run[2]}\n")
    return "".join(out)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 300), chunk=st.integers(1, 80))
def test_bedgraph_sink_is_chunk_invariant_and_correct(seed, n, chunk):
    rng = np.random.default_rng(seed)
    # repeated values and values below the threshold, so runs merge and break
    values = rng.choice([0.0, 1e-5, 0.25, 0.25000001, 0.5, 1.0], size=n)
    values = np.where(rng.random(n) < 0.3, rng.random(n), values)
    length = n * 200 - 13
    stream = io.StringIO()
    sink = BedGraphSink(stream, contig="chr2", bin_size=200, length=length, min_posterior=1e-4)
    for a in range(0, n, chunk):
        sink.add(a, values[a:a + chunk])
    sink.close()
    assert stream.getvalue() == naive_bedgraph(values, "chr2", 200, length, 1e-4)
