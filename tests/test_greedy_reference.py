"""The real pair's greedy texts (stories260K + SmolLM2, both modes, two weightings, one row at
a time and as a batch) are those recorded in ``benchmarks/data/greedy_reference.json``: a
change to the decoding machinery (the loop, the row protocol, speculation, the byte views)
must not move them. A change that means to move them rewrites the file
(``python benchmarks/greedy_outputs.py --write ...``) and says so."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO, asset_path


@pytest.mark.slow
def test_greedy_texts_are_the_recorded_ones():
    for needed in ("models/stories260K", "models/SmolLM2-135M-Instruct.Q4_1.gguf"):
        asset_path(needed)  # skips, naming the asset, where it is absent
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        from greedy_outputs import texts
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    reference = json.loads((REPO / "benchmarks" / "data" / "greedy_reference.json").read_text())
    found = texts(reference["new_bytes"])
    assert found.keys() == reference["texts"].keys()
    for case, wanted in reference["texts"].items():
        assert found[case] == wanted, case
