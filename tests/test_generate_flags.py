"""``CharEDModel.generate`` with Transformers' stock flags: each flag's behaviour, byte by byte.

Greedy and sampling (temperature, top-k, top-p, seeds), ``max_new_tokens`` in bytes, EOS,
``stop_strings``, user logits processors and stopping criteria, streamers on multi-byte UTF-8,
``num_return_sequences``, ``output_scores``, left-padded batches, and the clear errors for the
modes the ensemble does not support.
"""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import EosBiased, piece_tokenizer, tiny_model
from transformers import (
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    StoppingCriteria,
    StoppingCriteriaList,
    TextIteratorStreamer,
    TextStreamer,
    set_seed,
)

from chared_hf import ByteTokenizer, CharEDModel, EnsembleCache
from chared_hf.members.token_tree import CACHE_KW
from chared_hf.tokenization import BOS_ID, EOS_ID, PAD_ID, VOCAB_SIZE

PIECES = ["a", "b", "c", " ", "ab", "bc", "ca", " a", "abc", "cab", "b c"]
# Whole multi-byte characters only (2, 3, 6 and 4 bytes), so the ensemble's text is valid UTF-8.
MULTIBYTE = ["é", "日本", "😀", " ", "a", "\n"]
PROMPT = "Once upon a time"


@pytest.fixture(scope="module")
def tok():
    return ByteTokenizer()


@pytest.fixture(scope="module")
def pair():
    ptok = piece_tokenizer(PIECES)
    return tiny_model(len(ptok), seed=1, bos=1, eos=2), ptok


@pytest.fixture(scope="module")
def abc():
    """A member whose tokens are single bytes: ε ("the token ends here") is always certain."""
    ptok = piece_tokenizer(["a", "b", "c"])
    return tiny_model(len(ptok), seed=4, bos=1, eos=2), ptok


@pytest.fixture(scope="module")
def solo(stories):
    return CharEDModel.from_members([stories])


@pytest.fixture(scope="module")
def duo(pair, stories):
    return CharEDModel.from_members([pair, stories], weights=[0.3, 0.7])


@pytest.fixture(scope="module")
def duo_paper(pair, stories):
    """The pair in the paper mode (its commits, ε and idle rows' guesses)."""
    return CharEDModel.from_members([pair, stories], weights=[0.3, 0.7],
                                    marginalization="chared")


@pytest.fixture(scope="module")
def multibyte():
    ptok = piece_tokenizer(MULTIBYTE)
    return CharEDModel.from_members([(tiny_model(len(ptok), seed=3, bos=1, eos=2), ptok)])


class _EosAfter(EosBiased):
    """A member that wants to stop once its sequence holds ``after`` tokens (row by row)."""

    def __init__(self, model, eos: int, after: int):
        super().__init__(model, eos, bias=50.0)
        self.after = after

    def forward(self, **kwargs):
        out = self.inner(**kwargs)
        positions = kwargs.get("position_ids")  # each query's position in its own sequence
        if positions is None:
            past = kwargs.get(CACHE_KW)
            seen = past.get_seq_length() if past is not None else 0
            positions = torch.arange(seen, seen + kwargs["input_ids"].shape[1])[None]
        out.logits[..., self.eos] += self.bias * (positions + 1 >= self.after).to(out.logits)
        return out


class _BanByte(LogitsProcessor):
    def __init__(self, byte: int):
        self.byte, self.calls = byte, 0

    def __call__(self, input_ids, scores):
        self.calls += 1
        scores = scores.clone()
        scores[:, self.byte] = -float("inf")
        return scores


class _StopAfter(StoppingCriteria):
    """Row ``k`` stops once it has ``counts[k]`` new ids."""

    def __init__(self, prompt_len: int, counts: list[int]):
        self.prompt_len, self.counts = prompt_len, torch.tensor(counts)

    def __call__(self, input_ids, scores, **kwargs):
        return (input_ids.shape[1] - self.prompt_len) >= self.counts


