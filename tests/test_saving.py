"""Save/load: configs that name members, members saved beside the config, Auto classes,
remote code in a fresh interpreter, push_to_hub (offline), dtype and device_map."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import asset_path, piece_tokenizer, tiny_model
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, set_seed

from chared_hf import ByteTokenizer, CharEDConfig, CharEDModel


@pytest.fixture(scope="module")
def tiny_pair():
    tok = piece_tokenizer(["a", "b", "c", " ", "ab", "ca", " a"])
    return tiny_model(len(tok), seed=2, bos=1, eos=2), tok


@pytest.fixture(scope="module")
def mixed(tiny_pair):
    """One member named by reference (stories260K), one built in memory."""
    stories = str(asset_path("models/stories260K"))
    config = CharEDConfig(members=[stories], weights=[0.6])
    by_ref = CharEDModel(config).members[0]
    model = CharEDModel.from_members([(by_ref.model, by_ref.tokenizer), tiny_pair],
                                     weights=[0.6, 0.4])
    model.member_references[0] = {"name_or_path": stories}  # as CharEDModel(config) sets it
    return model


def _sample(model, seed=3, **kwargs):
    set_seed(seed)
    enc = ByteTokenizer()("Once upon", return_tensors="pt")
    return model.generate(**enc, max_new_tokens=24, do_sample=True, top_k=0, **kwargs)


def test_in_memory_members_are_saved_in_subfolders(tiny_pair, tmp_path):
    model = CharEDModel.from_members([tiny_pair, tiny_pair], weights=[2, 1])
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["members"] == [{"name_or_path": "./member_0"}, {"name_or_path": "./member_1"}]
    assert saved["weights"] == [2.0, 1.0] and saved["model_type"] == "chared"
    for name in ("generation_config.json", "tokenizer.json", "chared_remote.py",
                 "member_0/config.json", "member_1/tokenizer.json"):
        assert (tmp_path / name).is_file(), name
    again = CharEDModel.from_pretrained(tmp_path)
    assert torch.equal(_sample(model), _sample(again))


def test_referenced_members_stay_references(mixed, tmp_path):
    mixed.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["members"][0] == {"name_or_path": str(asset_path("models/stories260K"))}
    assert saved["members"][1] == {"name_or_path": "./member_1"}
    assert not (tmp_path / "member_0").exists()
    with pytest.raises(ValueError, match="pass local_members=True to allow absolute paths"):
        CharEDModel.from_pretrained(tmp_path)  # a local path outside the folder: consent needed
    again = CharEDModel.from_pretrained(tmp_path, local_members=True)
    assert again.member_weights == [0.6, 0.4]
    assert torch.equal(_sample(mixed), _sample(again))
    # Saving the reloaded ensemble again keeps the same layout.
    again.save_pretrained(tmp_path / "second")
    assert json.loads((tmp_path / "second" / "config.json").read_text())["members"] == \
        saved["members"]


def test_auto_classes_after_import(mixed, tmp_path):
    mixed.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CharEDConfig)
    assert isinstance(AutoTokenizer.from_pretrained(tmp_path), ByteTokenizer)
    model = AutoModelForCausalLM.from_pretrained(tmp_path, local_members=True)
    assert isinstance(model, CharEDModel)
    assert torch.equal(_sample(mixed), _sample(model))


def test_remote_code_in_a_fresh_interpreter(mixed, tmp_path):
    """chared_hf installed but not imported: auto_map + trust_remote_code load the ensemble."""
    mixed.save_pretrained(tmp_path)
    expected = ByteTokenizer().decode(_sample(mixed)[0])
    script = textwrap.dedent(f"""
        import sys
        from transformers import AutoModelForCausalLM, AutoTokenizer, set_seed
        assert "chared_hf" not in sys.modules
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True,
                                                     local_members=True)
        tok = AutoTokenizer.from_pretrained({str(tmp_path)!r}, trust_remote_code=True)
        print(type(model).__name__, type(tok).__name__)
        set_seed(3)
        out = model.generate(**tok("Once upon", return_tensors="pt"), max_new_tokens=24,
                             do_sample=True, top_k=0)
        print(repr(tok.decode(out[0])))
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = run.stdout.strip().splitlines()
    assert lines[-2] == "CharEDModel ByteTokenizer"
    assert lines[-1] == repr(expected)


