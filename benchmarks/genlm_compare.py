"""The exact mode against genlm-bytes (the installable peer that turns a token LM into a byte
LM), on the same member and text: time per byte for next-byte distributions along the text,
and the bits per byte each reports.

Needs the bench extra (``pip install torch==2.13.0 && pip install -e '.[bench]'``). Both run
a beam of 8 over tokenizations (genlm-bytes: ``BeamParams(K=8)``, its defaults otherwise;
ours: ``max_hypotheses=8``) and the paper's mode is shown for reference. genlm-bytes starts
from the member's BOS with no dummy prefix; a SentencePiece member (stories260K) then spells
the first word without its leading space, which costs it some bits.

Set-up and use are timed apart, for both sides alike: ``setup_s`` is genlm-bytes' backend and
byte trie (``AsyncTransformer``, ``ByteBeamState.initial``) and this package's ensemble with
its byte tables (``CharEDModel.from_members``); ``ms_per_byte`` is the text alone. The two sides
read the text differently: genlm-bytes steps *online* (one next-byte distribution, then the
byte is appended, as when generating); ``known text`` rows are this package's teacher-forced
``forward`` (the whole text given, so the exact mode runs its members ahead along it), and the
``online`` row steps this package's ``generate`` one byte at a time with each byte forced by a
logits processor (the text unknown ahead; the log-probabilities are ``output_logits``, before
the processor).

    python benchmarks/genlm_compare.py [--members stories smollm2] [--bytes 300]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

import torch
from common import corpus, load_members, report, timed
from transformers import LogitsProcessor, LogitsProcessorList

from chared_hf import ByteTokenizer, CharEDModel


async def genlm_run(model, tokenizer, text: bytes, k: int) -> tuple[float, float, float]:
    """genlm-bytes' set-up seconds, then its seconds and log P(text) stepping byte by byte."""
    from genlm.backend.llm.hf import AsyncTransformer
    from genlm.bytes import BeamParams, ByteBeamState

    start = time.perf_counter()
    llm = AsyncTransformer(model, tokenizer)
    beam = await ByteBeamState.initial(llm, BeamParams(K=k))
    setup = time.perf_counter() - start
    start, total = time.perf_counter(), 0.0
    for byte in text:
        logp = await beam.logp_next()
        total += float(logp.ps[byte])  # indexed by byte (EOT at 256)
        beam = await (beam.prune() << byte)
    seconds = time.perf_counter() - start
    await beam.cleanup()
    return setup, seconds, total


def known(ens: CharEDModel, text: bytes) -> float:
    """log P(text) by teacher forcing: the whole text in one ``forward``."""
    ids = ByteTokenizer()(text.decode(), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = ens(input_ids=ids).logits[0, :-1].double()
    return float(logits.gather(-1, ids[0, 1:, None]).sum())


class Force(LogitsProcessor):
    """Leaves only the text's next byte possible."""

    def __init__(self, ids: torch.Tensor, start: int):
        self.ids, self.start = ids, start

    def __call__(self, input_ids, scores):
        forced = torch.full_like(scores, -math.inf)
        byte = self.ids[input_ids.shape[1] - self.start]
        forced[:, byte] = scores[:, byte]
        return forced


def online(ens: CharEDModel, text: bytes) -> float:
    """log P(text) stepping ``generate`` byte by byte, each byte forced (the text unknown)."""
    tok = ByteTokenizer()
    ids = tok(text.decode(), return_tensors="pt")["input_ids"][0]
    prompt = ids[:1, None].T  # the start of text alone
    out = ens.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt),
                       max_new_tokens=len(text), do_sample=False, eos_token_id=None,
                       logits_processor=LogitsProcessorList([Force(ids[1:], 1)]),
                       output_logits=True, return_dict_in_generate=True)
    assert torch.equal(out.sequences[0, 1:], ids[1:]), "the forced text was not generated"
    return float(sum(step[0, byte].double() for step, byte in zip(out.logits, ids[1:],
                                                                   strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=["stories", "smollm2"])
    parser.add_argument("--bytes", type=int, default=300)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    members = load_members(args.members)
    text = corpus()[0][1].encode()[:args.bytes]
    text = text.decode("utf-8", "ignore").encode()
    rows = []

    def row(name, method, setup, seconds, nats):
        rows.append({"member": name, "method": method, "bytes": len(text),
                     "bits_per_byte": -nats / math.log(2) / len(text), "setup_s": setup,
                     "ms_per_byte": 1000 * seconds / len(text)})

    for name in args.members:
        model, tokenizer = members[name]
        row(name, f"genlm-bytes K={args.k}, online",
            *asyncio.run(genlm_run(model, tokenizer, text, args.k)))
        for mode, k in [("exact", args.k), ("chared", None)]:
            setup, ens = timed(lambda mode=mode, k=k, name=name: CharEDModel.from_members(
                [members[name]], marginalization=mode, max_hypotheses=k), 1)
            label = f"chared_hf exact K={k}" if mode == "exact" else "chared_hf paper mode"
            row(name, f"{label}, known text", setup, *timed(lambda ens=ens: known(ens, text), 1))
            if mode == "exact":
                row(name, f"{label}, online", setup, *timed(lambda ens=ens: online(ens, text), 1))
    report("genlm", args, rows)


if __name__ == "__main__":
    main()