class _Chunks(TextStreamer):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunks: list[tuple[str, bool]] = []

    def on_finalized_text(self, text: str, stream_end: bool = False):
        self.chunks.append((text, stream_end))


def _enc(tok, text=PROMPT):
    return tok(text, return_tensors="pt")


def _new(out, enc) -> list[int]:
    return out[0, enc["input_ids"].shape[1]:].tolist()


def _bytes(ids) -> bytes:
    return bytes(i for i in ids if i < 256)


def _strip_pad(ids: list[int]) -> list[int]:
    while ids and ids[-1] == PAD_ID:
        ids = ids[:-1]
    return ids


# -- greedy --------------------------------------------------------------------------------------
def test_greedy_is_deterministic_and_takes_the_argmax(duo, tok):
    enc = _enc(tok)
    a = duo.generate(**enc, max_new_tokens=30, return_dict_in_generate=True, output_scores=True)
    b = duo.generate(**enc, max_new_tokens=30)
    assert torch.equal(a.sequences, b)
    new = _new(a.sequences, enc)
    assert len(new) == len(a.scores)
    assert new == [int(s[0].argmax()) for s in a.scores]
    # The first step is the model's own distribution after the prompt, computed independently.
    first = duo(**enc, **{CACHE_KW: EnsembleCache(decide="greedy")}).logits[:, -1]
    assert torch.allclose(first, a.scores[0], atol=1e-6)
    assert new[0] == int(first[0].argmax())


# -- sampling ------------------------------------------------------------------------------------
def test_sampling_same_seed_same_text_other_seeds_other_texts(duo, tok):
    enc = _enc(tok, "The cat")
    kwargs = dict(max_new_tokens=24, do_sample=True, temperature=0.9, top_k=40, top_p=0.95)
    set_seed(11)
    a = duo.generate(**enc, **kwargs)
    set_seed(11)
    b = duo.generate(**enc, **kwargs)
    assert torch.equal(a, b)
    texts = set()
    for seed in range(4):
        set_seed(seed)
        texts.add(_bytes(duo.generate(**enc, **kwargs)[0]))
    assert len(texts) > 1


def test_temperature_top_k_and_top_p_act_on_the_byte_distribution(solo, tok):
    enc = _enc(tok)
    common = dict(max_new_tokens=16, do_sample=True, return_dict_in_generate=True,
                  output_scores=True, output_logits=True)
    set_seed(0)
    out = solo.generate(**enc, temperature=0.5, top_k=0, top_p=1.0, **common)
    for raw, processed in zip(out.logits, out.scores, strict=True):
        finite = torch.isfinite(raw)
        assert torch.allclose(processed[finite], raw[finite] / 0.5, atol=1e-5)
    set_seed(0)
    out = solo.generate(**enc, top_k=3, **common)
    for processed, byte in zip(out.scores, _new(out.sequences, enc), strict=True):
        assert int(torch.isfinite(processed[0]).sum()) <= 3
        assert torch.isfinite(processed[0, byte])
    set_seed(0)
    out = solo.generate(**enc, top_k=0, top_p=0.6, **common)
    for raw, processed, byte in zip(out.logits, out.scores, _new(out.sequences, enc),
                                    strict=True):
        kept = torch.isfinite(processed[0])
        probs = raw[0].double().exp()
        mass = float(probs[kept].sum())
        assert mass >= 0.6 - 1e-6  # the nucleus holds top_p ...
        assert mass - float(probs[kept].min()) < 0.6 + 1e-6  # ... and is the smallest such set
        assert kept[byte]


@pytest.mark.parametrize("flags", [dict(top_k=1), dict(temperature=1e-3, top_k=0)],
                         ids=["top_k=1", "temperature=1e-3"])
def test_near_deterministic_sampling_equals_greedy_with_single_byte_tokens(abc, tok, flags):
    """With single-byte tokens the token boundary is never in doubt, so top_k=1 and a tiny
    temperature leave nothing to chance: every seed gives the greedy text."""
    ens = CharEDModel.from_members([abc])
    enc = _enc(tok, "abca")
    greedy = ens.generate(**enc, max_new_tokens=20)
    for seed in range(3):
        set_seed(seed)
        assert torch.equal(ens.generate(**enc, max_new_tokens=20, do_sample=True, **flags),
                           greedy)


