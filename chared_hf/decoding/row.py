"""The row protocol: one sequence of text over every member, as ``engine`` drives it.

What it does: ``Row`` is the abstract base of both decoding modes (``paper.SequenceState``,
``exact.ExactSequenceState``). A row's life, in the phases ``engine`` runs for all rows of a
batch at once (each phase only *queues* member calls; ``engine.run_queued`` runs them, one
forward call per member for every row, between phases):

  1. ``begin(prompt, with_bos)`` or ``begin_from_ids(member_ids)``: the members take the prompt;
     a row that then reads prompt bytes one by one is ``reading``: ``prepare`` queues the
     calls the next one needs, ``read_prompt_byte`` reads it;
  2. ``advance(byte)``: the members (and the weights) read the chosen byte;
  3. ``resolve()``: what the members need before the next distribution (the paper mode's ε);
  4. ``distribution()``: the next byte's distribution (256 bytes + end of text);
  5. ``recommit()``: where logits processors banned every byte, the members give every byte
     they can represent some mass; the distribution after it.

What both modes share is written here once: the weights (``RowWeights``; a prompt's
evidence read once its calls have run, ``_read_prompt``), combining the members with a retry
when no outcome has mass (``_combined``), the members' token trees, teacher forcing's text ahead
(``read_ahead``), and the loop for a row on its own (``start``, ``step``). Three hooks let
``engine`` serve all rows of a batch with one copy to the host per phase: ``wanted`` (the
masses a phase reads), ``commits`` (commits whose ids are chosen for all rows at once) and
``idle`` (members that can put a guess in a call's padding); they default to nothing.

What it does not do: decide what a call runs ahead (``speculation``), run member calls
(``engine``), or choose bytes (``generation``, Transformers).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

from . import engine
from .combine import combine
from .speculation import Speculation
from .weighting import RowWeights, Weighting


class TextCursor:
    """Teacher forcing: the text the members will read, and how much of it they have read."""

    def __init__(self, text: bytes = b""):
        self.text, self.pos = text, 0

    def ahead(self, n: int) -> bytes:
        return self.text[self.pos:self.pos + n]


class Row(ABC):
    """One sequence of text over every member (see the module docstring).

    Subclasses set ``members`` (per-member states, each with its ``tree``) and implement the
    five phases; ``finished`` is set by whoever ends the row (end of text, padding)."""

    members: list
    reading = False  # prompt bytes left to read one by one (``prepare``, ``read_prompt_byte``)
    guesses = False  # ``idle`` may guess members' likeliest tokens after their pending bytes
    extends = False  # a call may run a member's likeliest token past its pending bytes

    def __init__(self, weighting: Weighting | list[float], rule: str,
                 speculation: Speculation | None = None):
        self.row_weights = RowWeights(as_weighting(weighting))
        self.rule = rule
        self.speculation = speculation or Speculation()  # what calls may run ahead
        self.finished = False
        self.cursor: TextCursor | None = None  # teacher forcing: the text ahead
        self._prompt_bytes: int | None = None  # a prompt the weights have not read yet

    # -- the phases ------------------------------------------------------------------------
    @abstractmethod
    def begin(self, prompt: bytes, with_bos: bool) -> None:
        """Every member takes ``prompt`` (calls queued)."""

    @abstractmethod
    def begin_from_ids(self, member_ids: list[list[int]]) -> None:
        """Every member starts from its own prompt ids (a chat template's rendering)."""

    @abstractmethod
    def advance(self, byte: int) -> None:
        """Every member and the weights read ``byte`` (calls queued)."""

    @abstractmethod
    def resolve(self) -> None:
        """What the members need before ``distribution`` (calls queued)."""

    @abstractmethod
    def distribution(self) -> np.ndarray:
        """The next byte's distribution (256 bytes + end of text)."""

    @abstractmethod
    def recommit(self) -> np.ndarray | None:
        """Where processors banned every byte: the distribution after the members widen what
        they spell; None where they cannot."""

    def prepare(self) -> None:
        """Queue the calls the next prompt byte needs (while ``reading``)."""
        raise NotImplementedError(f"{type(self).__name__} never reads a prompt byte by byte")

    def read_prompt_byte(self) -> None:
        """Read the next prompt byte (while ``reading``)."""
        raise NotImplementedError(f"{type(self).__name__} never reads a prompt byte by byte")

    # -- what engine serves for all rows at once (none by default) -------------------------
    def wanted(self, byte: int | None = None) -> list:
        """The ``(ByteView, pending bytes)`` pairs the next phase reads (with ``byte``: those
        that reading it needs), gathered for all rows at once (``byte_view.gather``)."""
        return []

    def commits(self) -> list:
        """Member states whose commit waits for the id it takes (``committing``: the
        committed bytes first; ``view``; ``finish_commit``), chosen for all rows at once."""
        return []

    def idle(self, tree, busy: set[int]) -> list:
        """``(member, node, token)`` guesses for the members whose ``tree`` runs a call in
        which they queued nothing (their lanes are not in ``busy``): ``token`` after
        ``node``, or with ``token`` None their likeliest token after their pending bytes."""
        return []

    # -- shared ----------------------------------------------------------------------------
    @property
    def weights(self) -> np.ndarray:
        """The members' weights now (normalised)."""
        return self.row_weights.weights

    @property
    def trees(self) -> list:
        """The token trees whose queued calls ``engine`` runs between phases."""
        return [m.tree for m in self.members]

    def read_ahead(self, text: bytes) -> None:
        """Teacher forcing: the members will read ``text`` next (after what they were told
        before), so their forward calls run ahead along it; ``advance`` moves the cursor."""
        if self.cursor is None:
            self.cursor = TextCursor()
            for m in self.members:
                m.cursor = self.cursor
        self.cursor.text += text

    def _read_prompt(self) -> None:
        """Once the prompt's calls have run: the weights read each member's evidence about
        the prompt (``prompt_probs``), once."""
        if self._prompt_bytes is not None:
            self.row_weights.read_prompt([m.prompt_probs(self._prompt_bytes)
                                          for m in self.members])
            self._prompt_bytes = None

    def _combined(self, dists: Callable[[], list], rescue: Callable[[], bool]
                  ) -> tuple[list, np.ndarray]:
        """The members' distributions (``dists()``) and their combination by the row's rule
        and weights; where no outcome has mass, ``rescue()`` changes the members (and says
        whether it did) and they are asked again."""
        entered = dists()
        joint = combine(self.rule, entered, self.weights)
        if joint is None and rescue():
            entered = dists()
            joint = combine(self.rule, entered, self.weights)
        if joint is None:
            raise RuntimeError("no member gives any probability to text or end of text")
        return entered, joint

    # -- a row on its own ------------------------------------------------------------------
    def start(self, prompt: bytes, with_bos: bool) -> np.ndarray:
        """The members take the prompt; the distribution of the first new byte."""
        return engine.start([self], [lambda row: row.begin(prompt, with_bos)])[0]

    def step(self, byte: int) -> np.ndarray:
        """Advance by ``byte``; the distribution (bytes + end of text) of the next byte."""
        return engine.step([self], [byte])[0]


def as_weighting(weighting: Weighting | list[float]) -> Weighting:
    """A ``Weighting``; a plain list of weights means fixed weights."""
    return weighting if isinstance(weighting, Weighting) else Weighting("fixed", tuple(weighting))
