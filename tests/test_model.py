"""CharEDModel inside Transformers: forward, generate, teacher forcing and clear errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from conftest import EosBiased, piece_tokenizer, tiny_model
from transformers import AutoTokenizer, set_seed

from chared_hf import ByteTokenizer, CharEDConfig, CharEDModel, EnsembleCache
from chared_hf.tokenization import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

PIECES = ["a", "b", "c", " ", "ab", "bc", "ca", " a", "abc", "cab", "b c"]


@pytest.fixture(scope="module")
def pair():
    tok = piece_tokenizer(PIECES)
    return tiny_model(len(tok), seed=1, bos=1, eos=2), tok


@pytest.fixture(scope="module")
def ensemble(pair, stories):
    return CharEDModel.from_members([pair, stories], weights=[0.3, 0.7])


@pytest.fixture(scope="module")
def tok():
    return ByteTokenizer()


def _text(ids) -> bytes:
    return bytes(i for i in ids if i < 256)


def test_forward_shape_and_rows_are_distributions(ensemble, tok):
    ids = tok(["ab ca", "abc"], return_tensors="pt", padding=True)
    out = ensemble(**ids)
    assert out.logits.shape == (2, ids["input_ids"].shape[1], VOCAB_SIZE)
    probs = out.logits.exp()
    real = ids["attention_mask"].bool()
    sums = probs.sum(-1)[real]
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert torch.all(probs[..., BOS_ID][real] == 0) and torch.all(probs[..., PAD_ID][real] == 0)


def test_teacher_forcing_is_causal(ensemble, tok):
    """logits[:, i] depends on ids up to i only: the schedule looks one byte back, not ahead."""
    a = ensemble(**tok("ab cab", return_tensors="pt")).logits
    b = ensemble(**tok("ab cbc", return_tensors="pt")).logits
    assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_teacher_forcing_first_row_is_the_root_distribution(pair, tok):
    """After <s>, the first byte's distribution is the member's token mass by first byte."""
    model, ptok = pair
    ens = CharEDModel.from_members([pair])
    row = ens(**tok("a", return_tensors="pt")).logits[0, 0].exp().double()
    with torch.no_grad():
        probs = torch.softmax(model(input_ids=torch.tensor([[1]])).logits[0, -1].double(), -1)
    vocab = ptok.get_vocab()
    text = {vocab[p]: p.encode() for p in PIECES}
    z = sum(float(probs[i]) for i in text) + float(probs[2])
    for byte in b"abc ":
        want = sum(float(probs[i]) for i, p in text.items() if p[0] == byte) / z
        assert float(row[byte]) == pytest.approx(want, abs=1e-6)
    assert float(row[EOS_ID]) == pytest.approx(float(probs[2]) / z, abs=1e-6)


def test_single_byte_vocabulary_scores_exactly_like_the_member(tok):
    """With single-byte tokens there is no ε: the score equals the member's own log-prob."""
    ptok = piece_tokenizer(["a", "b", "c"])
    model = tiny_model(len(ptok), seed=4, bos=1, eos=2)
    ens = CharEDModel.from_members([(model, ptok)])
    text = "abcab"
    logp = ens(**tok(text, return_tensors="pt")).logits[0]
    ours = sum(float(logp[i, b]) for i, b in enumerate(text.encode()))
    ids = [1] + [ptok.get_vocab()[c] for c in text]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].double()
    allowed = torch.full_like(logits[0], -torch.inf)
    allowed[[ptok.get_vocab()[c] for c in "abc"] + [2]] = 0
    own = torch.log_softmax(logits + allowed, -1)
    theirs = sum(float(own[k, ids[k + 1]]) for k in range(len(text)))
    assert ours == pytest.approx(theirs, abs=1e-5)


def test_incremental_forward_matches_whole_text(ensemble, tok):
    """Teacher forcing in one call equals the same bytes fed one call at a time."""
    ids = tok("abc ab", return_tensors="pt")["input_ids"]
    whole = ensemble(input_ids=ids).logits
    out = ensemble(input_ids=ids[:, :2])
    parts = [out.logits]
    cache = out.cache if "cache" in out else out.past_key_values
    for k in range(2, ids.shape[1]):
        out = ensemble(input_ids=ids[:, k:k + 1], cache=cache)
        parts.append(out.logits)
    _same_distributions(whole, torch.cat(parts, 1))
    # ... and in chunks of several bytes.
    cache = EnsembleCache(decide="marginal")
    chunks = [ensemble(input_ids=ids[:, a:b], cache=cache).logits
              for a, b in ((0, 3), (3, 5), (5, ids.shape[1]))]
    _same_distributions(whole, torch.cat(chunks, 1))