def test_top_k_1_picks_the_argmax_byte_at_every_step(solo, tok):
    enc = _enc(tok)
    set_seed(0)
    out = solo.generate(**enc, max_new_tokens=40, do_sample=True, top_k=1,
                        return_dict_in_generate=True, output_logits=True)
    assert _new(out.sequences, enc) == [int(raw[0].argmax()) for raw in out.logits]


@pytest.mark.parametrize("flags", [dict(top_k=1), dict(temperature=1e-3, top_k=0)],
                         ids=["top_k=1", "temperature=1e-3"])
def test_near_deterministic_sampling_picks_argmax_bytes(solo, tok, flags):
    """Documented: under do_sample=True the token end (ε) is still drawn with probability J(ε)
    inside forward, so these flags make every *byte* the argmax of its row, while different
    seeds may still end tokens at different places (do_sample=False is the paper's greedy)."""
    enc = _enc(tok)
    for seed in range(3):
        set_seed(seed)
        out = solo.generate(**enc, max_new_tokens=40, do_sample=True, **flags,
                            return_dict_in_generate=True, output_logits=True)
        new = _new(out.sequences, enc)
        assert new == [int(raw[0].argmax()) for raw in out.logits]


# -- length: max_new_tokens counts bytes --------------------------------------------------------
@pytest.mark.parametrize("n", [1, 7, 23])
def test_max_new_tokens_counts_bytes(solo, multibyte, tok, n):
    enc = _enc(tok)
    assert len(_new(solo.generate(**enc, max_new_tokens=n), enc)) == n
    # A member that never ends: exactly n new byte ids, multi-byte characters included.
    ((model, ptok),) = [(m.model, m.tokenizer) for m in multibyte.members]
    never = CharEDModel.from_members([(EosBiased(model, eos=2, bias=-100.0), ptok)])
    enc = _enc(tok, "a")
    for seed in range(3):
        set_seed(seed)
        new = _new(never.generate(**enc, max_new_tokens=n, do_sample=True), enc)
        assert len(new) == n and all(i < 256 for i in new)


def test_max_new_tokens_counts_bytes_not_characters(multibyte, tok):
    ((model, ptok),) = [(m.model, m.tokenizer) for m in multibyte.members]
    never = CharEDModel.from_members([(EosBiased(model, eos=2, bias=-100.0), ptok)])
    enc = _enc(tok, "a")
    shorter = 0
    for seed in range(4):
        set_seed(seed)
        new = _new(never.generate(**enc, max_new_tokens=24, do_sample=True), enc)
        assert len(new) == 24
        shorter += len(bytes(new).decode("utf-8", "replace")) < 24
    assert shorter  # multi-byte characters were generated: fewer characters than bytes


def test_min_new_tokens_holds_back_eos_for_that_many_bytes(abc, tok):
    model, ptok = abc
    eager = CharEDModel.from_members([(EosBiased(model, eos=2, bias=30.0), ptok)])
    enc = _enc(tok, "ab")
    assert _new(eager.generate(**enc, max_new_tokens=10), enc) == [EOS_ID]
    new = _new(eager.generate(**enc, max_new_tokens=10, min_new_tokens=4), enc)
    assert len(new) == 5 and all(i < 256 for i in new[:4]) and new[4] == EOS_ID


def test_max_length_counts_prompt_and_new_bytes(solo, tok):
    enc = _enc(tok)
    assert solo.generate(**enc, max_length=30).shape[1] == 30


# -- end of text ---------------------------------------------------------------------------------
@pytest.mark.parametrize("do_sample", [False, True])
def test_eos_ends_the_text(pair, tok, do_sample):
    model, ptok = pair
    eager = CharEDModel.from_members([(EosBiased(model, eos=2, bias=30.0), ptok)])
    enc = _enc(tok, "ab")
    set_seed(0)
    out = eager.generate(**enc, max_new_tokens=50, do_sample=do_sample)
    assert out[0].tolist() == [*enc["input_ids"][0].tolist(), EOS_ID]


