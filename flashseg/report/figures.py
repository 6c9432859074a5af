"""The report's figures, drawn with matplotlib (imported inside each function, Agg backend,
so ``flashseg --help`` and every other command never load it).

Each function takes arrays and names, returns a matplotlib Figure, and
reads or writes no file; :func:`save` writes a figure as PNG or SVG to a
path the caller chose (a temporary that it publishes).
"""
from __future__ import annotations

import numpy as np

MAX_ANNOTATED_CELLS = 600     # heat maps with more cells show colours only (the numbers are in the TSV)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def rgb(color: str) -> tuple[float, float, float]:
    """A model colour ``"r,g,b"`` (0-255) as matplotlib's 0-1 triple."""
    r, g, b = (int(v) for v in color.split(","))
    return r / 255.0, g / 255.0, b / 255.0


def save(fig, path: str, fmt: str) -> None:
    fig.savefig(path, format=fmt, dpi=100, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)


def close(fig) -> None:
    _pyplot().close(fig)


def _label_strip(ax, colors) -> None:
    """A column of the labels' colours left of a heat map."""
    ax.imshow(np.array([[rgb(c)] for c in colors]), aspect="auto", interpolation="nearest")
    ax.set_xticks([])


def heatmap(values, row_names, row_colors, col_names, *, title: str, colorbar: str,
            scale_columns: bool = False, vmin=None, vmax=None, cmap: str = "Blues", fmt: str = "{:.3g}",
            xlabel: str | None = None, col_colors=None):
    """Rows are labels (with their colours in a strip on the left), columns whatever ``col_names`` say.

    ``scale_columns`` colours each column from its own minimum to maximum
    (ChromHMM's default for enrichments, whose columns differ by orders of
    magnitude); the printed numbers are always the values themselves.
    """
    plt = _pyplot()
    values = np.asarray(values, dtype=np.float64)
    n_rows, n_cols = values.shape
    shown = values
    if scale_columns:
        with np.errstate(invalid="ignore", divide="ignore"):
            lo = np.nanmin(np.where(np.isfinite(values), values, np.nan), axis=0) if n_rows else 0
            hi = np.nanmax(np.where(np.isfinite(values), values, np.nan), axis=0) if n_rows else 1
            span = np.where(hi > lo, hi - lo, 1.0)
            shown = (values - lo) / span
        vmin, vmax = 0.0, 1.0
    width = min(30.0, 2.5 + 0.62 * n_cols + 0.06 * max((len(str(n)) for n in row_names), default=1))
    height = min(30.0, 1.8 + 0.38 * n_rows + 0.07 * max((len(str(n)) for n in col_names), default=1))
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(1, 3, width_ratios=[0.35, max(1.0, 0.6 * n_cols), 0.3], wspace=0.03)
    strip, ax, bar_ax = fig.add_subplot(grid[0]), fig.add_subplot(grid[1]), fig.add_subplot(grid[2])
    _label_strip(strip, row_colors)
    strip.set_yticks(range(n_rows), [str(n) for n in row_names])
    masked = np.ma.masked_invalid(shown)
    image = ax.imshow(masked, aspect="auto", interpolation="nearest", cmap=cmap, vmin=vmin, vmax=vmax)
    ax.set_yticks([])
    ax.set_xticks(range(n_cols), [str(n) for n in col_names], rotation=90 if n_cols > 3 else 0)
    if col_colors is not None:
        for tick, color in zip(ax.get_xticklabels(), col_colors):
            tick.set_bbox({"facecolor": rgb(color), "edgecolor": "none", "pad": 1.5})
    if xlabel:
        ax.set_xlabel(xlabel)
    if n_rows * n_cols <= MAX_ANNOTATED_CELLS:
        for i in range(n_rows):
            for j in range(n_cols):
                v = values[i, j]
                text = "" if not np.isfinite(v) else fmt.format(v)
                dark = np.isfinite(shown[i, j]) and image.norm(shown[i, j]) > 0.6
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
    bar = fig.colorbar(image, cax=bar_ax)
    bar.set_label(colorbar + (" (each column scaled to its own range)" if scale_columns else ""))
    if scale_columns:
        bar.set_ticks([0, 1], labels=["column min", "column max"])
    fig.suptitle(title)
    return fig