def _same_distributions(a: torch.Tensor, b: torch.Tensor) -> None:
    """Equal as probabilities (float32 noise differs between calls of other shapes; in
    log space it shows in the far tail, at log-probabilities near -30), zeros in the same
    places."""
    assert torch.equal(torch.isinf(a), torch.isinf(b))
    assert torch.allclose(a.exp(), b.exp(), atol=1e-6)


def test_greedy_generate_is_deterministic_and_counts_bytes(ensemble, tok):
    enc = tok("Once upon a", return_tensors="pt")
    a = ensemble.generate(**enc, max_new_tokens=24)
    b = ensemble.generate(**enc, max_new_tokens=24)
    assert torch.equal(a, b)
    new = a[0, enc["input_ids"].shape[1]:].tolist()
    assert len(new) == 24 or new[-1] == EOS_ID  # max_new_tokens counts bytes
    assert _text(a[0]).startswith(b"Once upon a")


def test_sampling_is_reproducible_with_set_seed(ensemble, tok):
    enc = tok("The cat", return_tensors="pt")
    kwargs = dict(max_new_tokens=20, do_sample=True, temperature=0.9, top_p=0.95, top_k=0)
    set_seed(7)
    a = ensemble.generate(**enc, **kwargs)
    set_seed(7)
    b = ensemble.generate(**enc, **kwargs)
    assert torch.equal(a, b)
    outs = set()
    for seed in range(4):
        set_seed(seed)
        outs.add(_text(ensemble.generate(**enc, **kwargs)[0]))
    assert len(outs) > 1  # sampling does sample


def test_one_member_greedy_commits_like_the_member(stories, tok):
    """Greedy with one real member reproduces the member's own greedy text here."""
    model, mtok = stories
    ens = CharEDModel.from_members([stories])
    prompt = "Once upon a time"
    ours = ens.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=60)
    theirs = model.generate(**mtok(prompt, return_tensors="pt"), max_new_tokens=30,
                            do_sample=False)
    ours_text = _text(ours[0]).decode()
    theirs_text = mtok.decode(theirs[0], skip_special_tokens=True)
    common = min(len(ours_text), len(theirs_text))
    assert common > 40 and ours_text[:common] == theirs_text[:common]


def test_generation_uses_about_one_forward_per_member_token(stories, tok):
    ens = CharEDModel.from_members([stories])
    out = ens.generate(**tok("Once upon a time", return_tensors="pt"), max_new_tokens=60,
                       return_dict_in_generate=True)
    cache = out.cache if "cache" in out else out.past_key_values
    (calls,) = cache.forward_calls()[0]
    new_bytes = out.sequences.shape[1] - len(tok("Once upon a time")["input_ids"])
    assert calls < new_bytes / 2  # stories260K averages > 2 bytes per token


def test_eos_stops_generation(pair, tok):
    model, ptok = pair
    ens = CharEDModel.from_members([(EosBiased(model, eos=2, bias=30.0), ptok)])
    enc = tok("ab", return_tensors="pt")
    assert float(ens(**enc).logits[0, -1, EOS_ID].exp()) > 0.99
    out = ens.generate(**enc, max_new_tokens=50)
    assert out[0].tolist() == [*enc["input_ids"][0].tolist(), EOS_ID]


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_ensemble_eos_is_every_members_end_of_text(pair, tok, mode):
    """End of text is combined like any outcome: one eager member at weight 1/2 gives half
    of its own probability of end of text (in the paper mode ~1; in the exact mode a little
    less: tokens that go on past "ab" keep some mass)."""
    model, ptok = pair
    eager = (EosBiased(model, eos=2, bias=30.0), ptok)
    never = (EosBiased(model, eos=2, bias=-100.0), ptok)

    def p_eos(members):
        ens = CharEDModel.from_members(members, marginalization=mode)
        out = ens.generate(**tok("ab", return_tensors="pt"), max_new_tokens=1,
                           output_scores=True, return_dict_in_generate=True)
        return float(torch.softmax(out.scores[0][0].double(), -1)[EOS_ID])

    alone = p_eos([eager])
    assert alone > (0.999 if mode == "chared" else 0.99) and p_eos([never]) < 1e-6
    assert p_eos([eager, never]) == pytest.approx(alone / 2, abs=1e-6)


