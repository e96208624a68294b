"""What a published ensemble folder may make this package do: member code runs only with the
caller's consent (Python, Auto classes, the command line), member references stay inside the
ensemble's folder, ``gguf_file`` is a plain file name, weights load from safetensors only."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import save_tiny_member
from transformers import AutoModelForCausalLM

import chared_hf  # noqa: F401  (registers the Auto classes)
from chared_hf import ByteTokenizer, CharEDConfig, CharEDModel
from chared_hf.loading import load_member
from chared_hf.tools.cli import main

PIECES = ["a", "b", "c", " ", "\n", "ab", "ca", " a"]

# The member's own code: importing it writes a marker file (the "attack"), and it defines a
# working causal LM under a model type that Transformers does not know.
MEMBER_CODE = '''
from pathlib import Path

from transformers import LlamaConfig, LlamaForCausalLM

Path({marker!r}).write_text("the member's code ran")


class OwnConfig(LlamaConfig):
    model_type = "own_llama_{tag}"


class OwnForCausalLM(LlamaForCausalLM):
    config_class = OwnConfig
'''


def _member_with_code(folder: Path, marker: Path) -> Path:
    """A tiny member folder whose config points (``auto_map``) to its own Python file."""
    save_tiny_member(folder, PIECES, seed=3)
    tag = folder.parent.name.replace("-", "_")
    (folder / "own_model.py").write_text(MEMBER_CODE.format(marker=str(marker), tag=tag))
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = f"own_llama_{tag}"
    config["architectures"] = ["OwnForCausalLM"]
    config["auto_map"] = {"AutoConfig": "own_model.OwnConfig",
                          "AutoModelForCausalLM": "own_model.OwnForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def published(tmp_path):
    """An ensemble folder as a publisher could write it: one plain member, one member with its
    own code that the config marks ``trust_remote_code: true``."""
    marker = tmp_path / "marker.txt"
    ens = tmp_path / "ensemble"
    ens.mkdir()
    save_tiny_member(ens / "plain", ["a", "b", "c", " ", "\n", "bc", "a b", "cab"], seed=4)
    _member_with_code(ens / "own", marker)
    config = CharEDConfig(members=["./plain", {"name_or_path": "./own",
                                                "trust_remote_code": True}])
    config.save_pretrained(ens)
    ByteTokenizer().save_pretrained(ens)
    return ens, marker


def _generates(model) -> str:
    tok = ByteTokenizer()
    out = model.generate(**tok("ab", return_tensors="pt"), max_new_tokens=6)
    return tok.decode(out[0], skip_special_tokens=True)


def test_member_code_needs_the_callers_consent(published):
    ens, marker = published
    with pytest.raises(ValueError, match=r"members\[1\] \('./own'\): the config says this "
                       r"member needs its own code to run; pass trust_remote_code=True"):
        CharEDModel.from_pretrained(ens)
    assert not marker.exists()
    model = CharEDModel.from_pretrained(ens, trust_remote_code=True)
    assert marker.read_text() == "the member's code ran"
    assert type(model.members[1].model).__name__ == "OwnForCausalLM"
    assert _generates(model).startswith("ab")


def test_config_that_hides_the_need_still_cannot_run_code(published):
    """The config does not say the member needs code: Transformers is asked with consent
    False, and refuses before importing the member's file."""
    ens, marker = published
    config = json.loads((ens / "config.json").read_text())
    config["members"][1] = {"name_or_path": "./own"}
    (ens / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"members\[1\] \('./own'\): this member's folder "
                       r"contains its own code \(auto_map\), which runs only with "
                       r"trust_remote_code=True"):
        CharEDModel.from_pretrained(ens)
    assert not marker.exists()


def test_consent_can_name_members(published):
    ens, marker = published
    with pytest.raises(ValueError, match="needs its own code"):
        CharEDModel.from_pretrained(ens, trust_remote_code=["./plain"])
    assert not marker.exists()
    CharEDModel.from_pretrained(ens, trust_remote_code=["./own"])
    assert marker.exists()
    with pytest.raises(ValueError, match="trust_remote_code: expected True, False or a list"):
        CharEDModel.from_pretrained(ens, trust_remote_code="./own")


def test_config_object_loading_members_needs_consent(tmp_path):
    marker = tmp_path / "marker.txt"
    own = _member_with_code(tmp_path / "own", marker)
    config = CharEDConfig(members=[{"name_or_path": str(own), "trust_remote_code": True}])
    with pytest.raises(ValueError, match="needs its own code to run"):
        CharEDModel(config)
    assert not marker.exists()
    assert _generates(CharEDModel(config, trust_remote_code=True)).startswith("ab")
    assert marker.exists()


def test_auto_class_consent_reaches_the_members(published):
    """After ``import chared_hf`` the Auto classes use the installed package (the folder's own
    module is not run); ``trust_remote_code=True`` given to them is the caller's consent for
    this load, and reaches the members (docs/security.md)."""
    ens, marker = published
    with pytest.raises(ValueError, match="needs its own code to run"):
        AutoModelForCausalLM.from_pretrained(ens)
    assert not marker.exists()
    model = AutoModelForCausalLM.from_pretrained(ens, trust_remote_code=True)
    assert isinstance(model, CharEDModel) and marker.exists()