def durations(names, colors, lengths, law, *, max_duration: int, has_tail, bin_size: int, law_name: str):
    """Per label: the model's length law against the histogram of the calls' lengths (bins, log y).

    ``lengths``: per label, the calls' lengths in bins; ``law``: (D, C) P(d)
    for d = 1..D; ``has_tail``: (C,) whether the label's law has a geometric
    tail beyond ``max_duration`` (marked by a dashed line).
    """
    plt = _pyplot()
    C = len(names)
    D = law.shape[0]
    cols = min(4, C)
    rows = -(-C // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows), squeeze=False)
    d = np.arange(1, D + 1)
    for c in range(C):
        ax = axes[c // cols][c % cols]
        color = rgb(colors[c])
        x = np.asarray(lengths[c])
        p = law[:, c]
        # each label its own range: most of its calls and of its law
        cdf = np.cumsum(p)
        reach = int(np.searchsorted(cdf, 0.999 * cdf[-1])) + 1 if cdf[-1] > 0 else 1
        top = int(min(D, max(10, reach, np.percentile(x, 99.5) if x.size else 1)))
        width = max(1, -(-top // 60))           # histogram bars of `width` lengths each
        edges = np.arange(1, top + width + 1, width)
        if x.size:
            counts, _ = np.histogram(x, bins=edges)
            density = counts / x.size / width      # mean P(d) over each bar's lengths
            beyond = int((x >= edges[-1]).sum())
            ax.bar(edges[:-1], np.where(density > 0, density, np.nan), width=width, align="edge",
                   color=color, edgecolor=(0.3, 0.3, 0.3), linewidth=0.3,
                   label=f"calls (n={x.size:,}" + (f", {beyond:,} longer" if beyond else "") + ")")
        shown = (p > 0) & (d <= edges[-1])
        ax.plot(d[shown], p[shown], color="black", linewidth=1.2, label=law_name)
        if has_tail[c] and max_duration < edges[-1]:
            ax.axvline(max_duration + 0.5, color="black", linestyle="--", linewidth=0.8)
            ax.text(max_duration + 0.5, 1, " tail", transform=ax.get_xaxis_transform(), va="top", fontsize=7)
        D_c = edges[-1]
        ax.set_yscale("log")
        floor = 0.3 / max(x.size, 1) / width       # below the rarest bar
        ax.set_ylim(max(1e-9, min(floor, p.max() * 1e-3) if p.max() > 0 else floor), 1.5)
        ax.set_xlim(0.5, D_c + 0.5)
        ax.set_title(names[c], fontsize=10, color="black",
                     bbox={"facecolor": color, "edgecolor": "none", "pad": 2, "alpha": 0.9})
        ax.set_xlabel(f"length (bins of {bin_size} bp)", fontsize=8)
        ax.set_ylabel("P(length)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="upper right")
    for c in range(C, rows * cols):
        axes[c // cols][c % cols].axis("off")
    fig.suptitle("segment lengths: the model's law against the calls")
    fig.tight_layout()
    return fig


def locus(contig: str, start: int, end: int, names, colors, calls, posteriors=None, boundaries=None,
          boundaries_name: str = "boundary posterior"):
    """The calls over ``contig:start-end`` coloured by label, the per-label posteriors and the
    boundary posteriors below them.

    ``calls``: (start, end, label) arrays clipped to the window; ``posteriors``:
    (x, P) with P (n, C) at bin centres x (NaN where not decoded);
    ``boundaries``: (start, end, value) arrays of bedGraph intervals.
    """
    plt = _pyplot()
    panels = 1 + (posteriors is not None) + (boundaries is not None)
    ratios = [0.6] + [2.0] * (panels - 1)
    fig, axes = plt.subplots(panels, 1, figsize=(12, 1.2 + 1.9 * (panels - 1) + 0.8), sharex=True,
                             gridspec_kw={"height_ratios": ratios}, squeeze=False)
    axes = axes[:, 0]
    seg_start, seg_end, seg_label = calls
    ax = axes[0]
    for c in range(len(names)):
        mine = seg_label == c
        if mine.any():
            ax.broken_barh(list(zip(seg_start[mine], seg_end[mine] - seg_start[mine])), (0, 1),
                           facecolors=rgb(colors[c]), edgecolors="none")
    ax.set_ylim(0, 1)
    ax.set_yticks([0.5], ["calls"])
    handles = [plt.Rectangle((0, 0), 1, 1, color=rgb(colors[c])) for c in range(len(names))]
    ax.legend(handles, names, ncol=min(len(names), 8), fontsize=7, loc="lower left", bbox_to_anchor=(0, 1.02),
              frameon=False)
    row = 1
    if posteriors is not None:
        x, P = posteriors
        ax = axes[row]
        row += 1
        filled = np.where(np.isnan(P), 0.0, P)
        ax.stackplot(x, filled.T, colors=[rgb(c) for c in colors], step="mid", linewidth=0)
        ax.set_ylim(0, 1)
        ax.set_ylabel("label posterior")
    if boundaries is not None:
        b_start, b_end, value = boundaries
        ax = axes[row]
        ax.bar(b_start, value, width=b_end - b_start, align="edge", color="black", linewidth=0)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(boundaries_name, fontsize=8)
    axes[-1].set_xlim(start, end)
    axes[-1].set_xlabel(f"{contig} (bp)")
    axes[-1].ticklabel_format(axis="x", style="plain", useOffset=False)
    fig.suptitle(f"{contig}:{start + 1:,}-{end:,}", y=1.0)
    fig.tight_layout()
    return fig