def test_left_padded_batch_matches_single_prompts(ensemble, tok):
    prompts = ["Once upon a time", "The dog"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    together = ensemble.generate(**batch, max_new_tokens=16)
    for k, prompt in enumerate(prompts):
        alone = ensemble.generate(**tok(prompt, return_tensors="pt"), max_new_tokens=16)
        assert _text(together[k]) == _text(alone[0])


def test_prompt_without_bos_gives_members_the_text_alone(ensemble, tok):
    enc = tok("abc", add_special_tokens=False, return_tensors="pt")
    out = ensemble.generate(**enc, max_new_tokens=5)
    assert _text(out[0]).startswith(b"abc")


def test_beam_search_is_rejected_clearly(ensemble, tok):
    with pytest.raises(ValueError, match="num_beams: beam search is not supported"):
        ensemble.generate(**tok("ab", return_tensors="pt"), num_beams=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="assistant_model: assisted decoding"):
        ensemble.generate(**tok("ab", return_tensors="pt"), assistant_model=ensemble)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(weights=[1.0]), "weights: expected 2 weights"),
        (dict(weights=[-1.0, 2.0]), "weights: expected finite non-negative"),
        (dict(weights=[0.0, 0.0]), "positive sum"),
        (dict(weights=[float("nan"), 1.0]), "weights: expected finite non-negative"),
        (dict(weights=[float("inf"), 1.0]), "weights: expected finite non-negative"),
        (dict(weights="heavy"), "weights: expected a list of numbers"),
        (dict(combine="median"), "combine: expected one of"),
        (dict(marginalization="viterbi"), "marginalization: expected one of"),
    ],
)
def test_bad_arguments_name_the_argument(pair, kwargs, match):
    with pytest.raises(ValueError, match=match):
        CharEDModel.from_members([pair, pair], **kwargs)


def test_bad_members_name_the_argument(pair):
    model, ptok = pair
    with pytest.raises(ValueError, match="members: expected a non-empty list"):
        CharEDModel.from_members([])
    with pytest.raises(ValueError, match=r"members\[0\]: expected a \(model, tokenizer\) pair"):
        CharEDModel.from_members([model])
    with pytest.raises(ValueError, match=r"members\[1\]: expected a causal LM model"):
        CharEDModel.from_members([pair, ("model", ptok)])
    with pytest.raises(ValueError, match=r"members\[0\]: expected a fast \(tokenizers-backed\) "
                                         r"tokenizer second, got NoneType"):
        CharEDModel.from_members([(model, None)])


def test_bad_input_ids_name_the_argument(ensemble):
    with pytest.raises(ValueError, match="input_ids: ids must lie in"):
        ensemble(input_ids=torch.tensor([[BOS_ID, 300]]))
    with pytest.raises(ValueError, match="input_ids: expected a 2-D tensor"):
        ensemble(input_ids=torch.tensor([97, 98]))
    with pytest.raises(ValueError, match="input_ids: <s> may only start"):
        ensemble(input_ids=torch.tensor([[97, BOS_ID, 98]]))


def test_config_names_members_and_loads_them(stories, tmp_path):
    from conftest import asset_path

    path = str(asset_path("models/stories260K"))
    config = CharEDConfig(members=[path, {"name_or_path": path}], weights=[1, 3])
    model = CharEDModel(config)
    assert model.member_weights == [1.0, 3.0] and len(model.members) == 2
    assert config.weights == [1.0, 3.0]
    model.save_pretrained(tmp_path)
    again = CharEDModel.from_pretrained(tmp_path, local_members=True)  # absolute references
    enc = ByteTokenizer()("Once", return_tensors="pt")
    assert torch.equal(model.generate(**enc, max_new_tokens=12),
                       again.generate(**enc, max_new_tokens=12))


