"""Fast text rendering of the numbers flashseg writes: ``%.6g`` and integers.

A genome at 200 bp has ~15 M bins; a per-bin bedGraph is millions of lines,
and Python's ``'%.6g' % v`` per value costs seconds. These kernels produce
exactly the bytes Python's ``%.6g`` does:

* 6 significant digits, correctly rounded (half to even on the exact binary
  value). The compiled path computes ``v * 10**k`` in floating point, which
  is exact for the powers used except for one rounding; any value whose
  scaled fraction lies within 1e-6 of a rounding tie, and any value outside
  the fast path's range, is rounded by Python itself instead;
* fixed notation when the rounded exponent X satisfies -4 <= X < 6, else
  ``d.ddddde±XX``; trailing zeros (and a bare ``.``) removed.

One deliberate difference: -0.0 is written ``0`` (Python writes ``-0``).

:func:`g6_digits` returns, per value, the 6-digit integer mantissa and the
decimal exponent; equal pairs print equally, which is what bedGraph run
merging needs. :func:`render_columns` writes tab-separated lines.

Import this module lazily (it compiles with numba): the writers do.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def digits_kernel(values, mant, exp10, exact):
    for i in range(values.shape[0]):
        v = values[i]
        exact[i] = False
        if v != v or v == np.inf or v == -np.inf:
            continue
        a = abs(v)
        if a == 0.0:
            mant[i] = 0
            exp10[i] = 0
            exact[i] = True
            continue
        e = int(math.floor(math.log10(a)))
        k = 5 - e
        if k > 22 or k < -22:
            continue
        q = a * 10.0 ** k if k >= 0 else a / 10.0 ** (-k)
        if abs(q - 999999.5) < 1e-6 or abs(q - 99999.5) < 1e-6:
            continue  # which decade it rounds into is a tie question too
        if q >= 999999.5:
            e += 1
            k -= 1
            if k < -22:
                continue
            q = a * 10.0 ** k if k >= 0 else a / 10.0 ** (-k)
        elif q < 99999.5:
            e -= 1
            k += 1
            if k > 22:
                continue
            q = a * 10.0 ** k if k >= 0 else a / 10.0 ** (-k)
        fl = math.floor(q)
        frac = q - fl
        if abs(frac - 0.5) < 1e-6:
            continue  # too close to a tie to trust one rounding: Python decides
        n = int(fl) + (1 if frac > 0.5 else 0)
        if n >= 1000000:
            n //= 10
            e += 1
        mant[i] = -n if v < 0 else n
        exp10[i] = e
        exact[i] = True

_DIGIT_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8).copy()


@njit(cache=True, nogil=True)
def _n_digits(value):
    n = 1
    while value >= 10000:
        value //= 10000
        n += 4
    if value >= 100:
        n += 2
        value //= 100
    if value >= 10:
        n += 1
    return n


@njit(cache=True, nogil=True)
def _put_int(buf, pos, value):
    if value < 0:
        buf[pos] = 45  # '-'
        pos += 1
        value = -value
    n = _n_digits(value)
    end = pos + n
    # two digits per division, from a table of "00".."99"
    while value >= 100:
        q = value // 100
        r = (value - q * 100) * 2
        end -= 2
        buf[end] = _DIGIT_PAIRS[r]
        buf[end + 1] = _DIGIT_PAIRS[r + 1]
        value = q
    if value >= 10:
        buf[end - 2] = _DIGIT_PAIRS[value * 2]
        buf[end - 1] = _DIGIT_PAIRS[value * 2 + 1]
    else:
        buf[end - 1] = 48 + value
    return pos + n


@njit(cache=True, nogil=True)
def _put_g6(buf, pos, m, e):
    if m == 0:
        buf[pos] = 48
        return pos + 1
    if m < 0:
        buf[pos] = 45
        pos += 1
        m = -m
    # six digits of m, most significant first; nd = digits left after
    # stripping trailing zeros
    nd = 6
    while nd > 1 and m % 10 == 0:
        m //= 10
        nd -= 1
    d0 = pos  # digits are written in place, then moved where the layout needs them
    if -4 <= e < 6:
        if e >= 0:
            int_digits = e + 1
            if nd <= int_digits:
                pos = _put_int(buf, pos, m)
                for _ in range(int_digits - nd):
                    buf[pos] = 48
                    pos += 1
            else:
                end = pos + nd + 1
                for j in range(nd - 1, -1, -1):
                    slot = pos + j + (1 if j >= int_digits else 0)
                    buf[slot] = 48 + m % 10
                    m //= 10
                buf[pos + int_digits] = 46
                pos = end
        else:
            buf[pos] = 48
            buf[pos + 1] = 46
            pos += 2
            for _ in range(-e - 1):
                buf[pos] = 48
                pos += 1
            pos = _put_int(buf, pos, m)
    else:
        if nd > 1:
            for j in range(nd - 1, -1, -1):
                slot = d0 + j + (1 if j >= 1 else 0)
                buf[slot] = 48 + m % 10
                m //= 10
            buf[d0 + 1] = 46
            pos = d0 + nd + 1
        else:
            buf[pos] = 48 + m
            pos += 1
        buf[pos] = 101  # 'e'
        buf[pos + 1] = 45 if e < 0 else 43
        pos += 2
        ae = -e if e < 0 else e
        if ae < 10:
            buf[pos] = 48
            pos += 1
        pos = _put_int(buf, pos, ae)
    return pos


@njit(cache=True, nogil=True)
def render_kernel(prefix, kinds, ints, mants, exps, table, table_offsets, buf):
    """Lines of `prefix` + tab-separated columns; kinds[c]: 0 integer (next
    ints column), 1 %.6g (next mants/exps pair), 2 string (next ints column
    indexes `table`, a concatenation delimited by `table_offsets`).
    Returns the number of bytes written to buf."""
    n = ints.shape[0] if ints.shape[1] > 0 else mants.shape[0]
    pos = 0
    for i in range(n):
        for j in range(prefix.shape[0]):
            buf[pos + j] = prefix[j]
        pos += prefix.shape[0]
        ii = 0
        ff = 0
        for c in range(kinds.shape[0]):
            if c > 0:
                buf[pos] = 9
                pos += 1
            kind = kinds[c]
            if kind == 0:
                pos = _put_int(buf, pos, ints[i, ii])
                ii += 1
            elif kind == 1:
                pos = _put_g6(buf, pos, mants[i, ff], exps[i, ff])
                ff += 1
            else:
                k = ints[i, ii]
                ii += 1
                for j in range(table_offsets[k], table_offsets[k + 1]):
                    buf[pos] = table[j]
                    pos += 1
        buf[pos] = 10
        pos += 1
    return pos


def g6_digits(values) -> tuple[np.ndarray, np.ndarray]:
    """(mantissa int64, decimal exponent int64) of ``%.6g`` for every value.

    Value = mantissa * 10**(exponent - 5) after rounding (mantissa 0 for 0).
    Only finite values are supported.
    """
    values = np.ascontiguousarray(values, dtype=np.float64)
    if not np.isfinite(values).all():
        raise ValueError("only finite values can be rendered")
    mant = np.zeros(values.shape[0], dtype=np.int64)
    exp10 = np.zeros(values.shape[0], dtype=np.int64)
    exact = np.zeros(values.shape[0], dtype=np.bool_)
    digits_kernel(values, mant, exp10, exact)
    for i in np.flatnonzero(~exact).tolist():
        # '%.5e' is correctly rounded to 6 significant digits by Python itself.
        text = "%.5e" % values[i]
        digits, exponent = text.split("e")
        sign = -1 if digits.startswith("-") else 1
        mant[i] = sign * int(digits.lstrip("-").replace(".", ""))
        exp10[i] = int(exponent)
    return mant, exp10


def render(prefix: str, kinds: str, ints: np.ndarray, mants: np.ndarray, exps: np.ndarray,
           strings=()) -> str:
    """:func:`render_bytes` decoded to text."""
    return render_bytes(prefix, kinds, ints, mants, exps, strings).decode()


def render_bytes(prefix: str, kinds: str, ints: np.ndarray, mants: np.ndarray, exps: np.ndarray,
                 strings=()) -> bytes:
    """Tab-separated lines ``prefix + col0 \t col1 ...``; ``kinds`` has one
    letter per column: ``i`` takes the next column of ``ints``, ``s`` the
    next column of ``ints`` as an index into ``strings``, ``g`` the next
    (mantissa, exponent) pair from :func:`g6_digits`. Returns UTF-8 bytes."""
    n = max(len(ints), len(mants))
    ints = np.ascontiguousarray(np.asarray(ints, dtype=np.int64).reshape(n, -1))
    mants = np.ascontiguousarray(np.asarray(mants, dtype=np.int64).reshape(n, -1))
    exps = np.ascontiguousarray(np.asarray(exps, dtype=np.int64).reshape(n, -1))
    prefix_bytes = np.frombuffer(prefix.encode(), dtype=np.uint8)
    kind_codes = np.array(["igs".index(k) for k in kinds], dtype=np.int64)
    encoded = [str(v).encode() for v in strings]
    table = np.frombuffer(b"".join(encoded) or b"\0", dtype=np.uint8)
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    longest = max((len(e) for e in encoded), default=0)
    # an int64 takes <= 20 bytes, a %.6g value <= 13 ("-1.23456e-100"), plus tabs and a newline
    width = prefix_bytes.size + (21 + longest) * kind_codes.size + 1
    buf = np.empty(max(1, n * width), dtype=np.uint8)
    used = render_kernel(prefix_bytes, kind_codes, ints, mants, exps, table, offsets, buf)
    return buf[:used].tobytes()


def render_columns(prefix: str, kinds: str, ints, floats) -> str:
    """:func:`render` with the ``g`` columns given as floats."""
    floats = np.asarray(floats, dtype=np.float64)
    n = max(len(ints), len(floats))
    floats = floats.reshape(n, -1)
    mants, exps = g6_digits(floats.ravel())
    return render(prefix, kinds, ints, mants.reshape(floats.shape), exps.reshape(floats.shape))
