"""Members on different devices and dtypes. The CUDA tests run when a GPU is present."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import asset_path, piece_tokenizer, tiny_model
from transformers import pipeline

from chared_hf import ByteTokenizer, CharEDConfig, CharEDModel

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA GPU on this machine")


@pytest.fixture(scope="module")
def tok():
    return ByteTokenizer()


def _pair(dtype=torch.float32, device="cpu"):
    ptok = piece_tokenizer(["a", "b", "c", " ", "ab", "bc", "ca", " a"])
    return tiny_model(len(ptok), seed=1, bos=1, eos=2).to(device=device, dtype=dtype), ptok


def test_members_in_different_dtypes(tok, stories):
    model = CharEDModel.from_members([_pair(torch.bfloat16), stories])
    enc = tok("Once upon a", return_tensors="pt")
    logits = model(**enc).logits
    sums = logits.exp().sum(-1)
    assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    out = model.generate(**enc, max_new_tokens=16)
    assert out.shape[1] == enc["input_ids"].shape[1] + 16


@needs_cuda
def test_members_on_cpu_and_cuda(tok, stories):
    enc = tok("Once upon a", return_tensors="pt")
    on_cpu = CharEDModel.from_members([_pair(), stories])
    mixed = CharEDModel.from_members([_pair(device="cuda"), stories])
    assert {m.model.device.type for m in mixed.members} == {"cuda", "cpu"}
    a, b = on_cpu(**enc).logits, mixed(**enc).logits
    assert torch.allclose(a.exp(), b.exp().cpu(), atol=1e-4)
    out = mixed.generate(**enc, max_new_tokens=24)
    assert bytes(i for i in out[0].tolist() if i < 256).startswith(b"Once upon a")


@needs_cuda
def test_device_map_reaches_the_members_and_the_pipeline_keeps_them(tok):
    stories = str(asset_path("models/stories260K"))
    config = CharEDConfig(members=[stories, {"name_or_path": stories, "dtype": "bfloat16"}])
    model = CharEDModel.from_pretrained(_saved(config), device_map="cuda", local_members=True)
    assert {m.model.device.type for m in model.members} == {"cuda"}
    assert model.hf_device_map
    gen = pipeline("text-generation", model=model, tokenizer=tok)
    text = gen("Once upon a time", max_new_tokens=20)[0]["generated_text"]
    assert text.startswith("Once upon a time") and len(text.encode()) <= 16 + 20


def _saved(config: CharEDConfig):
    import tempfile

    folder = tempfile.mkdtemp()
    config.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("kernel", ["flash_attention_2", "flash_attention_3", "flex_attention"])
def test_attention_kernels_without_a_tree_mask_are_refused(kernel):
    """Kernels that cannot read the additive 4-D tree mask would silently attend to the wrong
    slots: refused at construction, naming the member and the fix."""
    model, ptok = _pair()
    model.config._attn_implementation = kernel
    with pytest.raises(ValueError, match=rf"members\[1\]: attn_implementation={kernel!r} cannot "
                       r"read the tree attention mask .* attn_implementation='sdpa'"):
        CharEDModel.from_members([_pair(), (model, ptok)])


def test_cache_collection_keeps_each_layers_index_on_its_device(monkeypatch):
    """A member spread over devices (device_map) has cache layers on several devices: slot
    collection moves the kept-slot index to each layer's own device. Here the second layer
    sits on the meta device, which a CPU machine has; index_select refuses an index on another
    device, as CUDA does (meta tensors would accept it)."""
    real = torch.Tensor.index_select

    def strict(self, dim, index):
        if index.device != self.device:
            raise RuntimeError(f"index on {index.device} for a tensor on {self.device}")
        return real(self, dim, index)

    monkeypatch.setattr(torch.Tensor, "index_select", strict)
    from transformers import DynamicCache

    from chared_hf.members.byte_view import ByteTable
    from chared_hf.members.token_bytes import TokenBytes
    from chared_hf.members.token_tree import TokenTree

    model, ptok = _pair()
    tree = TokenTree(model, ByteTable(TokenBytes.from_tokenizer(ptok, vocab_size=len(ptok))))
    keep = tree.chain(None, [1, 3, 4])
    tree.chain(None, [1, 5, 6, 7])  # a branch nobody keeps
    tree.register(lambda: [keep])
    keys = torch.randn(1, 1, tree.size, 8)
    tree.cache = DynamicCache(ddp_cache_data=[(keys, keys.clone()),
                                              (keys.to("meta"), keys.to("meta"))])
    tree.collect()
    layers = tree.cache.layers
    assert layers[0].keys.device.type == "cpu" and layers[1].keys.device.type == "meta"
    assert layers[1].keys.shape[-2] == layers[0].keys.shape[-2] == tree.size == 3


def test_device_paths_of_the_byte_views_read_what_the_host_paths_read(monkeypatch):
    """``gather``, ``ending`` and ``likeliest`` read a CPU member's sums in place; for a
    member on a device they gather there and copy once per device. Run that path on CPU
    tensors (the bank told it cannot be read in place): the same masses, ids and tokens."""
    from chared_hf.members.byte_view import ByteTable, ByteView, ending, gather, likeliest
    from chared_hf.members.token_bytes import TokenBytes

    model, ptok = _pair()
    table = ByteTable(TokenBytes.from_tokenizer(ptok, vocab_size=len(ptok), eos_ids=[2]))
    logits = torch.randn(3, len(ptok), generator=torch.Generator().manual_seed(0))
    host, device = ByteView.batch(table, logits), ByteView.batch(table, logits)
    device[0].bank.host = device[0].bank.host_probs = None  # the device path
    prefixes = [b"", b"a", b"b", b"ab", b" ", b"c", b"cc"]  # no token starts with "cc"
    pairs = [(r, p) for r in range(3) for p in prefixes]
    gather([(host[r], p) for r, p in pairs])
    gather([(device[r], p) for r, p in pairs])
    for r, p in pairs:
        assert host[r].masses(p) == pytest.approx(device[r].masses(p), abs=1e-12)
    for (ids, probs), (same_ids, same_probs) in zip(
            ending([(host[r], p) for r, p in pairs]), ending([(device[r], p) for r, p in pairs]),
            strict=True):
        assert torch.equal(ids, same_ids) and torch.allclose(probs, same_probs, atol=1e-12)
    assert [len(ids) for ids, _ in ending([(host[0], p) for p in prefixes])] == [
        0, 1, 1, 1, 1, 1, 0]  # no token is empty or "cc"
    for longer in (False, True):
        found = likeliest([(host[r], p) for r, p in pairs], longer=longer)
        assert found == likeliest([(device[r], p) for r, p in pairs], longer=longer)
        assert [t is None for t in found] == [p == b"cc" or longer and p in (b"ab", b"bc")
                                              for _, p in pairs]
    # The likeliest id is the argmax over the ids that start with the prefix.
    pieces = table.token_bytes.pieces
    for (r, p), token in zip(pairs, likeliest([(host[r], p) for r, p in pairs]), strict=True):
        ids = [i for i, piece in enumerate(pieces) if piece is not None and piece.startswith(p)]
        best = max(ids, key=lambda i: float(host[r].probs[i])) if ids else None
        assert token == best
    # Brought along by a gather's copy (``guesses``, ``extensions``, a bank's ``top``): the
    # same ids, with no copy of their own.
    along = ByteView.batch(table, logits)
    along[0].bank.host = along[0].bank.host_probs = None
    along[0].bank.read_top_later()
    gather([(along[r], p) for r, p in pairs], guesses=True, extensions=True)
    expected = [likeliest([(host[r], p) for r, p in pairs], longer=longer)
                for longer in (False, True)]
    copies = []
    for name in ("cpu", "tolist"):
        method = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda self, *a, _m=method, **k: (
            copies.append(1), _m(self, *a, **k))[1])
    found = [likeliest([(along[r], p) for r, p in pairs], longer=longer)
             for longer in (False, True)]
    monkeypatch.undo()
    assert found == expected and not copies
    assert along[0].bank.top.tolist() == likeliest([(host[r], b"") for r in range(3)])


def _views_on_device(monkeypatch) -> None:
    """Every ``ViewBank`` made from now on takes its device paths on CPU tensors: it cannot
    be read in place (as its constructor does on a device, it reads its ids later)."""
    import chared_hf.members.byte_view as byte_view

    made = byte_view.ViewBank.__init__

    def on_device(bank, table, logits):
        made(bank, table, logits)
        bank.host = bank.host_probs = None
        bank.read_top_later()

    monkeypatch.setattr(byte_view.ViewBank, "__init__", on_device)


@pytest.fixture
def copies_to_host(monkeypatch):
    """Run the byte views' device paths on CPU tensors and count the copies to the host they
    make (``cpu`` and ``tolist`` called from ``byte_view`` and ``token_tree``)."""
    import sys

    _views_on_device(monkeypatch)
    copies = [0]
    for name in ("cpu", "tolist"):
        method = getattr(torch.Tensor, name)

        def counted(self, *args, _method=method, **kwargs):
            if sys._getframe(1).f_code.co_filename.endswith(("byte_view.py", "token_tree.py")):
                copies[0] += 1
            return _method(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return copies


def _copies_per_step(model, texts: list[str], copies: list[int]) -> dict[int, float]:
    """Copies to the host per generated byte, greedy, for the first text and for all
    (the difference of two lengths leaves the prompt out)."""
    batch = ByteTokenizer(padding_side="left")(texts, return_tensors="pt", padding=True)
    per_step = {}
    for rows in (1, len(texts)):
        enc = {k: v[:rows] for k, v in batch.items()}
        counts = []
        for steps in (16, 40):
            copies[0] = 0
            model.generate(**enc, max_new_tokens=steps, do_sample=False)
            counts.append(copies[0])
        per_step[rows] = (counts[1] - counts[0]) / 24
    return per_step


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_host_copies_per_step_do_not_grow_with_the_rows(mode, copies_to_host):
    """On a device every copy to the host waits for it: a few per step (each phase's
    masses with the ids ending there), the same for 8 rows as for 1 (before, one per member
    and row for each commit, hypothesis and phase)."""
    p1 = piece_tokenizer(["a", "b", "c", " ", "ab", "bc", "ca", " a", "abc"])
    p2 = piece_tokenizer(["a", "b", "c", " ", "ba", "cb", " b", "bca"])
    model = CharEDModel.from_members([(tiny_model(len(p1), seed=1, bos=1, eos=2), p1),
                                      (tiny_model(len(p2), seed=2, bos=1, eos=2), p2)],
                                     marginalization=mode, max_hypotheses=8)
    per_step = _copies_per_step(model, ["ab c", "ca", "b a b", "cab"] * 2, copies_to_host)
    assert per_step == {1: 2.0, 8: 2.0}, per_step  # two per step, whatever the rows


@pytest.mark.parametrize(("mode", "at_most"), [("chared", {1: 35 / 24, 8: 79 / 24}),
                                               ("exact", {1: 47 / 24, 8: 2.0})])
def test_host_copies_per_step_with_real_members(mode, at_most, copies_to_host):
    """The demo pair (real tokenizers; one member often cannot follow the other's text), 8
    prompts. Each phase's gather brings along what later phases of the step read: in the
    paper mode the masses after each member reads the chosen byte and the likeliest ids that
    idle rows guess; every view's likeliest id after a token boundary; the faint prefixes'
    own sums; in the exact mode the likeliest longer id a row alone guesses. Pinned to the
    counts (the same on 4d7616b and now): 35/24 and 79/24 copies per step at 1 and 8 rows in
    the paper mode, 47/24 and 2 in the exact mode; before the copies were shared (over 32
    bytes instead of 24): 1.66 and 8.75, 3.78 and 3.0."""
    from chared_hf.demo import load_demo

    prompts = ["Once upon a time", "def add(a, b):", "The little dog", "import os\n",
               "Lily saw a", "for i in range(", "One day, Tom", "class Stack:"]
    per_step = _copies_per_step(load_demo(marginalization=mode), prompts, copies_to_host)
    assert per_step == pytest.approx(at_most, abs=1e-9), per_step


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_device_paths_generate_what_the_host_paths_generate(mode, monkeypatch):
    """A whole batch generation with every byte view on its device path (CPU tensors told
    they cannot be read in place), against the host path: the same bytes and scores. Covers
    what the device path brings along in its copies (masses gathered early, likeliest ids,
    faint prefixes' sums) end to end."""
    from chared_hf.demo import load_demo

    prompts = ["Once upon a time", "def add(a, b):", "The little dog", "import os\n"]
    enc = ByteTokenizer(padding_side="left")(prompts, return_tensors="pt", padding=True)

    text = torch.tensor([[256, *b"Once upon a time, def f(x): return x", 257]])

    def run():
        # float64: the two paths may run different tokens in a call (the device path cannot
        # read which shorter tokens the floor drops), and in float32 calls of different
        # shapes differ by about 1e-6
        model = load_demo(marginalization=mode).double()
        out = model.generate(**enc, max_new_tokens=24, do_sample=False,
                             return_dict_in_generate=True, output_scores=True)
        scored = model(input_ids=text).logits.double().softmax(-1)  # teacher forcing
        return out.sequences, torch.stack(out.scores).double().softmax(-1), scored

    host_seqs, host_scores, host_scored = run()
    _views_on_device(monkeypatch)
    seqs, scores, scored = run()
    assert torch.equal(seqs, host_seqs)
    assert torch.allclose(scores, host_scores, atol=1e-9, rtol=0)
    assert torch.allclose(scored, host_scored, atol=1e-9, rtol=0)


def _segments_on_device(monkeypatch) -> None:
    """Every ``ViewBank`` made from now on takes the accelerators' path on CPU tensors: a
    float32 softmax and segment sums (``ViewBank(segments=True)``)."""
    import chared_hf.members.byte_view as byte_view

    made = byte_view.ViewBank.__init__
    monkeypatch.setattr(byte_view.ViewBank, "__init__",
                        lambda bank, table, logits, segments=None: made(bank, table, logits,
                                                                         segments=True))


def test_segment_sums_read_what_float64_sums_read(smollm2):
    """The accelerators' byte views (a float32 softmax, each bucket of a prefix summed in
    float64 on its own) against the host's float64 cumulative sums, on SmolLM2's 49,152-id
    vocabulary with its own logits: every outcome of probability at least 1e-6 to 1e-5 in
    log-probability (``benchmarks/view_precision.py`` measures the real texts), the same
    outcomes with no mass, the same ending ids (their probabilities to 2e-5)."""
    from chared_hf.members.byte_view import ByteTable, ByteView, ViewBank, ending, gather
    from chared_hf.members.token_bytes import TokenBytes

    model, tok = smollm2
    table = ByteTable(TokenBytes.from_tokenizer(tok))
    ids = tok("def add(a, b):\n    return a + b\n\nprint(add(1, 2))", return_tensors="pt")
    with torch.no_grad():
        logits = model(**ids).logits[0, -4:]
    host, seg = ByteView.batch(table, logits), ViewBank(table, logits, segments=True).views()
    assert seg[0].bank.host is None and seg[0].bank.probs.dtype == torch.float32
    prefixes = [b"", b" ", b"\n", b"  ", b"re", b"ret", b"(", b"\xe2", b"zzzq"]
    pairs = [(r, p) for r in range(len(logits)) for p in prefixes]
    gather([(host[r], p) for r, p in pairs])
    gather([(seg[r], p) for r, p in pairs])
    for r, p in pairs:
        want, got = host[r].masses(p), seg[r].masses(p)
        assert np.array_equal(want > 0, got > 0)
        big = want / max(want.sum(), 1e-300) >= 1e-6
        assert np.abs(np.log(got[big] / got.sum()) - np.log(want[big] / want.sum())).max(
            initial=0.0) < 1e-5, p
    for (a, pa), (b, pb) in zip(ending([(host[r], p) for r, p in pairs]),
                                ending([(seg[r], p) for r, p in pairs]), strict=True):
        # float32's softmax normalises ~49k ids to about 1e-5 (one factor for every id, which
        # the modes divide out: ``text_total`` is summed from the same probabilities)
        assert torch.equal(a, b) and torch.allclose(pa, pb.double(), rtol=2e-5, atol=0)


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_segment_sums_generate_and_score_what_the_host_paths_do(mode, monkeypatch):
    """A batch generated and a text scored with every byte view on the accelerators' path
    (float32 softmax, segment sums): the same greedy bytes as the host path on the demo, and
    every observed byte's log-probability within 1e-5."""
    from chared_hf.demo import load_demo

    prompts = ["Once upon a time", "def add(a, b):", "The little dog", "import os\n"]
    enc = ByteTokenizer(padding_side="left")(prompts, return_tensors="pt", padding=True)
    text = torch.tensor([[256, *b"Once upon a time, def f(x): return x", 257]])

    def run():
        model = load_demo(marginalization=mode)
        out = model.generate(**enc, max_new_tokens=24, do_sample=False)
        scored = model(input_ids=text).logits.double().log_softmax(-1)[0, :-1]
        return out, scored.gather(-1, text[0, 1:, None])

    host_out, host_scored = run()
    _segments_on_device(monkeypatch)
    out, scored = run()
    assert torch.equal(out, host_out)
    assert (scored - host_scored).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["chared", "exact"])
def test_a_phase_launches_every_members_call_before_reading_any(mode, monkeypatch):
    """Members on different devices run at the same time only if a phase launches every
    member's call before it reads any result back: within each ``run_queued``, no byte view is
    made from a call's logits between the first member's call and the last (on a device,
    making views is where results are read)."""
    import chared_hf.members.byte_view as byte_view
    from chared_hf.decoding import engine

    p1 = piece_tokenizer(["a", "b", "c", " ", "ab", "bc", "ca", " a", "abc"])
    p2 = piece_tokenizer(["a", "b", "c", " ", "ba", "cb", " b", "bca"])
    pairs = [(tiny_model(len(p1), seed=1, bos=1, eos=2), p1),
             (tiny_model(len(p2), seed=2, bos=1, eos=2), p2)]
    model = CharEDModel.from_members(pairs, marginalization=mode, max_hypotheses=8)
    events: list[list[str]] | None = []
    for member, _ in pairs:
        member.register_forward_pre_hook(lambda *args: events and events[-1].append("call"))
    made = byte_view.ViewBank.__init__

    def viewed(bank, *args, **kwargs):
        if events:
            events[-1].append("view")
        made(bank, *args, **kwargs)

    monkeypatch.setattr(byte_view.ViewBank, "__init__", viewed)
    run = engine.run_queued

    def recorded(rows):
        events.append([])
        run(rows)

    monkeypatch.setattr(engine, "run_queued", recorded)
    batch = ByteTokenizer(padding_side="left")(["ab c", "ca", "b a b"], return_tensors="pt",
                                               padding=True)
    model.generate(**batch, max_new_tokens=12, do_sample=False)
    both = [e for e in events if e.count("call") >= 2]
    assert len(both) > 5, events
    for phase in both:  # (views read before the first call choose what the calls run)
        first, last = phase.index("call"), len(phase) - 1 - phase[::-1].index("call")
        assert "view" not in phase[first:last], phase


def test_a_member_entry_places_its_member_and_the_caller_overrides_it():
    """A config's member entry may carry ``device_map`` and ``dtype``: each member goes where
    its entry says (a device, or a dict map), in its dtype; ``from_pretrained``'s own
    ``device_map``/``dtype`` win over every entry."""
    stories = str(asset_path("models/stories260K"))
    config = CharEDConfig(members=[
        {"name_or_path": stories, "device_map": "cpu", "dtype": "bfloat16"},
        {"name_or_path": stories, "device_map": {"": "cpu"}}])
    folder = _saved(config)
    model = CharEDModel.from_pretrained(folder, local_members=True)
    assert [m.model.dtype for m in model.members] == [torch.bfloat16, torch.float32]
    assert {m.model.device.type for m in model.members} == {"cpu"}
    assert model.config.members[0]["device_map"] == "cpu"  # saved and read back as given
    forced = CharEDModel.from_pretrained(folder, local_members=True, dtype=torch.float32,
                                         device_map="cpu")
    assert [m.model.dtype for m in forced.members] == [torch.float32] * 2


@pytest.mark.parametrize("place", ["cuda:7", 3, {"model": "cpu", "lm_head": "cuda:5"}])
def test_a_device_this_machine_lacks_is_a_clear_error(place):
    """A member entry naming a device this machine does not have stops loading before the
    member is read, naming the member and the device; the caller's own ``device_map`` wins
    over the entry (the member loads)."""
    stories = str(asset_path("models/stories260K"))
    folder = _saved(CharEDConfig(members=[stories, {"name_or_path": stories,
                                                    "device_map": place}]))
    if torch.cuda.device_count() > 7:
        pytest.skip("this machine has the devices")
    with pytest.raises(ValueError, match=r"members\[1\] .*device_map: .* names a device this "
                                         r"machine does not have \(\d+ cuda device"):
        CharEDModel.from_pretrained(folder, local_members=True)
    assert CharEDModel.from_pretrained(folder, local_members=True, device_map="cpu")


@pytest.mark.parametrize("place", [True, ["cpu"], {1: "cpu"}])
def test_a_malformed_device_map_entry_is_refused_by_the_config(place):
    with pytest.raises(ValueError, match=r"members\[0\]: device_map must be a device"):
        CharEDConfig(members=[{"name_or_path": "org/model", "device_map": place}])


def _llama(hidden: int, layers: int):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=1000, hidden_size=hidden, intermediate_size=2 * hidden,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4)