def test_command_line_needs_the_flag(tmp_path, capsys):
    marker = tmp_path / "marker.txt"
    own = _member_with_code(tmp_path / "own", marker)
    argv = ["generate", "--member", str(own), "--max-new-bytes", "4", "ab"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (after saving's progress bars)
    assert err == (f"chared generate: error: --member: cannot load {str(own)!r}: "
        "this member's folder contains its own code (auto_map), which runs only with "
        "--trust-remote-code; review it before allowing it")
    assert not marker.exists()
    assert main([*argv[:1], "--trust-remote-code", *argv[1:]]) == 0
    assert marker.exists()


@pytest.mark.parametrize("reference", ["./../outside", "./sub/../../outside", "../outside",
                                       "/tmp/outside", "~/outside", "./"])
def test_member_paths_stay_inside_the_folder(tmp_path, reference):
    save_tiny_member(tmp_path / "outside", PIECES, seed=3)
    ens = tmp_path / "ens"
    (ens / "sub").mkdir(parents=True)
    CharEDConfig(members=[reference]).save_pretrained(ens)
    with pytest.raises(ValueError, match=r"members\[0\] .*(may name members only by Hub id or "
                       r"by a './' path inside its own folder|leads outside)"):
        CharEDModel.from_pretrained(ens)


def test_symbolic_link_out_of_the_folder_is_refused(tmp_path):
    save_tiny_member(tmp_path / "outside", PIECES, seed=3)
    ens = tmp_path / "ens"
    ens.mkdir()
    os.symlink(tmp_path / "outside", ens / "link")
    CharEDConfig(members=["./link"]).save_pretrained(ens)
    with pytest.raises(ValueError, match=r"'link' leads outside the ensemble's folder"):
        CharEDModel.from_pretrained(ens)


def test_local_members_need_the_callers_word(tmp_path):
    """A saved config naming a folder elsewhere on this machine loads with the caller's
    ``local_members=True``; the caller's own config object may name any folder."""
    outside = save_tiny_member(tmp_path / "outside", PIECES, seed=3)
    assert _generates(CharEDModel(CharEDConfig(members=[str(outside)]))).startswith("ab")
    ens = tmp_path / "ens"
    CharEDConfig(members=[str(outside)]).save_pretrained(ens)
    with pytest.raises(ValueError, match=r"members\[0\] .* pass local_members=True"):
        CharEDModel.from_pretrained(ens)
    assert _generates(CharEDModel.from_pretrained(ens, local_members=True)).startswith("ab")
    CharEDConfig(members=["./../outside"]).save_pretrained(ens)
    with pytest.raises(ValueError, match="inside its own folder"):  # never a climb out
        CharEDModel.from_pretrained(ens, local_members=True)


@pytest.mark.parametrize("gguf", ["../model.gguf", "sub/model.gguf", "/tmp/model.gguf",
                                  "model.bin", ".model.gguf"])
def test_gguf_file_is_a_plain_name(tmp_path, gguf):
    with pytest.raises(ValueError, match=r"gguf_file must be a plain '.gguf' file name"):
        load_member({"name_or_path": "./m", "gguf_file": gguf}, base=str(tmp_path))


def test_pickled_weights_need_the_callers_word(tmp_path):
    """A member stored only as pytorch_model.bin: refused unless use_safetensors=False."""
    ens = tmp_path / "ens"
    member = save_tiny_member(ens / "m", PIECES, seed=3)
    from safetensors.torch import load_file

    torch.save(load_file(member / "model.safetensors"), member / "pytorch_model.bin")
    (member / "model.safetensors").unlink()
    assert (member / "pytorch_model.bin").is_file()
    CharEDConfig(members=["./m"]).save_pretrained(ens)
    with pytest.raises(OSError, match=r"members\[0\] \('./m'\): no safetensors weights; "
                       r"loading pickled weights .* needs the caller's use_safetensors=False"):
        CharEDModel.from_pretrained(ens)
    assert _generates(CharEDModel.from_pretrained(ens, use_safetensors=False)).startswith("ab")


def test_fresh_interpreter_auto_class_without_import(published, tmp_path):
    """Without ``import chared_hf``, ``trust_remote_code=True`` runs the ensemble folder's own
    module (``chared_remote.py``, written by ``save_pretrained``): that is Transformers'
    consent for the folder's code, and it reaches the members too."""
    ens, marker = published
    folder = tmp_path / "saved"
    shutil.copytree(ens, folder)
    from chared_hf.loading import write_remote_code

    config = json.loads((folder / "config.json").read_text())
    from chared_hf.loading import AUTO_MAP

    config["auto_map"] = AUTO_MAP
    (folder / "config.json").write_text(json.dumps(config))
    write_remote_code(folder)
    code = textwrap.dedent(f"""
        from transformers import AutoModelForCausalLM
        try:
            AutoModelForCausalLM.from_pretrained({str(folder)!r})
        except ValueError as err:
            print("refused:", "trust_remote_code" in str(err))
        import os
        print("marker before consent:", os.path.exists({str(marker)!r}))
        model = AutoModelForCausalLM.from_pretrained({str(folder)!r}, trust_remote_code=True)
        print("loaded:", type(model).__name__, os.path.exists({str(marker)!r}))
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRUST_REMOTE_CODE": "0"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "refused: True" in done.stdout
    assert "marker before consent: False" in done.stdout
    assert "loaded: CharEDModel True" in done.stdout