def test_push_to_hub_uploads_what_save_pretrained_writes(mixed, tmp_path, monkeypatch):
    """Offline: the Hub calls are replaced; the uploaded folder is compared file by file."""
    import transformers.utils.hub as hub

    class FakeApi:
        def create_repo(self, repo_id, **kwargs):
            return type("Repo", (), {"repo_id": repo_id})()

    class FakeCard:
        def save(self, path):
            Path(path).write_text("card")

    uploaded = {}

    def fake_upload(self, working_dir, repo_id, **kwargs):
        for path in Path(working_dir).rglob("*"):
            if path.is_file():
                uploaded[str(path.relative_to(working_dir))] = path.read_bytes()
        return repo_id

    monkeypatch.setattr(hub, "hf_api", lambda: FakeApi())
    monkeypatch.setattr(hub, "create_and_tag_model_card", lambda *a, **k: FakeCard())
    monkeypatch.setattr(type(mixed), "_upload_modified_files", fake_upload)
    assert mixed.push_to_hub("someone/ensemble") == "someone/ensemble"
    mixed.save_pretrained(tmp_path)
    saved = {str(p.relative_to(tmp_path)): p.read_bytes() for p in tmp_path.rglob("*")
             if p.is_file()}
    assert uploaded.pop("README.md") == b"card"
    assert uploaded.keys() == saved.keys()
    for name, content in saved.items():
        if not name.endswith(".safetensors"):
            assert uploaded[name] == content, name


def test_dtype_and_device_map_reach_the_members(mixed, tmp_path):
    mixed.save_pretrained(tmp_path)
    model = CharEDModel.from_pretrained(tmp_path, dtype=torch.bfloat16, device_map="cpu",
                                        local_members=True)
    assert {m.model.dtype for m in model.members} == {torch.bfloat16}
    assert model.hf_device_map and set(model.hf_device_map.values()) <= {"cpu", 0, "cpu:0"}
    out = model.generate(**ByteTokenizer()("Once", return_tensors="pt"), max_new_tokens=8)
    assert out.shape[1] > 5


def test_per_member_options_in_the_config(tmp_path):
    stories = str(asset_path("models/stories260K"))
    config = CharEDConfig(members=[{"name_or_path": stories, "dtype": "bfloat16"},
                                   {"name_or_path": stories}])
    model = CharEDModel(config)
    assert [m.model.dtype for m in model.members] == [torch.bfloat16, torch.float32]
    with pytest.raises(ValueError, match="dtype: unknown torch dtype"):
        CharEDModel(CharEDConfig(members=[{"name_or_path": stories, "dtype": "float7"}]))


@pytest.mark.parametrize(
    ("members", "match"),
    [
        ([{"path": "x"}], r"members\[0\]: expected a Hub id, a folder, or a dict"),
        ([{"name_or_path": "x", "colour": 1}], r"members\[0\]: unknown keys \['colour'\]"),
        ([42], r"members\[0\]: expected a Hub id"),
    ],
)
def test_config_member_errors_name_the_field(members, match):
    with pytest.raises(ValueError, match=match):
        CharEDConfig(members=members)


def test_relative_member_needs_a_folder():
    with pytest.raises(ValueError, match="members: './member_0' is relative"):
        CharEDModel(CharEDConfig(members=["./member_0"]))


def test_a_saved_mode_is_kept_and_a_config_without_one_gets_the_exact_mode(tiny_pair, tmp_path):
    """``save_pretrained`` writes the mode and healing, so a saved paper-mode ensemble stays
    one; a config that names no mode (written before the exact mode was the default, or by
    hand) loads in the exact mode."""
    paper = CharEDModel.from_members([tiny_pair], marginalization="chared", heal_prompt=False)
    paper.save_pretrained(tmp_path / "paper")
    saved = json.loads((tmp_path / "paper" / "config.json").read_text())
    assert (saved["marginalization"], saved["heal_prompt"]) == ("chared", False)
    loaded = CharEDModel.from_pretrained(tmp_path / "paper")
    assert (loaded.config.marginalization, loaded.config.heal_prompt) == ("chared", False)
    del saved["marginalization"], saved["heal_prompt"]
    (tmp_path / "paper" / "config.json").write_text(json.dumps(saved))
    loaded = CharEDModel.from_pretrained(tmp_path / "paper")
    assert (loaded.config.marginalization, loaded.config.heal_prompt) == ("exact", True)
    overridden = CharEDModel.from_pretrained(tmp_path / "paper", marginalization="chared",
                                             heal_prompt=False)
    assert (overridden.config.marginalization, overridden.config.heal_prompt) == (
        "chared", False)
    with pytest.raises(ValueError, match="heal_prompt: expected True or False, got 'no'"):
        CharEDConfig(heal_prompt="no")
