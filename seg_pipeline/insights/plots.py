"""The insight plots, headless: every function draws one matplotlib figure on the Agg canvas and returns PNG bytes.

Figures are built with matplotlib.figure.Figure directly (no pyplot, no global state, no display needed),
so they render in a scheduler, a container or a test run alike. One colour per segment, the same in every plot.

Every name drawn that comes from the data (segments, stores, countries, a note) goes through one helper,
`plot_label` (escaping.plot_label): one line, at most 40 characters with an ellipsis (a 416-character country
once pushed the margins past the figure), `$` escaped (a country `$...$` was read as mathtext).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg", force=False)  # harmless if pyplot is never imported; keeps any later pyplot use headless

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.colors import LinearSegmentedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import PathPatch, Rectangle  # noqa: E402
from matplotlib.path import Path as MplPath  # noqa: E402

from ..escaping import plot_label  # noqa: E402
from .analysis import LAPSED, NEW, RETURNING, Concentration  # noqa: E402

DPI = 100
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"]
PSEUDO = {NEW: "#9e9e9e", RETURNING: "#bdbdbd", LAPSED: "#616161"}
BLUES = LinearSegmentedColormap.from_list("share", ["#f7fbff", "#c6dbef", "#6baed6", "#2171b5", "#08306b"])


def segment_colors(segments: list[str]) -> dict[str, str]:
    """A stable colour per segment: by position in the catalogue, so a segment looks the same every quarter."""
    from ..ml.naming import segment_names

    catalogue = segment_names()
    out = {}
    for s in segments:
        if s in PSEUDO:
            out[s] = PSEUDO[s]
        elif s in catalogue:
            out[s] = PALETTE[catalogue.index(s) % len(PALETTE)]
        else:
            out[s] = PALETTE[-1]
    return out


def _png(fig: Figure) -> bytes:
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    # zlib level 3 instead of 6: a third of the encoding time for files ~10% larger
    fig.savefig(buf, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    return buf.getvalue()


def _figure(
    w: float,
    h: float,
    left: float = 0.8,
    right: float = 0.25,
    top: float = 0.45,
    bottom: float = 0.55,
    wspace: float | None = None,
) -> Figure:
    """A figure with fixed margins in inches. No constrained/tight layout: measuring every text for the
    layout costs an extra draw (~0.5 s a figure on a small machine); margins are set from label lengths."""
    fig = Figure(figsize=(w, h), dpi=DPI)
    fig.subplots_adjust(left=left / w, right=1 - right / w, top=1 - top / h, bottom=bottom / h, wspace=wspace)
    return fig


def _label_width(labels, fontsize: float = 10) -> float:
    """Approximate width in inches of the longest label (DejaVu Sans averages ~0.6 em a character)."""
    n = max((len(str(x)) for x in labels), default=0)
    return n * fontsize * 0.6 / 72 + 0.15


def _pct(x: float) -> str:
    return f"{x:.0%}" if abs(x) >= 0.095 or x == 0 else f"{x:.1%}"


# ------------------------------------------------------------------------------------------ segment shares


def share_bars(profile: pd.DataFrame, title: str = "Share of customers vs share of revenue") -> bytes:
    """Per segment (largest revenue on top): its share of customers (pale) next to its share of revenue."""
    p = profile.sort_values("share_revenue", ascending=True)
    names = [plot_label(s) for s in p["segment"]]
    fig = _figure(7.5, 0.55 * len(p) + 1.2, left=_label_width(names), top=0.4, bottom=0.4)
    ax = fig.add_subplot()
    y = np.arange(len(p))
    h = 0.38
    colors = segment_colors(list(p["segment"]))
    ax.barh(y + h / 2, p["share_revenue"], h, color=[colors[s] for s in p["segment"]])
    ax.barh(y - h / 2, p["share_customers"], h, color=[colors[s] for s in p["segment"]], alpha=0.35)
    for yi, (c, r) in enumerate(zip(p["share_customers"], p["share_revenue"])):
        ax.text(r + 0.005, yi + h / 2, _pct(r), va="center", fontsize=8)
        ax.text(c + 0.005, yi - h / 2, _pct(c), va="center", fontsize=8, color="#444")
    ax.set_yticks(y, names)
    ax.set_xlim(0, min(1.0, max(p["share_revenue"].max(), p["share_customers"].max()) * 1.18 + 0.02))
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.legend(
        handles=[Rectangle((0, 0), 1, 1, color="#555"), Rectangle((0, 0), 1, 1, color="#555", alpha=0.35)],
        labels=["share of revenue", "share of customers"],
        loc="lower right",
        fontsize=8,
        frameon=False,
    )
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


# -------------------------------------------------------------------------------------------------- Lorenz


def lorenz(conc: Concentration, title: str = "Revenue concentration (Lorenz curve)") -> bytes:
    """The Lorenz curve against the line of equality, with the top-20% share and the 50%-of-revenue point marked."""
    pts = conc.lorenz
    if len(pts) > 2001:  # enough points for a smooth curve, whatever the number of customers
        idx = np.unique(np.linspace(0, len(pts) - 1, 2001).round().astype(int))
        pts = pts.iloc[idx]
    x, y = pts["share_customers"].to_numpy(), pts["share_revenue"].to_numpy()
    fig = _figure(5.6, 5.3, left=0.8, right=0.3, top=0.4, bottom=0.65)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#999", lw=1, ls="--", label="equal spend")
    ax.fill_between(x, y, x, color="#2171b5", alpha=0.12)
    ax.plot(x, y, color="#08306b", lw=2, label=f"customers (Gini {conc.gini:.2f})")
    # top 20% of customers: the curve at 80% of customers (ascending) leaves 1 - L(0.8) to the top 20%
    l80 = 1 - conc.top_20pct_share
    ax.plot([0.8], [l80], "o", color="#d62728")
    ax.annotate(
        f"top 20% of customers:\n{conc.top_20pct_share:.0%} of revenue",
        (0.8, l80),
        xytext=(0.36, 0.62),
        fontsize=9,
        arrowprops={"arrowstyle": "->", "color": "#d62728"},
        color="#d62728",
    )
    s50 = conc.share_customers_for_50pct
    ax.plot([1 - s50], [0.5], "o", color="#ff7f0e")
    ax.annotate(
        f"half of revenue from\nthe top {s50:.0%} of customers",
        (1 - s50, 0.5),
        xytext=(0.42, 0.86),
        fontsize=9,
        arrowprops={"arrowstyle": "->", "color": "#ff7f0e"},
        color="#b35900",
    )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0, decimals=0))
    ax.set_xlabel("share of customers (smallest spenders first)")
    ax.set_ylabel("share of revenue")
    ax.legend(loc="upper left", fontsize=8, frameon=False)
    ax.set_title(title, fontsize=11, loc="left")
    return _png(fig)


# ----------------------------------------------------------------------------------------------- k choice


def k_selection(trials: pd.DataFrame, title: str = "Choosing k: elbow and silhouette") -> bytes:
    """Inertia (elbow) and silhouette for every k tried; the business range shaded, the chosen k marked (the
    reason for the choice is in the report's text and the caption)."""
    t = trials.sort_values("k")
    fig = _figure(9.0, 3.9, left=0.85, right=0.25, top=0.5, bottom=0.55, wspace=0.3)
    axes = fig.subplots(1, 2)
    chosen = t[t["chosen"]] if "chosen" in t else t.iloc[0:0]
    for ax, col, label in (
        (axes[0], "inertia", "inertia (within-cluster spread)"),
        (axes[1], "silhouette", "silhouette"),
    ):
        if "in_business_range" in t and t["in_business_range"].any():
            ks = t.loc[t["in_business_range"], "k"]
            ax.axvspan(ks.min() - 0.4, ks.max() + 0.4, color="#2ca02c", alpha=0.10, label="business range")
        ax.plot(t["k"], t[col], "o-", color="#1f77b4")
        if not chosen.empty:
            ax.plot(
                chosen["k"], chosen[col], "*", ms=16, color="#d62728", label=f"chosen k = {int(chosen['k'].iloc[0])}"
            )
        ax.set_xlabel("k (number of clusters)")
        ax.set_ylabel(label)
        ax.set_xticks(t["k"])
        ax.spines[["top", "right"]].set_visible(False)
    axes[1].legend(fontsize=8, frameon=False, loc="best")
    if not chosen.empty:
        title += f" (chosen k = {int(chosen['k'].iloc[0])})"
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    return _png(fig)


# ---------------------------------------------------------------------------------------------- recency


def recency_by_segment(
    customers: pd.DataFrame,
    order: list[str],
    winback_days: int | None = None,
    title: str = "Days since last purchase, by segment",
) -> bytes:
    """Box plot of recency_days per segment (in `order`, top to bottom); the win-back threshold as a line."""
    order = [s for s in order if (customers["segment"] == s).any()]
    data = [customers.loc[customers["segment"] == s, "recency_days"].to_numpy() for s in order]
    fig = _figure(7.5, 0.5 * len(order) + 1.3, left=_label_width(map(plot_label, order)), top=0.4, bottom=0.55)
    ax = fig.add_subplot()
    colors = segment_colors(order)
    _segment_boxes(ax, data, order, colors)
    if winback_days is not None:
        ax.axvline(winback_days, color="#d62728", ls="--", lw=1)
        ax.text(
            winback_days,
            len(order) + 0.45,
            f" win-back: {winback_days}+ days",
            color="#d62728",
            fontsize=8,
            va="bottom",
        )
    ax.set_ylim(0.4, len(order) + 0.9)
    ax.set_xlabel("days since last purchase (as of the quarter end)")
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def _segment_boxes(ax, data: list, order: list[str], colors: dict) -> None:
    """Horizontal box plots, one per segment, the first of `order` at the top, in the segments' colours."""
    bp = ax.boxplot(
        data[::-1],
        orientation="horizontal",
        patch_artist=True,
        widths=0.6,
        flierprops={"markersize": 2, "alpha": 0.4},
        medianprops={"color": "black"},
    )
    for patch, s in zip(bp["boxes"], order[::-1]):
        patch.set_facecolor(colors[s])
        patch.set_alpha(0.75)
    ax.set_yticks(np.arange(1, len(order) + 1), [plot_label(s) for s in order[::-1]])


def p_alive_by_segment(
    customers: pd.DataFrame,
    order: list[str],
    unavailable: str | None = None,
    title: str = "Probability still active (P(alive)), by segment",
) -> bytes:
    """Box plot of P(alive) per segment (in `order`, top to bottom), each segment's mean CLV beside it; with
    `unavailable` (no customer-value fit this quarter) a figure that says so instead."""
    order = [s for s in order if (customers["segment"] == s).any()]
    fig = _figure(7.5, 0.5 * max(len(order), 2) + 1.3, left=_label_width(map(plot_label, order)), top=0.4, bottom=0.55)
    ax = fig.add_subplot()
    ax.set_title(title, fontsize=11, loc="left")
    ax.spines[["top", "right"]].set_visible(False)
    if unavailable or "p_alive" not in customers or customers["p_alive"].notna().sum() == 0:
        ax.set_axis_off()
        text = "No customer-value fit this quarter" + (f": {unavailable}" if unavailable else "")
        ax.text(0.0, 0.5, plot_label(text, 400, wrap=80), fontsize=9, va="center", transform=ax.transAxes)
        return _png(fig)
    data = [customers.loc[customers["segment"] == s, "p_alive"].dropna().to_numpy() for s in order]
    colors = segment_colors(order)
    _segment_boxes(ax, data, order, colors)
    for i, s in enumerate(order[::-1], start=1):
        clv = customers.loc[customers["segment"] == s, "clv"].mean()
        ax.text(1.02, i, f"CLV {clv:,.0f}", fontsize=8, va="center")
    ax.set_xlim(-0.02, 1.22)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_xlabel("P(alive) at the as-of date (BG/NBD); right: mean CLV per customer")
    return _png(fig)


# --------------------------------------------------------------------------------------------- heatmaps


def _heatmap(ax, shares: pd.DataFrame, labels: pd.DataFrame, corner: str, col_title: str, row_names: list[str]) -> None:
    """Cells coloured by share (0..1, white to dark blue) and labelled; row names (`row_names`, drawn as given)
    and column names (segments, through `plot_label`) are plain texts (no tick objects: ticks are the slowest part
    of a matplotlib figure), the colour needs no bar as every cell carries its value."""
    vals = shares.to_numpy(dtype=float)
    nr, nc = vals.shape
    ax.imshow(vals, cmap=BLUES, vmin=0, vmax=1, aspect="auto")
    ax.set_xticks([])
    ax.set_yticks([])
    for j, c in enumerate(shares.columns):
        ax.text(j, -0.6, plot_label(c, 24, wrap=12), ha="center", va="bottom", fontsize=8)
    for i, r in enumerate(row_names):
        ax.text(-0.6, i, r, ha="right", va="center", fontsize=8)
    ax.text(-0.6, -0.6, corner, ha="right", va="bottom", fontsize=8, style="italic", color="#555")
    # above the (up to two-line, 8 pt) column names: a fixed offset in points from the top of the grid
    ax.annotate(
        col_title,
        xy=(0.5, 1.0),
        xycoords="axes fraction",
        xytext=(0, 30),
        textcoords="offset points",
        ha="center",
        va="bottom",
        fontsize=9,
    )
    for i in range(nr):
        for j in range(nc):
            if labels.iat[i, j]:
                ax.text(
                    j,
                    i,
                    labels.iat[i, j],
                    ha="center",
                    va="center",
                    fontsize=7.5,
                    color="white" if vals[i, j] > 0.55 else "#222",
                )


def store_segment_heatmap(matrix: pd.DataFrame, unit: str = "store", title: str | None = None) -> bytes:
    """Rows: stores (largest revenue first, with their revenue); columns: segments; colour and label: the
    segment's share of that store's revenue."""
    totals = matrix.sum(axis=1)
    shares = matrix.div(totals.where(totals > 0), axis=0).fillna(0.0)
    labels = shares.map(lambda v: "" if v < 0.01 else _pct(v))  # below 1%: colour only, keeps the grid readable
    rows = [f"{plot_label(s)}  ({t:,.0f})" for s, t in zip(matrix.index, totals)]
    fig = _figure(8.0, 0.32 * len(matrix) + 1.25, left=_label_width(rows, 8) + 0.15, right=0.2, top=1.0, bottom=0.1)
    ax = fig.add_subplot()
    _heatmap(ax, shares, labels, f"{unit} (revenue)", "segment: share of the row's revenue", rows)
    fig.suptitle(title or f"Revenue by {unit} and segment", fontsize=11, x=0.01, ha="left")
    return _png(fig)


def migration_heatmap(counts: pd.DataFrame, title: str = "Migration since the previous quarter") -> bytes:
    """Transition matrix: colour = share of the from-segment's customers, label = customers (and share)."""
    shares = counts.div(counts.sum(axis=1).where(lambda s: s > 0), axis=0).fillna(0.0)
    labels = pd.DataFrame(
        [
            [("" if c == 0 else f"{c:,}\n{_pct(s)}") for c, s in zip(cr, sr)]
            for cr, sr in zip(counts.to_numpy(), shares.to_numpy())
        ],
        index=counts.index,
        columns=counts.columns,
    )
    rows = [plot_label(r) for r in counts.index]
    fig = _figure(8.0, 0.55 * len(counts) + 1.15, left=_label_width(rows, 8) + 0.15, right=0.2, top=1.0, bottom=0.1)
    ax = fig.add_subplot()
    _heatmap(
        ax, shares, labels, "from \u2193  to \u2192", "to (this quarter); colour: share of the row's customers", rows
    )
    fig.suptitle(title, fontsize=11, x=0.01, ha="left")
    return _png(fig)


# ------------------------------------------------------------------------------------------------- flow


def migration_flow(
    counts: pd.DataFrame,
    left_label: str = "previous quarter",
    right_label: str = "this quarter",
    title: str = "Where customers went",
) -> bytes:
    """A Sankey-style flow between two stacked bars: left, the previous quarter's segments (plus 'new');
    right, this quarter's (plus 'lapsed'); each band's thickness is the number of customers moving."""
    left = [r for r in counts.index if counts.loc[r].sum() > 0]
    right = [c for c in counts.columns if counts[c].sum() > 0]
    c = counts.loc[left, right].astype(float)
    total = float(c.to_numpy().sum())
    fig = _figure(8.5, 6.0, left=0.1, right=0.1, top=0.35, bottom=0.1)
    ax = fig.add_subplot()
    if total <= 0:
        ax.text(0.5, 0.5, "no customers", ha="center")
        return _png(fig)
    gap = 0.015 * total
    colors = segment_colors(sorted(set(left) | set(right), key=str))
    bar_w, x0, x1 = 0.06, 0.0, 1.0

    def stack(names, sizes):  # top-down positions: name -> (top, bottom)
        pos, y = {}, total + gap * (len(names) - 1)
        for n in names:
            pos[n] = (y, y - sizes[n])
            y -= sizes[n] + gap
        return pos

    lpos = stack(left, c.sum(axis=1))
    rpos = stack(right, c.sum(axis=0))
    lcur = {n: lpos[n][0] for n in left}
    rcur = {n: rpos[n][0] for n in right}
    for fr in left:  # bands leave each left block in the right blocks' order, and enter in the left order
        for to in right:
            v = c.at[fr, to]
            if v <= 0:
                continue
            ly0, ly1 = lcur[fr], lcur[fr] - v
            lcur[fr] = ly1
            ry0, ry1 = rcur[to], rcur[to] - v
            rcur[to] = ry1
            xa, xb = x0 + bar_w, x1 - bar_w
            xm = (xa + xb) / 2
            verts = [(xa, ly0), (xm, ly0), (xm, ry0), (xb, ry0), (xb, ry1), (xm, ry1), (xm, ly1), (xa, ly1), (xa, ly0)]
            codes = [
                MplPath.MOVETO,
                MplPath.CURVE4,
                MplPath.CURVE4,
                MplPath.CURVE4,
                MplPath.LINETO,
                MplPath.CURVE4,
                MplPath.CURVE4,
                MplPath.CURVE4,
                MplPath.CLOSEPOLY,
            ]
            ax.add_patch(
                PathPatch(
                    MplPath(verts, codes), facecolor=colors[fr], alpha=0.35 if fr != to else 0.55, edgecolor="none"
                )
            )
    for names, pos, x, ha, side in ((left, lpos, x0, "right", -1), (right, rpos, x1 - bar_w, "left", 1)):
        for n in names:
            top, bottom = pos[n]
            ax.add_patch(Rectangle((x, bottom), bar_w, top - bottom, facecolor=colors[n], edgecolor="white"))
            tx = x - 0.01 if side < 0 else x + bar_w + 0.01
            ax.text(tx, (top + bottom) / 2, f"{plot_label(n)}\n{top - bottom:,.0f}", ha=ha, va="center", fontsize=8)
    height = total + gap * (max(len(left), len(right)) - 1)
    ax.text(x0 + bar_w / 2, height * 1.03, left_label, ha="center", fontsize=9, weight="bold")
    ax.text(x1 - bar_w / 2, height * 1.03, right_label, ha="center", fontsize=9, weight="bold")
    ax.set_xlim(-0.32, 1.32)
    ax.set_ylim(-gap, height * 1.08)
    ax.axis("off")
    ax.set_title(title, fontsize=11, loc="left")
    return _png(fig)
