"""Posteriors of called segments, streamed through the emit pass.

A tracker is fed every chunk's per-bin posteriors and its forward and
backward rows, in order, and finishes with log Z: the exact-segment and
merged-run posteriors of docs/algorithms.md ("Posteriors of segments and
runs") for the segments the caller names or the per-bin argmax discovers.
"""
from __future__ import annotations

import math

import numpy as np

from .results import SegmentCalls


def log_duration_weight(pm, labels: np.ndarray, d: np.ndarray) -> np.ndarray:
    """phi_c(d) for arrays of labels and durations (tail included)."""
    K = pm.K
    labels = np.asarray(labels, dtype=np.int64)
    d = np.asarray(d, dtype=np.int64)
    phi = pm.model.duration[np.minimum(d, K) - 1, labels]
    lrho = pm.lrho[labels]
    over = d > K
    with np.errstate(invalid="ignore"):
        tail = phi + (d - K) * lrho
    return np.where(over, np.where(np.isfinite(lrho), tail, -np.inf), phi)


def _lse_rows(a):
    m = a.max(axis=1)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore", under="ignore"):
        return np.log(np.exp(a - shift[:, None]).sum(axis=1)) + shift


class SegmentTracker:
    """Streams the posteriors of a tiling set of segments through the emit pass.

    ``kind`` is "exact" (P of that exact segment; b at its ends) or "run"
    (P of the merged run; chg at its ends). Segment starts are either known up
    front (``starts``/``labels``) or discovered per chunk from gamma
    (``decode=True``: per-bin argmax, lowest label on ties). Everything is
    vectorised per chunk: an HMM can have a segment per bin.
    """

    def __init__(self, pm, T: int, kind: str, starts=None, labels=None, decode=False):
        self.pm = pm
        self.T = T
        self.kind = kind
        self.decode = decode
        self.known_starts = None if starts is None else np.asarray(starts, dtype=np.int64)
        self.known_labels = None if labels is None else np.asarray(labels, dtype=np.int64)
        self.cursor = 0
        self.prev_label = -1
        # the segment still running: start, label, log left factor, S, gamma sum, start_post
        self.open = None
        self.parts = []
        self._run_weights = {}

    def _starts_in(self, a, b, gamma):
        if not self.decode:
            ks = self.known_starts
            i0 = self.cursor
            i1 = int(np.searchsorted(ks, b, side="left"))
            self.cursor = i1
            return ks[i0:i1], self.known_labels[i0:i1]
        lab = np.argmax(gamma, axis=1)
        prev = np.concatenate([[self.prev_label], lab[:-1]])
        idx = np.flatnonzero(lab != prev)
        self.prev_label = int(lab[-1])
        return a + idx, lab[idx]

    def _side_log(self, store, rows, labels, links, edge):
        """log of a segment's outer factor at ``rows`` of ``store``: its own E-side
        value for exact segments (and at the contig ends); for runs, the flow to or
        from the *other* labels, ``links[k, c]`` being the log transition weight."""
        own = store.log_E(rows, labels)
        if self.kind == "exact":
            return own
        C = self.pm.C
        other = store.log_A(np.repeat(rows, C), np.tile(np.arange(C), len(rows))).reshape(len(rows), C)
        other = other + links
        other[np.arange(len(rows)), labels] = -np.inf
        return np.where(edge, own, _lse_rows(other))

    def _left_log(self, rows, labels, starts, fstore):
        """E at the start, or the inflow from other labels (Tr[c', label])."""
        return self._side_log(fstore, rows, labels, self.pm.trans[:, labels].T, starts == 0)

    def _right_log(self, rows, labels, ends, bstore):
        """B at the end, or the outflow to other labels (Tr[label, c2])."""
        return self._side_log(bstore, rows, labels, self.pm.trans[labels], ends == self.T)

    def feed(self, a, b, x, gamma, boundary, change, fstore, bstore):
        starts, labels = self._starts_in(a, b, gamma)
        post = boundary if self.kind == "exact" else change
        lead = self.open is not None and (len(starts) == 0 or starts[0] != a)
        cut = starts - a
        if lead:
            cut = np.concatenate([[0], cut])
        # Sum each piece over its own label only: gather that column per bin first.
        piece_labels = np.concatenate([[self.open["label"]], labels]) if lead else labels
        lengths = np.diff(np.append(cut, b - a))
        bin_label = np.repeat(piece_labels, lengths)
        from .host_kernels import piece_sums

        carry = (self.open["S"], self.open["G"]) if lead else (0.0, 0.0)
        xs, gs = piece_sums(np.ascontiguousarray(x), np.ascontiguousarray(gamma),
                            bin_label.astype(np.int64), cut.astype(np.int64), *carry)
        if lead:
            self.open["S"], self.open["G"] = float(xs[0]), float(gs[0])
            xs, gs = xs[1:], gs[1:]
        k = len(starts)
        if k:
            rows = starts - a
            new_left = self._left_log(rows, labels, starts, fstore)
            new_S = xs
            new_G = gs
            new_sp = np.where(starts == 0, 1.0, post[rows])
            # Segments closed in this chunk: the open one, then all new but the last.
            if self.open is not None:
                o = self.open
                c_start = np.concatenate([[o["start"]], starts[:-1]])
                c_label = np.concatenate([[o["label"]], labels[:-1]])
                c_left = np.concatenate([[o["left"]], new_left[:-1]])
                c_S = np.concatenate([[o["S"]], new_S[:-1]])
                c_G = np.concatenate([[o["G"]], new_G[:-1]])
                c_sp = np.concatenate([[o["start_post"]], new_sp[:-1]])
                c_end = starts
            else:
                c_start, c_label, c_left = starts[:-1], labels[:-1], new_left[:-1]
                c_S, c_G, c_sp = new_S[:-1], new_G[:-1], new_sp[:-1]
                c_end = starts[1:]
            self._close(c_start, c_end, c_label, c_left, c_S, c_G, c_sp, c_end - a, bstore)
            self.open = {"start": int(starts[-1]), "label": int(labels[-1]), "left": float(new_left[-1]),
                         "S": float(new_S[-1]), "G": float(new_G[-1]), "start_post": float(new_sp[-1])}
        if b == self.T and self.open is not None:
            o = self.open
            self._close(np.array([o["start"]]), np.array([self.T]), np.array([o["label"]]),
                        np.array([o["left"]]), np.array([o["S"]]), np.array([o["G"]]),
                        np.array([o["start_post"]]), np.array([b - a]), bstore)
            self.open = None

    def _close(self, start, end, label, left, S, G, start_post, end_rows, bstore):
        if len(start) == 0:
            return
        start = np.asarray(start, dtype=np.int64)
        end = np.asarray(end, dtype=np.int64)
        label = np.asarray(label, dtype=np.int64)
        right = self._right_log(end_rows, label, end, bstore)
        log_num = left + right + S + self._log_weight(label, end - start)
        self.parts.append((start, end, label, log_num, np.asarray(start_post, dtype=np.float64),
                           np.asarray(G, dtype=np.float64)))

    def _log_weight(self, labels, d):
        if self.kind == "exact":
            return log_duration_weight(self.pm, labels, d)
        out = log_duration_weight(self.pm, labels, d)
        for c in np.unique(labels).tolist():
            log_self = self.pm.model.transition[c, c]
            if not log_self > -math.inf:
                continue
            sel = labels == c
            need = int(d[sel].max())
            table = self._run_weights.get(c)
            if table is None or len(table) <= need:
                from .host_kernels import run_inner_logweight

                n_max = max(need, 2 * (len(table) if table is not None else 0), 64)
                table = run_inner_logweight(n_max, np.ascontiguousarray(self.pm.model.duration[:, c]),
                                            float(self.pm.lrho[c]), float(log_self))
                self._run_weights[c] = table
            out[sel] = table[d[sel]]
        return out

    def finish(self, log_z, zm, zexp):
        if self.parts:
            start, end, label, log_num, start_post, label_sum = (np.concatenate(v) for v in zip(*self.parts))
        else:
            start = end = np.zeros(0, dtype=np.int64)
            label = np.zeros(0, dtype=np.int64)
            log_num = start_post = label_sum = np.zeros(0)
        with np.errstate(over="ignore"):
            seg_post = np.clip(np.exp(log_num - log_z), 0.0, 1.0)
        end_post = np.append(start_post[1:], 1.0) if len(start_post) else np.zeros(0)
        label_post = np.clip(label_sum / np.maximum(end - start, 1), 0.0, 1.0)
        self.calls = SegmentCalls(start, end, label.astype(np.int32), seg_post, start_post,
                                  end_post, label_post)


