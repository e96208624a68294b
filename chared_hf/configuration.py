"""``CharEDConfig``: which members an ensemble has and how it combines them.

It holds references to members (Hub id or local path, revision, optional ``gguf_file`` and
per-member loading options), their weights and the decoding options, validated on
construction. It never loads a model (``modeling`` does).
"""

from __future__ import annotations

from dataclasses import field

from transformers import PreTrainedConfig

from .decoding.combine import COMBINE_RULES
from .decoding.weighting import DEFAULT_SWITCH_RATE, check_weighting
from .tokenization import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

MARGINALIZATIONS = ("chared", "exact")
DEFAULT_MAX_HYPOTHESES = 8
# With a count bound (benchmarks/pruning.py): +0.1% bits per byte, about half the time.
DEFAULT_PRUNE_BELOW = 1e-4
# The prompt's last tokens the exact mode reads over every tokenization (benchmarks/README.md).
DEFAULT_EXACT_PROMPT_TOKENS = 4
MEMBER_KEYS = ("name_or_path", "revision", "gguf_file", "dtype", "device_map",
               "trust_remote_code")


class CharEDConfig(PreTrainedConfig):
    """Configuration of a character-wise (byte-wise) ensemble of causal LMs.

    Args:
        members: one dict per member with ``name_or_path`` (Hub id or folder) and optionally
            ``revision``, ``gguf_file``, ``dtype``, ``device_map`` (where the member goes: a
            device such as ``"cuda:1"``, ``"auto"``, or a dict as Transformers takes it) and
            ``trust_remote_code``. ``dtype`` and ``device_map`` given to
            ``CharEDModel.from_pretrained`` override every member's. Empty for an ensemble
            built in memory with ``CharEDModel.from_members``.
        weights: one non-negative weight per member (at least one positive); ``None`` means
            equal weights. Stored as given, normalised when used. With a weighting that moves,
            they are the prior.
        weighting: how the weights follow the text (``chared_hf.weighting``): ``"fixed"`` (the
            paper), ``"bayes"`` (each member's posterior given the text so far, prompt
            included) or ``"switching"`` (Bayes, then a fraction ``switch_rate`` of the weight
            returns to the prior after every byte, so the weights can follow a text that
            changes kind). Only ``"fixed"`` with ``combine="product"``.
        switch_rate: the fraction ``α`` in ``[0, 1]`` for ``"switching"``.
        marginalization: how a member's next-byte distribution is formed: ``"chared"`` (the
            paper: each member conditioned on one tokenization of the committed text) or
            ``"exact"`` (the default: each member a byte-level LM summing over all its
            tokenizations).
        max_hypotheses: with ``"exact"``, the most hypotheses (token sequences) a member keeps,
            and the most children it expands per byte; ``None`` keeps all (exact).
        prune_below: with ``"exact"``, a hypothesis or child whose mass is below this fraction
            of the text's (kept) probability is dropped as well; ``0`` drops nothing by mass.
            ``None`` (default): ``1e-4`` with a count bound, ``0`` with ``max_hypotheses=None``
            (so that ``None`` alone is the unbounded, exact mode); see ``pruning_floor``.
            What pruning drops is bounded (``scoring.exact_score``).
        combine: ``"mixture"`` (the paper's weighted average) or ``"product"`` (weighted
            geometric mean, renormalised).
        exact_prompt_tokens: with ``"exact"`` and a count bound, generation reads the
            prompt's last this-many tokens of each member's own tokenization (more where a
            longer token extends them) over every tokenization, and conditions on the member's
            own tokenization of the rest, run in one call; ``None`` reads the whole prompt over
            every tokenization (exact, and the cost grows with the prompt: 12 to 25 s against
            0.7 to 0.8 s for a HumanEval prompt, stories260K + SmolLM2 on a CPU).
            ``max_hypotheses=None`` always reads the whole prompt. Scoring has no prompt and is
            unaffected.
        heal_prompt: with ``"chared"``, generation leaves each member's last prompt tokens
            (as many as one of its tokens could extend) pending instead of committing them, so
            that a member can continue the prompt's end with a longer token (a newline with
            the next line's indent); ``False`` commits the member's tokenization of the whole
            prompt, as the paper does. The exact mode needs no healing (it reads the prompt
            over every tokenization).
        run_ahead_bytes: how far along known text (a prompt the exact mode reads, a scored
            text) a member call also runs the member's own tokenization, so that later bytes
            need no call of their own (``chared_hf.decoding.speculation``); ``0`` runs nothing
            ahead. Never changes a number, only how many calls and tokens the members run.
        guess_bytes: in generation, how many bytes of greedy steps ahead are run on the host to
            guess what a call runs ahead (the paper mode's next commits in a batch's padding,
            the exact mode's text ahead for a row alone); ``0`` guesses nothing.
        run_ahead_children: on known text, also run ahead from every child a call runs (far
            fewer calls, several times the tokens); ``None`` (default): for members on an
            accelerator, not on a CPU.
    """

    model_type = "chared"

    members: list = field(default_factory=list)
    # Stored exactly as given so a published config round-trips; normalised at use.
    weights: list | None = None
    # The exact mode by default: it continues a prompt as the members would (docs/method.md).
    marginalization: str = "exact"
    combine: str = "mixture"
    weighting: str = "fixed"
    # Measured, not tuned on the held-out texts (benchmarks/weighting.py); see weighting.py.
    switch_rate: float = DEFAULT_SWITCH_RATE
    max_hypotheses: int | None = DEFAULT_MAX_HYPOTHESES
    prune_below: float | None = None
    exact_prompt_tokens: int | None = DEFAULT_EXACT_PROMPT_TOKENS
    heal_prompt: bool = True
    # Speculation: what member calls run ahead (numbers unchanged; benchmarks/README.md).
    run_ahead_bytes: int = 32
    guess_bytes: int = 16
    run_ahead_children: bool | None = None
    # The byte vocabulary: 256 bytes + <s>, </s>, <pad>. Not meant to be changed.
    vocab_size: int = VOCAB_SIZE
    bos_token_id: int | None = BOS_ID
    eos_token_id: int | list[int] | None = EOS_ID
    pad_token_id: int | None = PAD_ID
    tie_word_embeddings: bool = False

    def __post_init__(self, **kwargs):
        self.members = [_check_member(i, m) for i, m in enumerate(self.members or [])]
        if self.weights is not None:
            self.weights = check_weights(self.weights, len(self.members) or None)
        if self.marginalization not in MARGINALIZATIONS:
            raise ValueError(
                f"marginalization: expected one of {MARGINALIZATIONS}, got {self.marginalization!r}"
            )
        if self.max_hypotheses is not None and (
                isinstance(self.max_hypotheses, bool) or not isinstance(self.max_hypotheses, int)
                or self.max_hypotheses < 1):
            raise ValueError("max_hypotheses: expected a positive integer or None, got "
                             f"{self.max_hypotheses!r}")
        if self.prune_below is not None and (
                isinstance(self.prune_below, bool) or not isinstance(self.prune_below, int | float)
                or not 0.0 <= self.prune_below < 1.0):
            raise ValueError("prune_below: expected a number in [0, 1) or None, got "
                             f"{self.prune_below!r}")
        if not isinstance(self.heal_prompt, bool):
            raise ValueError(f"heal_prompt: expected True or False, got {self.heal_prompt!r}")
        if self.exact_prompt_tokens is not None and (
                isinstance(self.exact_prompt_tokens, bool)
                or not isinstance(self.exact_prompt_tokens, int) or self.exact_prompt_tokens < 1):
            raise ValueError("exact_prompt_tokens: expected a positive integer or None, got "
                             f"{self.exact_prompt_tokens!r}")
        for name in ("run_ahead_bytes", "guess_bytes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
        if self.run_ahead_children not in (None, True, False):
            raise ValueError("run_ahead_children: expected True, False or None, got "
                             f"{self.run_ahead_children!r}")
        if self.combine not in COMBINE_RULES:
            raise ValueError(f"combine: expected one of {COMBINE_RULES}, got {self.combine!r}")
        check_weighting(self.weighting, self.switch_rate)
        if self.combine == "product" and self.weighting != "fixed":
            raise ValueError(f"weighting: {self.weighting!r} needs combine='mixture' (the "
                             "product of experts has no posterior over members); use "
                             "weighting='fixed' with combine='product'")
        super().__post_init__(**kwargs)

    @property
    def pruning_floor(self) -> float:
        """The exact mode's relative floor in use: ``prune_below``, or when that is None,
        ``DEFAULT_PRUNE_BELOW`` with a count bound and 0 without one."""
        if self.prune_below is not None:
            return float(self.prune_below)
        return DEFAULT_PRUNE_BELOW if self.max_hypotheses is not None else 0.0


def _check_member(index: int, member) -> dict:
    if isinstance(member, str):
        member = {"name_or_path": member}
    if not isinstance(member, dict) or not member.get("name_or_path"):
        raise ValueError(
            f"members[{index}]: expected a Hub id, a folder, or a dict with 'name_or_path', "
            f"got {member!r}"
        )
    unknown = sorted(set(member) - set(MEMBER_KEYS))
    if unknown:
        raise ValueError(f"members[{index}]: unknown keys {unknown}; allowed: {list(MEMBER_KEYS)}")
    place = member.get("device_map")
    if place is not None and not (isinstance(place, str | int) and not isinstance(place, bool)
                                  or isinstance(place, dict) and all(
                                      isinstance(k, str) for k in place)):
        raise ValueError(f"members[{index}]: device_map must be a device (such as 'cuda:1' or "
                         f"'cpu'), 'auto', or a dict of module names to devices; got {place!r}")
    return dict(member)


def check_weights(weights, n_members: int | None) -> list[float]:
    """Validate member weights: finite, non-negative, at least one positive, one per member."""
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise ValueError(f"weights: expected a list of numbers, got {weights!r}") from None
    if n_members is not None and len(values) != n_members:
        raise ValueError(
            f"weights: expected {n_members} weights (one per member), got {len(values)}")
    if not values or any(not (w >= 0 and w != float("inf")) for w in values) or sum(values) <= 0:
        raise ValueError(
            f"weights: expected finite non-negative numbers with a positive sum, got {values}"
        )
    return values
