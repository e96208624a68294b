"""Train the demo ensemble's small code model on Python's standard-library source.

What it does: collects the ``.py`` files of the running interpreter's standard library
(sorted, tests and third-party packages left out, up to ``--corpus-mb``), trains a byte-level
BPE tokenizer on them with ``tokenizers`` (a family unlike stories260K's SentencePiece), trains a
small Llama from scratch on random windows of the tokenized text with AdamW, and saves the model
(bfloat16 weights, loaded as float32) and its tokenizer as a Hugging Face folder.

What it does not do: evaluate the model (``chared score``), or download anything.

    python -m chared_hf.demo.train --out chared_hf/demo/pycode [--minutes 15] [--seed 0]
"""

from __future__ import annotations

import argparse
import math
import sysconfig
import time
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SKIP = {"test", "tests", "site-packages", "idlelib", "lib2to3", "turtledemo", "__pycache__"}
BOS, EOS = "<|bos|>", "<|endoftext|>"


def corpus_files(root: Path, limit_bytes: int) -> list[Path]:
    """The standard library's ``.py`` files in sorted order, up to ``limit_bytes``."""
    files, total = [], 0
    for path in sorted(root.rglob("*.py")):
        if SKIP & set(path.relative_to(root).parts) or total >= limit_bytes:
            continue
        files.append(path)
        total += path.stat().st_size
    return files


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style) with a BOS and an end-of-text token."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[BOS, EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", special_tokens=[(BOS, tok.token_to_id(BOS))])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS,
                                   clean_up_tokenization_spaces=False)


def build_model(tokenizer, width: int, layers: int) -> LlamaForCausalLM:
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=width, intermediate_size=width * 8 // 3,
        num_hidden_layers=layers, num_attention_heads=width // 32, num_key_value_heads=2,
        max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder to save the model into")
    parser.add_argument("--corpus-mb", type=float, default=12.0)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--width", type=int, default=192)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--minutes", type=float, default=15.0, help="training time budget")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.threads:
        torch.set_num_threads(args.threads)

    # 1. The corpus: standard-library source, each file followed by end of text.
    root = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(encoding="utf-8", errors="replace")
             for p in corpus_files(root, int(args.corpus_mb * 2**20))]
    tokenizer = train_tokenizer(texts, args.vocab)
    eos = tokenizer.eos_token_id
    ids = torch.tensor([i for t in texts for i in
                        (*tokenizer(t, add_special_tokens=False)["input_ids"], eos)])
    print(f"{len(texts)} files, {sum(map(len, texts)) / 2**20:.1f} MB, {len(ids)} tokens")

    # 2. The model and the optimiser (cosine decay over the time budget).
    model = build_model(tokenizer, args.width, args.layers).train()
    print(f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1,
                            betas=(0.9, 0.95))
    budget, start, step = args.minutes * 60, time.perf_counter(), 0
    bos = tokenizer.bos_token_id
    while (elapsed := time.perf_counter() - start) < budget:
        frac = elapsed / budget
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * frac))
        # Random windows, each starting with BOS (as the model is used: from a start of text).
        starts = torch.randint(0, len(ids) - args.seq, (args.batch,))
        batch = torch.stack([ids[s:s + args.seq] for s in starts])
        batch = torch.cat([torch.full((args.batch, 1), bos), batch], 1)
        loss = model(input_ids=batch, labels=batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 25 == 0:
            print(f"step {step}  {elapsed / 60:.1f} min  loss {loss.item():.3f}", flush=True)

    # 3. Save: bfloat16 weights (half the bytes), loaded as float32 by the demo.
    out = Path(args.out)
    model.eval().to(torch.bfloat16).save_pretrained(out)
    tokenizer.save_pretrained(out)
    model.generation_config.save_pretrained(out)
    print(f"saved to {out} after {step} steps")


if __name__ == "__main__":
    main()
