"""User-facing errors not pinned elsewhere: each names the argument (and the allowed values)."""

from __future__ import annotations

import pytest
import torch
from conftest import piece_tokenizer, tiny_model

from chared_hf import ByteTokenizer, CharEDConfig, CharEDModel, EnsembleCache
from chared_hf.tokenization import BOS_ID, PAD_ID


@pytest.fixture(scope="module")
def solo(abc_pair):
    return CharEDModel.from_members([abc_pair[0]])


def test_an_ensemble_needs_members():
    with pytest.raises(ValueError, match=r"^members: an ensemble needs at least one \(model, "
                                         r"tokenizer\) pair$"):
        CharEDModel(CharEDConfig())


def test_push_to_hub_through_save_pretrained_points_to_push_to_hub(solo, tmp_path):
    with pytest.raises(ValueError, match=r"^push_to_hub: call model.push_to_hub\(repo_id\)"):
        solo.save_pretrained(tmp_path, push_to_hub=True)


def test_a_foreign_cache_is_named(solo):
    with pytest.raises(ValueError, match="^cache: expected an EnsembleCache \\(or None\\), got "
                                         "dict$"):
        solo(input_ids=torch.tensor([[BOS_ID, 97]]), cache={})


def test_rows_of_padding_only_are_named(solo):
    ids = torch.tensor([[PAD_ID, PAD_ID], [BOS_ID, 97]])
    with pytest.raises(ValueError, match=r"^input_ids: a row has no ids \(only padding\)$"):
        solo(input_ids=ids, attention_mask=torch.tensor([[0, 0], [1, 1]]))


def test_a_later_start_of_text_is_named(solo):
    cache = EnsembleCache(decide="greedy")
    solo(input_ids=torch.tensor([[BOS_ID, 97]]), cache=cache)
    with pytest.raises(ValueError, match="^input_ids: <s> and chat markers may only come before "
                                         "the text"):
        solo(input_ids=torch.tensor([[BOS_ID]]), cache=cache)


def test_exact_mode_needs_a_start_of_text():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordPiece({"<unk>": 0, "a": 1, "b": 2}, unk_token="<unk>",
                                         continuing_subword_prefix=""))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")  # no BOS, no EOS
    model = CharEDModel.from_members([(tiny_model(len(tok)), tok)], marginalization="exact")
    with pytest.raises(ValueError, match="^input_ids: member .* has no BOS or end-of-text token "
                                         "to start a text from, which the exact mode needs$"):
        model(input_ids=torch.tensor([[BOS_ID, 97]]))


def test_the_unbounded_exact_mode_refuses_an_exponential_byte():
    tok = piece_tokenizer(["a", "aa", "aaa", "aaaa"])
    model = CharEDModel.from_members([(tiny_model(len(tok), bos=1, eos=2), tok)],
                                     marginalization="exact", max_hypotheses=None)
    with pytest.raises(ValueError, match=r"^max_hypotheses: None \(no bound\) would run \d+ "
                                         r"tokens at once for one byte"):
        model(**ByteTokenizer()("a" * 40, return_tensors="pt"))


@pytest.mark.parametrize(("path", "match"), [
    (3, "^path: expected a path to a .gguf file, got int$"),
    ("{tmp}/model.bin", "^path: expected a .gguf file, got 'model.bin'$"),
    ("{tmp}/none.gguf", "^path: '.*none.gguf' does not exist$"),
])
def test_gguf_paths_are_checked(tmp_path, path, match):
    from chared_hf.gguf import load_gguf

    if isinstance(path, str):
        path = path.format(tmp=tmp_path)
        if path.endswith(".bin"):
            (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match=match):
        load_gguf(path)


@pytest.mark.parametrize("text", [("story", "Once"), b"Once", None])
def test_scoring_helpers_name_a_text_that_is_not_a_string(solo, abc_pair, text):
    from chared_hf.tools.scoring import byte_logprobs, exact_score

    exact = CharEDModel.from_members([abc_pair[0]], marginalization="exact")
    for score, model in ((byte_logprobs, solo), (exact_score, exact)):
        with pytest.raises(ValueError, match=r"^text: expected a str, got "):
            score(model, text)


def test_scoring_helpers_name_an_ensemble_that_is_not_one(abc_pair):
    from chared_hf.tools.scoring import byte_logprobs, exact_score

    for score in (byte_logprobs, exact_score):
        with pytest.raises(ValueError, match=r"^ensemble: expected a CharEDModel, got "):
            score(abc_pair[0], "abc")