def test_byte_tokenizer_round_trips_and_loads(tmp_path):
    tok = ByteTokenizer()
    for text in ["", "héllo 😀\n\t  x", "</s><s><pad>", "\x00\x7f"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert ids == list(text.encode())
        assert tok.decode(ids) == text
        assert tok(text)["input_ids"] == [BOS_ID, *ids]
    tok.save_pretrained(tmp_path)
    CharEDConfig().save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(again, ByteTokenizer)
    assert again("hé😀")["input_ids"] == tok("hé😀")["input_ids"]
    assert np.array_equal(again.convert_tokens_to_ids(["<s>", "</s>", "<pad>"]),
                          [BOS_ID, EOS_ID, PAD_ID])


def test_prompt_longer_than_the_window_keeps_the_most_recent_tokens(tok):
    """Context policy: start ids + the most recent tokens filling 3/4 of the window, with one
    warning per member; generation goes on past the window."""
    ptok = piece_tokenizer(list("abc "))
    model = tiny_model(len(ptok), seed=5, bos=1, eos=None)
    model.config.max_position_embeddings = 24
    ens = CharEDModel.from_members([(model, ptok)], marginalization="chared")
    enc = tok("abc " * 10, return_tensors="pt")  # 40 single-byte tokens > 24
    with pytest.warns(UserWarning, match="context longer than its window of 24 tokens"):
        out = ens.generate(**enc, max_new_tokens=40, return_dict_in_generate=True,
                           min_new_tokens=40)
    member = out.cache.rows[0].members[0]
    assert len(member.ids) <= 24 and member.ids[0] == 1  # the start id is kept
    assert member.tree.size <= 2 * 24 + member.tree.slack  # cut contexts' slots are dropped
    assert out.sequences.shape[1] == enc["input_ids"].shape[1] + 40


def test_member_without_a_start_of_text_fails_clearly_on_an_empty_prompt(tok):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"a": 0, "b": 1, "<unk>": 2}, unk_token="<unk>"))
    ptok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    member = (tiny_model(3, bos=None, eos=None), ptok)
    ens = CharEDModel.from_members([member], marginalization="chared")
    with pytest.raises(ValueError, match="has no BOS or end-of-text token to start a text"):
        ens.generate(**tok("", return_tensors="pt"), max_new_tokens=2)
    out = ens.generate(**tok("ab", add_special_tokens=False, return_tensors="pt"),
                       max_new_tokens=3)
    assert _text(out[0]).startswith(b"ab")
    # The exact mode reads every prompt from the member's start of text: it says so.
    exact = CharEDModel.from_members([member])
    with pytest.raises(ValueError, match="has no BOS or end-of-text token to start a text "
                       "from, which the exact mode needs"):
        exact.generate(**tok("ab", add_special_tokens=False, return_tensors="pt"),
                       max_new_tokens=3)


def test_empty_prompt_starts_each_member_from_its_own_start_of_text(ensemble, tok):
    out = ensemble.generate(**tok("", return_tensors="pt"), max_new_tokens=12)
    assert out.shape[1] > 1 and out[0, 0] == BOS_ID


def test_a_member_at_weight_zero_is_switched_off(pair, stories, tok):
    enc = tok("Once upon a", return_tensors="pt")
    alone = CharEDModel.from_members([stories]).generate(**enc, max_new_tokens=20)
    off = CharEDModel.from_members([pair, stories], weights=[0.0, 1.0])
    assert torch.equal(off.generate(**enc, max_new_tokens=20), alone)


def test_teacher_forcing_runs_ahead_without_changing_a_number(stories, monkeypatch):
    """Scoring runs each member ahead along the text (its own tokenization plus the tokens the
    schedule may commit early) in few forward calls; the scores are those of one call per
    commit, and the calls are far fewer."""
    tok = piece_tokenizer(list("abcdefghijklmnopqrstuvwxyz ,.") + ["the", " a", "ing", "Once"])
    small = tiny_model(len(tok), seed=2, bos=1, eos=2)
    text = ("Once upon a time, there was a little girl named Lily. She loved to play outside "
            "in the park with her friends. One day, she saw a big red ball.")
    enc = ByteTokenizer()(text, return_tensors="pt")["input_ids"]
    ens = CharEDModel.from_members([stories, (small, tok)], weights=[0.7, 0.3],
                                   marginalization="chared")
    ahead = ens(input_ids=enc)
    ens.speculation = dataclasses.replace(ens.speculation, run_ahead_bytes=0)
    plain = ens(input_ids=enc)
    assert torch.allclose(ahead.logits.exp(), plain.logits.exp(), atol=1e-6)  # float32 members
    observed = enc[0, 1:, None]
    scores = [float(o.logits[0, :-1].gather(-1, observed).sum()) for o in (ahead, plain)]
    assert scores[0] == pytest.approx(scores[1], rel=1e-5)
    calls, plain_calls = ahead.cache.forward_calls()[0], plain.cache.forward_calls()[0]
    assert all(4 * c < p for c, p in zip(calls, plain_calls, strict=True)), (calls, plain_calls)