def _size(config, dtype=torch.float32) -> int:
    from accelerate import init_empty_weights
    from accelerate.utils import compute_module_sizes
    from transformers import AutoModelForCausalLM

    with init_empty_weights():
        return compute_module_sizes(AutoModelForCausalLM.from_config(config).to(dtype))[""]


def test_auto_placement_spreads_whole_members_largest_first():
    """``device_map="auto"`` for an ensemble: sized on the meta device by accelerate, whole
    members go to the device with the most room left, the largest first (planned with two
    devices this machine need not have)."""
    from chared_hf.placement import plan_members

    small, big, mid = _llama(64, 2), _llama(256, 4), _llama(128, 4)
    sizes = [_size(c) for c in (small, big, mid)]
    room = int(sum(sizes) * 0.8)
    maps = plan_members([small, big, mid], [None] * 3, {0: room, 1: room, "cpu": 10 ** 10})
    assert maps[1] == {"": 0} and maps[2] == {"": 1}  # the largest first, then the next room
    assert maps[0] in ({"": 0}, {"": 1})
    # in its dtype: bfloat16 halves what a member takes
    assert _size(big, torch.bfloat16) * 2 == _size(big)


def test_auto_placement_splits_only_a_member_that_fits_no_device():
    from chared_hf.placement import plan_members

    big = _llama(256, 6)
    room = int(_size(big) * 0.6)
    maps = plan_members([_llama(64, 2), big], [None, None], {0: room, 1: room, "cpu": 10 ** 10})
    assert len(maps[0]) == 1  # the small member whole
    assert {0, 1} <= set(maps[1].values())  # the big one over both devices, layer by layer
    assert all(not k.endswith("self_attn") for k in maps[1])  # decoder layers kept whole


def test_auto_placement_without_accelerators_loads_on_the_cpu():
    from chared_hf.placement import plan_members

    assert plan_members([_llama(64, 2)], [None], {"cpu": 10 ** 9}) is None
    stories = str(asset_path("models/stories260K"))
    folder = _saved(CharEDConfig(members=[stories, stories]))
    model = CharEDModel.from_pretrained(folder, local_members=True, device_map="auto")
    assert {m.model.device.type for m in model.members} == {"cpu"}


@needs_cuda
def test_auto_placement_puts_whole_members_on_the_gpus():
    stories = str(asset_path("models/stories260K"))
    folder = _saved(CharEDConfig(members=[stories, {"name_or_path": stories,
                                                    "dtype": "bfloat16"}]))
    model = CharEDModel.from_pretrained(folder, local_members=True, device_map="auto")
    assert {m.model.device.type for m in model.members} == {"cuda"}
    assert all(len(set(m.model.hf_device_map.values())) == 1 for m in model.members)
    out = model.generate(**ByteTokenizer()("Once upon a", return_tensors="pt"),
                         max_new_tokens=8)
    assert out.shape[1] == 12 + 8