class SegmentListTracker(SegmentTracker):
    """Posteriors of any list of segments (overlapping, gapped, in any order).

    Same quantities as :class:`SegmentTracker`, for lists that do not tile
    the contig: each segment's emission and gamma sums are accumulated
    piece by piece as chunks pass (a Python step per segment and chunk it
    overlaps, so meant for lists of moderate size). Results come back in the
    order the segments were given.
    """

    def __init__(self, pm, T: int, kind: str, starts, ends, labels):
        super().__init__(pm, T, kind)
        starts = np.asarray(starts, dtype=np.int64)
        ends = np.asarray(ends, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        bad = (starts < 0) | (ends > T) | (starts >= ends) | (labels < 0) | (labels >= pm.C)
        if bad.any():
            i = int(np.argmax(bad))
            raise ValueError(f"segment ({starts[i]}, {ends[i]}, {labels[i]}) is not inside "
                             f"0 <= start < end <= {T} with a label below {pm.C}")
        self.start, self.end, self.label = starts, ends, labels
        n = len(starts)
        self.left = np.full(n, -np.inf)
        self.right = np.full(n, -np.inf)
        self.S = np.zeros(n)
        self.G = np.zeros(n)
        self.start_post = np.ones(n)
        self.end_post = np.ones(n)
        self.by_start = np.argsort(starts, kind="stable")

    def feed(self, a, b, x, gamma, boundary, change, fstore, bstore):
        post = boundary if self.kind == "exact" else change
        st, en, lab = self.start, self.end, self.label
        starting = np.flatnonzero((st >= a) & (st < b))
        if len(starting):
            rows = st[starting] - a
            self.left[starting] = self._left_log(rows, lab[starting], st[starting], fstore)
            self.start_post[starting] = np.where(st[starting] == 0, 1.0, post[rows])
        ending = np.flatnonzero((en > a) & (en <= b))
        if len(ending):
            self.right[ending] = self._right_log(en[ending] - a, lab[ending], en[ending], bstore)
        at_end = np.flatnonzero((en >= a) & (en < b))      # end boundaries inside this chunk
        self.end_post[at_end] = post[en[at_end] - a]
        from .host_kernels import piece_sums

        x, gamma = np.ascontiguousarray(x), np.ascontiguousarray(gamma)
        for i in np.flatnonzero((st < b) & (en > a)).tolist():
            lo, hi, c = max(st[i], a) - a, min(en[i], b) - a, lab[i]
            # Bin by bin from the segment's running sums, as SegmentTracker.
            xs, gs = piece_sums(x[lo:hi], gamma[lo:hi], np.full(hi - lo, c, dtype=np.int64),
                                np.zeros(1, dtype=np.int64), self.S[i], self.G[i])
            self.S[i], self.G[i] = xs[0], gs[0]

    def finish(self, log_z, zm, zexp):
        log_num = self.left + self.right + self.S + self._log_weight(self.label, self.end - self.start)
        with np.errstate(over="ignore", invalid="ignore"):
            seg_post = np.clip(np.nan_to_num(np.exp(log_num - log_z), nan=0.0), 0.0, 1.0)
        label_post = np.clip(self.G / (self.end - self.start), 0.0, 1.0)
        self.calls = SegmentCalls(self.start, self.end, self.label.astype(np.int32), seg_post,
                                  self.start_post, self.end_post, label_post)
