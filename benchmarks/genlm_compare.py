"""The exact mode against genlm-bytes (the installable peer that turns a token LM into a byte
LM), on the same member and text: time per byte for next-byte distributions along the text,
and the bits per byte each reports.

Needs the bench extra (``pip install torch==2.13.0 && pip install -e '.[bench]'``). Both run
a beam of 8 over tokenizations (genlm-bytes: ``BeamParams(K=8)``, its defaults otherwise;
ours: ``max_hypotheses=8``) and the paper's mode is shown for reference. genlm-bytes starts
from the member's BOS with no dummy prefix; a SentencePiece member (stories260K) then spells
the first word without its leading space, which costs it some bits.

    python benchmarks/genlm_compare.py [--members stories smollm2] [--bytes 300]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time

import torch
from common import corpus, load_members, report

from chared_hf import ByteTokenizer, CharEDModel


async def genlm_logprob(model, tokenizer, text: bytes, k: int) -> float:
    """log P(text) from genlm-bytes' beam, byte by byte."""
    from genlm.backend.llm.hf import AsyncTransformer
    from genlm.bytes import BeamParams, ByteBeamState

    llm = AsyncTransformer(model, tokenizer)
    beam = await ByteBeamState.initial(llm, BeamParams(K=k))
    total = 0.0
    for byte in text:
        logp = await beam.logp_next()
        total += float(logp.ps[byte])  # indexed by byte (EOT at 256)
        beam = await (beam.prune() << byte)
    await beam.cleanup()
    return total


def ours(ens: CharEDModel, text: bytes) -> float:
    ids = ByteTokenizer()(text.decode(), return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = ens(input_ids=ids).logits[0, :-1].double()
    return float(logits.gather(-1, ids[0, 1:, None]).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", nargs="+", default=["stories", "smollm2"])
    parser.add_argument("--bytes", type=int, default=300)
    parser.add_argument("--k", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(2)
    members = load_members(args.members)
    text = corpus()[0][1].encode()[:args.bytes]
    text = text.decode("utf-8", "ignore").encode()
    rows = []
    for name in args.members:
        model, tokenizer = members[name]
        runs = [("genlm-bytes K=8", lambda model=model, tokenizer=tokenizer: asyncio.run(
            genlm_logprob(model, tokenizer, text, args.k)))]
        for mode, k in [("exact", args.k), ("chared", None)]:
            ens = CharEDModel.from_members([members[name]], marginalization=mode,
                                           max_hypotheses=k)
            label = f"chared_hf exact K={k}" if mode == "exact" else "chared_hf paper mode"
            runs.append((label, lambda ens=ens: ours(ens, text)))
        for label, fn in runs:
            start = time.perf_counter()
            nats = fn()
            seconds = time.perf_counter() - start
            rows.append({"member": name, "method": label, "bytes": len(text),
                         "bits_per_byte": -nats / math.log(2) / len(text),
                         "ms_per_byte": 1000 * seconds / len(text)})
    report("genlm", args, rows)


if __name__ == "__main__":
    main()