def test_eos_ends_one_row_while_the_other_goes_on(stories, tok):
    model, mtok = stories
    long, short = "Once upon a time, there was", "Once"
    after = len(mtok(long)["input_ids"]) + 3  # the long prompt's row wants to stop first
    ens = CharEDModel.from_members([(_EosAfter(model, eos=2, after=after), mtok)])
    batch = tok([long, short], return_tensors="pt", padding=True)
    out = ens.generate(**batch, max_new_tokens=80)
    width = batch["input_ids"].shape[1]
    rows = [out[k, width:].tolist() for k in range(2)]
    ends = [row.index(EOS_ID) for row in rows]
    assert 0 < ends[0] < ends[1]
    assert all(i == PAD_ID for i in rows[0][ends[0] + 1:])  # nothing after the row's EOS
    for prompt, row, end in zip((long, short), rows, ends, strict=True):
        enc = _enc(tok, prompt)
        assert _new(ens.generate(**enc, max_new_tokens=80), enc) == row[:end + 1]


def test_eos_token_id_flag_ends_at_a_chosen_byte(solo, tok):
    enc = _enc(tok)
    full = _bytes(_new(solo.generate(**enc, max_new_tokens=60), enc))
    assert b"." in full
    new = _new(solo.generate(**enc, max_new_tokens=60, eos_token_id=[EOS_ID, ord(".")]), enc)
    assert _bytes(new) == full[:full.index(b".") + 1]


# -- stop strings --------------------------------------------------------------------------------
@pytest.mark.parametrize("stops", [["little"], [" girl", "Lily"], ["."]])
def test_stop_strings_stop_right_after_the_first_match(solo, tok, stops):
    enc = _enc(tok)
    full = tok.decode(_new(solo.generate(**enc, max_new_tokens=60), enc))
    first = min(full.index(s) + len(s) for s in stops if s in full)
    out = solo.generate(**enc, max_new_tokens=60, stop_strings=stops, tokenizer=tok)
    assert tok.decode(_new(out, enc)) == full[:first]


def test_multi_byte_stop_string_stops_sampling_right_after_it(multibyte, tok):
    enc = _enc(tok, "a")
    checked = 0
    for seed in range(6):
        set_seed(seed)
        full = _bytes(_new(multibyte.generate(**enc, max_new_tokens=40, do_sample=True), enc))
        stop = "日本".encode()
        if stop not in full:
            continue
        set_seed(seed)
        out = multibyte.generate(**enc, max_new_tokens=40, do_sample=True,
                                 stop_strings=["日本"], tokenizer=tok)
        assert _bytes(_new(out, enc)) == full[:full.index(stop) + len(stop)]
        checked += 1
    assert checked >= 2


# -- user processors and stopping criteria -------------------------------------------------------
def test_logits_processor_that_bans_a_byte(solo, tok):
    enc = _enc(tok)
    full = _new(solo.generate(**enc, max_new_tokens=60), enc)
    dot = full.index(ord("."))
    ban = _BanByte(ord("."))
    out = solo.generate(**enc, max_new_tokens=60, logits_processor=LogitsProcessorList([ban]),
                        return_dict_in_generate=True, output_scores=True)
    new = _new(out.sequences, enc)
    assert ord(".") not in new and ban.calls == len(new) == 60
    assert new[:dot] == full[:dot] and new[dot] != ord(".")  # same text until the ban bites
    for score, byte in zip(out.scores, new, strict=True):
        assert torch.isfinite(score[0, byte]) and byte == int(score[0].argmax())


def test_banning_a_byte_mid_token_still_gives_bytes_the_model_allows(solo, tok):
    """Mid-token, "the token goes on" can leave one allowed byte; banning it makes the members
    commit their pending bytes and the processors run again on the new distribution."""
    enc = _enc(tok)
    ban = _BanByte(ord("e"))
    out = solo.generate(**enc, max_new_tokens=60, logits_processor=LogitsProcessorList([ban]),
                        return_dict_in_generate=True, output_scores=True)
    new = _new(out.sequences, enc)
    assert ord("e") not in new
    assert all(torch.isfinite(s[0, b]) for s, b in zip(out.scores, new, strict=True))


def test_sampling_with_a_byte_banned_mid_token(solo, tok):
    enc = _enc(tok)
    for seed in range(4):
        set_seed(seed)
        out = solo.generate(**enc, max_new_tokens=80, do_sample=True,
                            logits_processor=LogitsProcessorList([_BanByte(ord("e"))]))
        assert ord("e") not in _new(out, enc)


def test_stopping_criteria_stop_each_row_after_its_own_count(duo, tok):
    batch = tok(["Once upon a time", "The dog"], return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    full = duo.generate(**batch, max_new_tokens=20)
    out = duo.generate(**batch, max_new_tokens=20,
                       stopping_criteria=StoppingCriteriaList([_StopAfter(width, [5, 9])]))
    assert out.shape[1] == width + 9
    assert out[0, width:].tolist()[5:] == [PAD_ID] * 4  # row 0 stopped after 5 new bytes
    for k, n in enumerate((5, 9)):
        assert out[k, width:width + n].tolist() == full[k, width:width + n].tolist()
        assert all(i < 256 for i in out[k, width:width + n].tolist())


# -- streamers -----------------------------------------------------------------------------------
def _valid_samples(model, tok, enc, seeds=range(10)):
    """(seed, new ids) for samples whose new text is valid UTF-8 with non-ASCII characters."""
    found = []
    for seed in seeds:
        set_seed(seed)
        new = _new(model.generate(**enc, max_new_tokens=40, do_sample=True), enc)
        data = _bytes(new)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue  # cut inside a character by max_new_tokens
        if any(b >= 0x80 for b in data):
            found.append((seed, new))
    assert len(found) >= 3
    return found


def test_text_streamer_never_prints_a_replacement_character(multibyte, tok, capsys):
    enc = _enc(tok, "a")
    mid_character = streamed_early = False
    for seed, new in _valid_samples(multibyte, tok, enc):
        text = tok.decode(new, skip_special_tokens=True)
        # A naive byte-by-byte decoder would show U+FFFD: some prefix ends inside a character.
        mid_character |= any("\ufffd" in tok.decode(new[:k]) for k in range(1, len(new)))
        streamer = _Chunks(tok, skip_prompt=True, skip_special_tokens=True)
        set_seed(seed)
        assert _new(multibyte.generate(**enc, max_new_tokens=40, do_sample=True,
                                       streamer=streamer), enc) == new
        chunks = [c for c, _ in streamer.chunks]
        assert not any("\ufffd" in c for c in chunks)
        assert "".join(chunks) == text
        assert streamer.chunks[-1][1] and not any(end for _, end in streamer.chunks[:-1])
        streamed_early |= any(any(ord(ch) >= 0x80 for ch in c) for c, _ in streamer.chunks[:-1])
        # The stock TextStreamer prints the same text, then a newline.
        capsys.readouterr()
        set_seed(seed)
        multibyte.generate(**enc, max_new_tokens=40, do_sample=True,
                           streamer=TextStreamer(tok, skip_prompt=True, skip_special_tokens=True))
        assert capsys.readouterr().out == text + "\n"
    assert mid_character and streamed_early


def test_text_iterator_streamer_yields_the_new_text(multibyte, tok):
    enc = _enc(tok, "a")
    for seed, new in _valid_samples(multibyte, tok, enc, seeds=range(10)):
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True,
                                        timeout=30)
        set_seed(seed)
        kwargs = dict(**enc, max_new_tokens=40, do_sample=True, streamer=streamer)
        worker = threading.Thread(target=multibyte.generate, kwargs=kwargs)
        worker.start()
        chunks = list(streamer)
        worker.join()
        assert not any("\ufffd" in c for c in chunks)
        assert "".join(chunks) == tok.decode(new, skip_special_tokens=True)


