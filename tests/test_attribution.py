"""Attribution (members' shares of each byte) and the plotting helper that draws it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from chared_hf import CharEDModel
from chared_hf.tools.attribution import attribute
from chared_hf.tools.scoring import byte_logprobs


def test_mixture_shares_split_the_exact_ensembles_probability(abc_pair):
    model = CharEDModel.from_members(abc_pair, weights=[1, 3], marginalization="exact")
    att = attribute(model, "b cab", prompt="ab ")
    shares = att.shares()
    np.testing.assert_allclose(shares.sum(0), 1.0)
    # Σ_i w_i P_i(b) is the exact mixture's probability of each byte (after the prompt).
    mixed = np.log((att.weights * np.exp(att.logp)).sum(0))
    np.testing.assert_allclose(mixed, byte_logprobs(model, "ab b cab")[3:], atol=1e-5)
    np.testing.assert_allclose(shares, att.weights * np.exp(att.logp - mixed), atol=1e-9)
    np.testing.assert_allclose(att.weights, np.array([[0.25] * 5, [0.75] * 5]))


@pytest.mark.parametrize("rule", ["bayes", "switching"])
def test_weights_along_the_text_are_the_ensembles(abc_pair, rule):
    """With weights that follow the text, each byte's weights come from the bytes before it
    (the prompt included), and the shares still split the exact ensemble's probability."""
    model = CharEDModel.from_members(abc_pair, weights=[1, 3], marginalization="exact",
                                     weighting=rule, switch_rate=0.1, max_hypotheses=None)
    att = attribute(model, "b cab", prompt="ab ", max_hypotheses=None)
    assert not np.allclose(att.weights[:, 0], [0.25, 0.75])  # the prompt moved them
    np.testing.assert_allclose(att.weights.sum(0), 1.0)
    mixed = np.log((att.weights * np.exp(att.logp)).sum(0))
    np.testing.assert_allclose(mixed, byte_logprobs(model, "ab b cab")[3:], atol=1e-6)


def test_identical_members_share_by_their_weights(abc_pair):
    model = CharEDModel.from_members([abc_pair[0], abc_pair[0]], weights=[0.3, 0.7])
    np.testing.assert_allclose(attribute(model, "ab ca").shares(),
                               np.array([[0.3] * 5, [0.7] * 5]), atol=1e-9)


def test_product_gaps_average_to_zero(abc_pair):
    model = CharEDModel.from_members(abc_pair, weights=[0.4, 0.6], combine="product")
    att = attribute(model, "cab a")
    np.testing.assert_allclose((att.weights * att.gaps()).sum(0), 0.0, atol=1e-9)
    np.testing.assert_allclose(att.shares().sum(0), 1.0)


def test_characters_group_the_bytes_of_utf8_characters(stories):
    model = CharEDModel.from_members([stories, stories], weights=[0.5, 0.5])
    att = attribute(model, "café!")
    chars, shares = att.characters()
    assert chars == list("café!") and shares.shape == (2, 5)
    assert att.logp.shape == (2, 6)  # é is two bytes
    np.testing.assert_allclose(shares, 0.5)


def test_empty_text_is_refused(abc_pair):
    with pytest.raises(ValueError, match="text: expected at least one character"):
        attribute(CharEDModel.from_members(abc_pair), "")


def test_plot_writes_a_png(abc_pair, tmp_path):
    pytest.importorskip("matplotlib", reason="plotting needs matplotlib")
    import matplotlib.image

    from chared_hf.tools.plotting import plot_attribution

    text = "ab ca\ncab b a " * 4
    att = attribute(CharEDModel.from_members(abc_pair, weights=[0.5, 0.5]), text)
    fig = plot_attribution(att, tmp_path / "att.png", width=20, title="tiny")
    assert (tmp_path / "att.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(tmp_path / "att.png")
    assert image.shape[0] > 50 and image.shape[1] > 100
    assert len(fig.axes[0].patches) == len(text)  # one coloured cell per character
    with pytest.raises(ValueError, match="width: expected at least 8 columns"):
        plot_attribution(att, width=3)
    # Weights that follow the text: a strip under the text with one line per member.
    moving = attribute(CharEDModel.from_members(abc_pair, weighting="bayes"), text)
    fig = plot_attribution(moving, tmp_path / "moving.png", width=20)
    assert len(fig.axes) == 2 and len(fig.axes[1].lines) == 2
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), moving.char_weights()[0])


def test_missing_matplotlib_says_how_to_install(abc_pair, monkeypatch):
    from chared_hf.tools.plotting import plot_attribution

    att = attribute(CharEDModel.from_members(abc_pair), "ab")
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        plot_attribution(att)
