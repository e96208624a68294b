"""The examples in the package's docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import chared_hf

MODULES = sorted(m.name for m in pkgutil.walk_packages(chared_hf.__path__, "chared_hf.")
                 if not m.name.startswith("chared_hf.demo.train"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} examples failed"


def test_the_examples_exist():
    """Not vacuous: the modules that show examples still have them."""
    finder = doctest.DocTestFinder()
    counts = {name: sum(len(t.examples) for t in finder.find(importlib.import_module(name)))
              for name in ("chared_hf.decoding.combine", "chared_hf.decoding.weighting",
                           "chared_hf.loading")}
    assert all(counts.values()), counts