# -- several sequences ---------------------------------------------------------------------------
def test_num_return_sequences_samples_several_rows(solo, tok):
    enc = _enc(tok)
    prompt = enc["input_ids"][0].tolist()
    kwargs = dict(max_new_tokens=30, do_sample=True, top_k=0, num_return_sequences=4)
    set_seed(0)
    out = solo.generate(**enc, **kwargs)
    assert out.shape[0] == 4
    assert all(row[:len(prompt)] == prompt for row in out.tolist())
    assert len({_bytes(row) for row in out.tolist()}) >= 2
    set_seed(0)
    assert torch.equal(solo.generate(**enc, **kwargs), out)


# -- scores --------------------------------------------------------------------------------------
def test_output_scores_are_log_probabilities_one_row_per_byte(duo, tok):
    batch = tok(["Once upon a time", "The dog"], return_tensors="pt", padding=True)
    width = batch["input_ids"].shape[1]
    out = duo.generate(**batch, max_new_tokens=12, return_dict_in_generate=True,
                       output_scores=True, output_logits=True)
    new = out.sequences[:, width:]
    assert len(out.scores) == new.shape[1] == 12
    for step, (score, raw) in enumerate(zip(out.scores, out.logits, strict=True)):
        assert score.shape == (2, VOCAB_SIZE)
        assert torch.equal(score, raw)  # greedy with no processors: scores are unprocessed
        probs = score.double().exp()
        assert torch.allclose(probs.sum(-1), torch.ones(2, dtype=torch.float64), atol=1e-5)
        assert torch.all(probs[:, [BOS_ID, PAD_ID]] == 0)
        assert torch.equal(new[:, step], score.argmax(-1))


