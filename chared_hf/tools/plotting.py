"""Pictures of an ensemble's text: each character coloured by the members' shares of it.

What it does: ``plot_attribution(attribution)`` draws the attributed text in a monospace grid
(wrapped at ``width`` columns, newlines kept), each character on a background whose colour
blends the members' colours by their shares (``Attribution.characters``), with a legend of the
members and their weights. When the weights follow the text (``weighting="bayes"`` or
``"switching"``), a strip under the text shows each member's weight at every character. It
returns the matplotlib ``Figure`` and writes it to ``path`` (PNG, SVG, PDF: whatever matplotlib
infers from the suffix) when one is given.

matplotlib is optional (``pip install "chared_hf[plot]"``); without it, the call raises an
ImportError that says so. It does not compute anything about the members (``attribution``).
"""

from __future__ import annotations

import os

import numpy as np

from .attribution import Attribution

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"]


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError("plot_attribution needs matplotlib: pip install matplotlib "
                          "(or pip install \"chared_hf[plot]\")") from err
    return plt


def _layout(chars: list[str], width: int) -> list[tuple[int, int, str, int]]:
    """(column, row, character shown, index) for each character; tabs as 4 spaces."""
    cells, col, row = [], 0, 0
    for k, ch in enumerate(chars):
        if ch == "\n":
            cells.append((col, row, "↵", k))
            col, row = 0, row + 1
            continue
        shown = "    " if ch == "\t" else ch
        if col + len(shown) > width:
            col, row = 0, row + 1
        cells.append((col, row, shown, k))
        col += len(shown)
    return cells


def plot_attribution(attribution: Attribution, path: str | os.PathLike | None = None,
                     width: int = 80, title: str | None = None):
    """Draw each character of ``attribution.text`` over the blend of the members' colours."""
    if width < 8:
        raise ValueError(f"width: expected at least 8 columns, got {width}")
    if len(attribution.names) > len(PALETTE):
        raise ValueError(f"attribution: at most {len(PALETTE)} members can be drawn, "
                         f"got {len(attribution.names)}")
    plt = _pyplot()
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch, Rectangle

    chars, shares = attribution.characters()
    weights = attribution.char_weights()
    moving = weights.size > 0 and not np.allclose(weights, weights[:, :1])
    colours = np.array([to_rgb(c) for c in PALETTE[: len(attribution.names)]])
    cells = _layout(chars, width)
    rows = (cells[-1][1] + 1) if cells else 1
    size = (0.085 * width + 0.5, 0.2 * rows + 0.8 + (1.3 if moving else 0))
    if moving:
        fig, (ax, strip) = plt.subplots(2, 1, figsize=size,
                                        gridspec_kw={"height_ratios": [0.2 * rows + 0.8, 1.3]})
    else:
        fig, ax = plt.subplots(figsize=size)
    for col, row, shown, k in cells:
        # Blend towards white by 40% so that the characters stay readable.
        colour = 0.6 * (shares[:, k] @ colours) + 0.4
        ax.add_patch(Rectangle((col, -row - 1), len(shown), 1, color=colour, lw=0))
        ax.text(col + 0.05, -row - 0.5, shown, va="center", ha="left", family="monospace",
                fontsize=8)
    ax.set_xlim(0, width)
    ax.set_ylim(-rows, 0)
    ax.axis("off")
    labels = [name if moving else f"{name} (w={w:.2f})" for name, w in zip(
        attribution.names, weights[:, 0] if weights.size else attribution.weights[:, 0],
        strict=True)]
    handles = [Patch(color=0.6 * c + 0.4, label=lab) for c, lab in zip(
        colours, labels, strict=True)]
    if not moving:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(0, 0), ncol=len(labels),
                  frameon=False, fontsize=8)
    else:  # each member's weight at every character, from the text before it
        strip.legend(handles=handles, loc="lower left", bbox_to_anchor=(0, 1.0),
                     ncol=len(labels), frameon=False, fontsize=8)
        for name, colour, line in zip(attribution.names, colours, weights, strict=True):
            strip.plot(np.arange(len(line)), line, color=colour, lw=1.2, label=name)
        strip.set_ylim(-0.02, 1.02)
        strip.set_xlim(0, max(len(chars) - 1, 1))
        strip.set_ylabel("weight", fontsize=8)
        strip.set_xlabel("character", fontsize=8)
        strip.tick_params(labelsize=7)
    if title:
        ax.set_title(title, fontsize=9, loc="left")
    if path is not None:
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig
