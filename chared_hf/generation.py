"""The package's own decoding loop, which ``CharEDModel.generate`` runs by default through
Transformers' ``custom_generate`` hook.

What it does: Transformers' ``generate`` prepares everything as usual (the generation config,
logits processors, stopping criteria including ``stop_strings``, the streamer, inputs expanded
for ``num_return_sequences``) and then calls ``byte_loop`` instead of its own ``_sample``. The
loop drives the rows directly (``engine``, through ``CharEDModel._first_step`` and ``_step``),
without a ``forward`` call per byte: no model kwargs to update, no attention mask to grow, no
``[batch, 1, 259]`` output object. Per step: the rows' next-byte distributions become float32
log-probabilities on the ids' device (through a pinned host buffer on an accelerator), the
processors run there, a byte is chosen (argmax, or drawn), stopping criteria run, and then one
copy to the host brings the chosen bytes, the rows still going and the rows the processors left
no byte: the only point per step where the host waits for the ids' device. A row the
processors left no byte commits its pending bytes and is processed again
(``recommit``; rare: one more copy that step). Rows that ended are not stepped.

It returns what ``_sample`` returns (``sequences`` or a ``GenerateDecoderOnlyOutput`` with
``scores``, ``logits`` and the ``EnsembleCache``), with the same bytes: the stock loop, one
argument away (``generate(..., loop="transformers")``), runs the same rows through ``forward``.

What it does not do: beam search or assisted decoding (``generate`` refuses them), wait for
other processes (``synced_gpus`` is ignored), or choose anything the stock loop would not: the
same processors and the same random draws in the same order, except where processors leave a
sampled row no byte (its commit draws after the batch's bytes here, before them in the stock
loop: other draws from the same distributions).
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.generation.utils import GenerateDecoderOnlyOutput

from .members.byte_view import EOT
from .members.token_tree import CACHE_KW
from .tokenization import EOS_ID, VOCAB_SIZE


def byte_loop(model, input_ids: torch.LongTensor, logits_processor: LogitsProcessorList,
              stopping_criteria: StoppingCriteriaList, generation_config,
              synced_gpus: bool = False, streamer=None, **model_kwargs):
    """Greedy search or sampling over bytes (the ``custom_generate`` callable; see the module
    docstring). ``model`` is the ``CharEDModel``; the rest is what ``generate`` prepared."""
    state = model_kwargs[CACHE_KW]
    processors = getattr(logits_processor, "inner", logits_processor)  # unwrap ``_Redecide``
    config = generation_config
    keep_scores = config.return_dict_in_generate and config.output_scores
    keep_logits = config.return_dict_in_generate and config.output_logits
    has_eos = any(hasattr(c, "eos_token_id") for c in stopping_criteria)
    pad = config._pad_token_tensor
    link = _HostLink(input_ids.device, len(input_ids))
    scores, raw = [], []
    unfinished = torch.ones(len(input_ids), dtype=torch.long, device=input_ids.device)
    was_going = [1] * len(input_ids)  # the rows going before this step, on the host
    # Step 0: the rows take their prompts (or, with a cache from an earlier call, the new ids).
    dists = model._first_step(state, input_ids, model_kwargs.get("attention_mask"))
    while True:
        # Step 1: the distributions as log-probabilities on the ids' device; the processors.
        logits = link.upload(dists)
        processed = processors(input_ids, logits) if processors else logits
        # Step 2: the next byte (a row the processors left no byte chooses again, step 4).
        dead = ~torch.isfinite(processed).any(-1) if processors else None
        chosen = _choose(processed.masked_fill(dead[:, None], 0.0) if processors else processed,
                         config.do_sample)
        if has_eos:  # rows that stopped get padding
            chosen = chosen * unfinished + pad * (1 - unfinished)
        ids = torch.cat([input_ids, chosen[:, None]], dim=-1)
        going = unfinished & ~stopping_criteria(ids, processed)
        # Step 3: the one copy to the host: chosen bytes, rows still going, rows left no byte.
        tokens, alive, stuck = link.download(chosen, going, dead)
        # Step 4 (rare): rows the processors left no byte commit their pending bytes and
        # choose again; the criteria read the new bytes.
        redo = [r for r, s in enumerate(stuck) if s and was_going[r]]
        if redo:
            processed = redecide(state.rows, processors, input_ids, logits, processed, redo)
            again = processed[redo]  # only these rows choose again (and draw, when sampling)
            chosen[redo] = _choose(again.masked_fill(~torch.isfinite(again).any(-1, True), 0.0),
                                   config.do_sample)
            ids = torch.cat([input_ids, chosen[:, None]], dim=-1)
            going = unfinished & ~stopping_criteria(ids, processed)
            tokens, alive = chosen.tolist(), going.tolist()
        input_ids, unfinished, was_going = ids, going, alive
        if keep_scores:
            scores.append(processed)
        if keep_logits:
            raw.append(logits)
        if streamer is not None:
            streamer.put(torch.tensor(tokens))
        # Step 5: stop when every row has stopped; else the rows read their bytes.
        if not any(alive):
            break
        dists = model._step(state, tokens)
    if streamer is not None:
        streamer.end()
    if not config.return_dict_in_generate:
        return input_ids
    return GenerateDecoderOnlyOutput(sequences=input_ids, scores=tuple(scores) or None,
                                     logits=tuple(raw) or None, cache=state)


def _choose(scores: torch.Tensor, sample: bool) -> torch.Tensor:
    """The next byte of every row: the argmax, or drawn from the softmax (as ``_sample``)."""
    if sample:
        return torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
    return torch.argmax(scores, dim=-1)


def redecide(rows: list, processors, input_ids: torch.Tensor, logits: torch.Tensor,
             processed: torch.Tensor, stuck: list[int]) -> torch.Tensor:
    """Rows ``stuck`` (whose every byte the processors banned, e.g. the only byte that went on
    with the members' pending bytes) commit their pending bytes (``recommit``), and the
    processors run again, on the whole batch (processors may hold one entry per row), with
    those rows' distributions after the commit; the scores, those rows' replaced (a row that
    cannot commit keeps its own)."""
    fresh, changed = logits.clone(), []
    for r in stuck:
        dist = rows[r].recommit()
        if dist is not None:
            fresh[r] = to_logits([dist])[0].to(fresh)
            changed.append(r)
    if not changed:
        return processed
    out = processed.clone()
    out[changed] = processors(input_ids, fresh)[changed]
    return out


def to_logits(dists: list[np.ndarray | None]) -> torch.Tensor:
    """Next-byte distributions (bytes + end of text) as float32 log-probabilities over the
    byte vocabulary ``[rows, 259]``; a row without one (padding, ended) is uniform (zeros)."""
    probs = np.ones((len(dists), VOCAB_SIZE))
    for r, dist in enumerate(dists):
        if dist is not None:
            probs[r, :EOT] = dist[:EOT]
            probs[r, EOT:] = 0.0
            probs[r, EOS_ID] = dist[EOT]
    with np.errstate(divide="ignore"):
        return torch.from_numpy(np.log(probs).astype(np.float32))


class _HostLink:
    """The loop's copies between the host (where the rows' distributions are) and the ids'
    device: up, the log-probabilities; down, the chosen bytes with two flags per row. On an
    accelerator both go through pinned host buffers (the upload without waiting); on a CPU
    they are the tensors themselves."""

    def __init__(self, device: torch.device, rows: int):
        self.device = device
        self.pinned = device.type == "cuda"
        self.up = torch.empty((rows, VOCAB_SIZE), pin_memory=True) if self.pinned else None
        self.down = torch.empty((3, rows), dtype=torch.long, pin_memory=True) if (
            self.pinned) else None

    def upload(self, dists: list[np.ndarray | None]) -> torch.Tensor:
        logits = to_logits(dists)
        if not self.pinned:
            return logits.to(self.device)
        self.up.copy_(logits)  # the previous upload is done: the last download waited for it
        return self.up.to(self.device, non_blocking=True)

    def download(self, chosen: torch.Tensor, unfinished: torch.Tensor,
                 dead: torch.Tensor | None) -> tuple[list[int], list[int], list[int]]:
        """The one wait per step: the chosen bytes, the rows still going after this step's
        stopping criteria, the rows the processors left no byte (None: no processors)."""
        parts = [chosen, unfinished] if dead is None else [chosen, unfinished, dead.long()]
        both = torch.stack(parts)
        if self.pinned:
            self.down[:len(parts)].copy_(both, non_blocking=True)
            torch.cuda.current_stream(self.device).synchronize()
            both = self.down[:len(parts)]
        found = both.tolist()
        return found[0], found[1], found[2] if dead is not None else [0] * len(chosen)