# -- batches -------------------------------------------------------------------------------------
def test_left_padded_batch_gives_each_prompts_greedy_text(duo, tok):
    prompts = ["Once upon a time", "The dog", "Tom saw a café"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    assert batch["input_ids"][1, 0] == PAD_ID and batch["attention_mask"][1, 0] == 0
    width = batch["input_ids"].shape[1]
    together = duo.generate(**batch, max_new_tokens=16)
    unmasked = duo.generate(input_ids=batch["input_ids"], max_new_tokens=16)
    assert torch.equal(together, unmasked)
    for k, prompt in enumerate(prompts):
        enc = _enc(tok, prompt)
        alone = _new(duo.generate(**enc, max_new_tokens=16), enc)
        assert _strip_pad(together[k, width:].tolist()) == alone
        assert _bytes(together[k]) == _bytes(enc["input_ids"][0]) + _bytes(alone)


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_a_batch_runs_each_member_once_per_step_for_all_rows(duo, duo_paper, tok, mode):
    """The rows of a batch queue their member calls and each member runs them together: the
    batch costs fewer calls than its rows one by one (in the paper mode far fewer, at most
    two rounds a byte), and gives the same texts."""
    duo = duo_paper if mode == "chared" else duo
    prompts = ["Once upon a time", "The little dog", "Tom and his mom", "One day, Lily"]
    batch = tok(prompts, return_tensors="pt", padding=True)
    out = duo.generate(**batch, max_new_tokens=40, return_dict_in_generate=True)
    batched = out.cache.forward_calls()[0]  # the members' calls, shared by the rows
    alone = [0, 0]
    for k, prompt in enumerate(prompts):
        enc = _enc(tok, prompt)
        single = duo.generate(**enc, max_new_tokens=40, return_dict_in_generate=True)
        alone = [a + c for a, c in zip(alone, single.cache.forward_calls()[0], strict=True)]
        width = batch["input_ids"].shape[1]
        assert _strip_pad(out.sequences[k, width:].tolist()) == _new(single.sequences, enc)
    # Paper mode: at most the prompt, then two rounds a byte (commits of members that cannot go
    # on, then the joint commit), however many rows: here 4 rows share each member's calls.
    # Exact mode: each row alone runs ahead along its own guess of the text, so a batch saves
    # less, but it still saves.
    if mode == "chared":
        assert all(b <= 1 + 2 * 40 and 3 * b < 2 * a for b, a in zip(batched, alone,
                                                                        strict=True))
    assert all(b < a for b, a in zip(batched, alone, strict=True)), (batched, alone)


def test_idle_rows_guess_their_next_token_in_other_rows_calls(duo_paper, tok, monkeypatch):
    """Where a member runs a call for some rows, each other row (its lane would be padding)
    runs a guess of the member's next commit too: the greedy steps ahead tell which bytes it
    commits (``speculation.predicted_commits``), else its likeliest token after its
    pending bytes. A later commit of that token costs no call. Fewer calls than with the
    likeliest tokens only, and than without guesses; the same texts."""
    from chared_hf.decoding import speculation
    from chared_hf.decoding.paper import SequenceState

    prompts = ["Once upon a time", "The little dog", "Tom and his mom", "One day, Lily"]
    batch = tok(prompts, return_tensors="pt", padding=True)

    def run():
        out = duo_paper.generate(**batch, max_new_tokens=40, return_dict_in_generate=True)
        return out.sequences, sum(out.cache.forward_calls()[0])

    seqs, calls = run()
    monkeypatch.setattr(speculation, "predicted_commits", lambda row: {})  # likeliest only
    likeliest_seqs, likeliest_calls = run()
    monkeypatch.setattr(SequenceState, "idle", lambda self, tree, busy: [])  # no guesses
    plain_seqs, plain_calls = run()
    assert torch.equal(seqs, plain_seqs) and torch.equal(likeliest_seqs, plain_seqs)
    assert calls < likeliest_calls < plain_calls, (calls, likeliest_calls, plain_calls)


@pytest.mark.parametrize("weighting", ["fixed", "switching", "bayes"])
def test_greedy_steps_ahead_predict_the_next_commits(pair, stories, tok, monkeypatch,
                                                    weighting):
    """Under greedy decoding, the commits ``predicted_commits`` finds are the ones that
    happen, with weights that move too: from the node it was predicted at, each member
    commits exactly the predicted bytes (where it commits before the text ends). Some are
    found past commits that earlier guesses ran, and asked again the steps ahead mostly go
    on where they stopped (or from a later point along them) instead of starting over."""
    from chared_hf.decoding import speculation
    from chared_hf.decoding.paper import MemberState
    from chared_hf.decoding.speculation import _Ahead

    predicted, committed, alive = [], {}, []  # alive: no node's id is reused
    beyond, asks = [0], [0]  # predictions after a commit an earlier guess ran; asks
    predict = speculation.predicted_commits

    def recording(self, *args, **kwargs):
        asks[0] += 1
        found = predict(self, *args, **kwargs)
        beyond[0] += sum(node is not self.members[i].node for i, (node, _) in found.items())
        predicted.extend((id(self.members[i]), id(node),
                          self.members[i].member.token_bytes.pieces[token])
                         for i, (node, token) in found.items())
        alive.extend(node for node, _ in found.values())
        return found

    finish = MemberState.finish_commit

    def finishing(self, ending):
        committed.setdefault((id(self), id(self.node)), self.committing[0])
        alive.append(self.node)
        finish(self, ending)

    started = [0]  # steps ahead started over, not resumed (``_Ahead``)
    fresh = _Ahead.__init__

    def starting(self, *args):
        started[0] += 1
        fresh(self, *args)

    monkeypatch.setattr(speculation, "predicted_commits", recording)
    monkeypatch.setattr(MemberState, "finish_commit", finishing)
    monkeypatch.setattr(_Ahead, "__init__", starting)
    duo = CharEDModel.from_members([pair, stories], weights=[0.5, 0.5], weighting=weighting,
                                   switch_rate=0.05, marginalization="chared")
    prompts = ["Once upon a time", "The little dog", "Tom and his mom", "One day, Lily"]
    duo.generate(**tok(prompts, return_tensors="pt", padding=True), max_new_tokens=40)
    assert len(predicted) > 10
    made = [committed.get((member, node)) for member, node, _ in predicted]
    pairs = [(m, p) for m, (*_, p) in zip(made, predicted, strict=True) if m is not None]
    assert len(pairs) > 10 and all(m == p for m, p in pairs), pairs
    assert beyond[0] > 0
    assert started[0] < asks[0] / 2  # mostly resumed where they stopped, or rebased



class Bigram(torch.nn.Module):
    """A member whose next-token logits depend on the last token only: ``table[last id]``
    (the inner tiny model keeps the cache and the shapes)."""

    def __init__(self, model, table: torch.Tensor):
        super().__init__()
        self.inner, self.table = model, table

    @property
    def device(self):
        return self.inner.device

    def forward(self, input_ids, **kwargs):
        out = self.inner(input_ids=input_ids, **kwargs)
        out.logits = self.table[input_ids[:, input_ids.shape[1] - out.logits.shape[1]:]]
        return out


@pytest.mark.parametrize(("weighting", "commit"), [("fixed", b"xz"), ("bayes", b"xy")])
def test_the_steps_ahead_move_the_weights(tok, weighting, commit):
    """Greedy, after the prompt "s": both members' bytes are x, then y or z, then the token
    ends. With equal fixed weights the pair reads x (0.51 against q 0.49), then z (0.675);
    Bayes weights move to 0.902/0.098 on reading x (0.92 against 0.1), so y wins (0.506
    against 0.494). ``predicted_commits`` must move its weights as the row will to see it."""
    from chared_hf.decoding.paper import SequenceState
    from chared_hf.decoding.speculation import predicted_commits

    ptok = piece_tokenizer(["s", "xy", "xz", "q"])  # ids 3..6 after <unk>, <s>, </s>
    probs = [{4: 0.506, 5: 0.414, 6: 0.08}, {4: 0.01, 5: 0.09, 6: 0.9}]  # after "s"
    members = []
    for seed, after_s in enumerate(probs):
        table = torch.full((len(ptok), len(ptok)), -1e4)
        table[:, 3:] = 0.0  # otherwise uniform over the text tokens
        table[3] = -1e4
        for i, p in after_s.items():
            table[3, i] = float(torch.tensor(p).log())
        members.append((Bigram(tiny_model(len(ptok), seed=seed, bos=1, eos=2), table), ptok))
    ens = CharEDModel.from_members(members, weights=[0.5, 0.5], weighting=weighting,
                                   marginalization="chared")
    row = ens._new_row(EnsembleCache(decide="greedy"))
    assert isinstance(row, SequenceState)
    row.start(b"s", True)
    token = {b"xy": 4, b"xz": 5}[commit]
    assert predicted_commits(row) == {i: (m.node, token) for i, m in enumerate(row.members)}
    out = ens.generate(**tok("s", return_tensors="pt"), max_new_tokens=3, do_sample=False)
    assert tok.decode(out[0, 2:4]) == commit.decode()  # what greedy generation reads

# -- unsupported modes ---------------------------------------------------------------------------
def test_beam_search_is_rejected_clearly(solo, tok):
    enc = _enc(tok, "ab")
    with pytest.raises(ValueError, match="num_beams: beam search is not supported"):
        solo.generate(**enc, num_beams=2, max_new_tokens=3)
    with pytest.raises(ValueError, match="num_beams: beam search is not supported"):
        solo.generate(**enc, generation_config=GenerationConfig(num_beams=3, max_new_tokens=3))


def test_assisted_decoding_is_rejected_clearly(solo, tok):
    enc = _enc(tok, "ab")
    with pytest.raises(ValueError, match="assistant_model: assisted decoding"):
        solo.generate(**enc, assistant_model=solo, max_new_tokens=3)
    with pytest.raises(ValueError, match="assistant_model: assisted decoding"):
        solo.generate(**enc, prompt_lookup_num_tokens=3, max_new_tokens=3)
