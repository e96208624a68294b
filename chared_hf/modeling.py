"""``CharEDModel``: the ensemble as one byte-level causal LM inside Transformers.

``forward`` returns log-probabilities over the byte vocabulary of ``ByteTokenizer`` (256 bytes,
``<s>``, ``</s>``, ``<pad>``; the specials other than ``</s>`` get ``-inf``). The decoding state
(each member's tokens, KV cache and pending bytes) travels in the ``cache`` argument as an
``EnsembleCache``, so Transformers' own ``generate`` does greedy search, sampling, logits
processors, stopping criteria, streamers and the text-generation pipeline.

Two ways to call ``forward``:
  * inside ``generate`` (``cache`` is an ``EnsembleCache`` built by our ``generate``): the first
    call gives every member the prompt (the exact mode reads it over all tokenizations; the
    paper mode commits the member's own tokenization, but for its last tokens when healing) and
    returns the distribution of the first new byte; later calls advance one byte each (the
    paper mode resolves ε as the paper does: greedy: argmax; sampling: drawn with probability
    J(ε));
  * teacher forcing (no cache): ``logits[b, i]`` is the distribution of ``input_ids[b, i+1]``;
    the first id (``<s>``, or the first byte) starts the members, every later byte is stepped
    through, and ε is marginalised one byte ahead (see ``state``).

It does not implement byte selection, sampling or stopping: ``generate`` does.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GenerationMixin,
    LogitsProcessorList,
    PreTrainedModel,
)
from transformers.generation.configuration_utils import GenerationMode
from transformers.modeling_outputs import CausalLMOutputWithPast

from .chat import member_chat_ids
from .configuration import (
    DEFAULT_EXACT_PROMPT_TOKENS,
    DEFAULT_MAX_HYPOTHESES,
    CharEDConfig,
    check_weights,
)
from .decoding import engine
from .decoding.cache import EnsembleCache
from .decoding.exact import ExactSequenceState
from .decoding.paper import SequenceState
from .decoding.speculation import Speculation
from .decoding.weighting import DEFAULT_SWITCH_RATE, Weighting
from .generation import byte_loop, redecide, to_logits
from .loading import AUTO_MAP, HUB_OPTIONS, load_member, member_config, write_remote_code
from .members.member import Member
from .members.token_tree import CACHE_KW, TokenTree
from .placement import plan_members
from .tokenization import (
    BOS_ID,
    CHAT_IDS,
    CONTENT_ID,
    EOS_ID,
    PAD_ID,
    VOCAB_SIZE,
    ByteTokenizer,
    parse_chat,
)

# Attention kernels that read an additive 4-D mask (the token tree's); others are refused.
TREE_MASK_KERNELS = ("eager", "sdpa")
LOOPS = ("package", "transformers")  # generate's decoding loop (``generate(loop=...)``)
CONFIG_OVERRIDES = ("weights", "combine", "marginalization", "max_hypotheses", "prune_below",
                    "weighting", "switch_rate", "heal_prompt", "exact_prompt_tokens",
                    "run_ahead_bytes", "guess_bytes", "run_ahead_children")


def default_generation_config() -> GenerationConfig:
    """Greedy, 256 new *bytes*, no top-k cut of the 256-byte vocabulary."""
    return GenerationConfig(
        bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
        max_new_tokens=256, do_sample=False,
    )


class CharEDModel(PreTrainedModel, GenerationMixin):
    """A character-wise (byte-wise) ensemble of causal LMs with different tokenizers.

    Build it from models in memory with ``from_members``, or from a ``CharEDConfig`` that names
    its members (``CharEDModel(config)`` loads them).

    Example::

        model = CharEDModel.from_members([(model_a, tok_a), (model_b, tok_b)], weights=[0.5, 0.5])
        tok = ByteTokenizer()
        out = model.generate(**tok("Once upon a time", return_tensors="pt"), max_new_tokens=40)
        print(tok.decode(out[0], skip_special_tokens=True))
    """

    config_class = CharEDConfig
    base_model_prefix = "chared"
    main_input_name = "input_ids"
    _supported_generation_modes = [GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE]
    _no_split_modules: list[str] = []

    def __init__(
        self,
        config: CharEDConfig,
        members: list | None = None,
        member_kwargs: dict | None = None,
        source: str | None = None,
        trust_remote_code: bool | list[str] = False,
        local_members: bool = False,
    ):
        """``members``: ``(model, tokenizer)`` pairs, or None to load the ones the config names
        (``trust_remote_code``: the caller's consent to run their own code, ``True`` or a list
        of member references; ``source``: the folder or Hub repository the config was read
        from, whose ``./`` members live inside it and which may name no other local path
        unless ``local_members``; ``member_kwargs``: loading options for every member)."""
        super().__init__(config)
        references: list[dict | None]
        if members is None:
            # Members named by the config (references); never built on the meta device, since
            # our from_pretrained constructs the model directly.
            each = _member_kwargs(config.members, source, member_kwargs or {},
                                  trust_remote_code, local_members)
            loaded = [load_member(spec, source, each[i], trust_remote_code, index=i,
                                  local_members=local_members)
                      for i, spec in enumerate(config.members)]
            members = [(model, tok) for model, tok, _ in loaded]
            references = [ref for _, _, ref in loaded]
        else:
            references = [None] * len(members)
        if not members:
            raise ValueError("members: an ensemble needs at least one (model, tokenizer) pair")
        n = len(members)
        self.member_weights = check_weights(config.weights or [1.0] * n, n)
        self.member_references = references  # None: built in memory, saved in a subfolder
        self.members = []
        for i, pair in enumerate(members):
            model, tokenizer = _check_pair(i, pair)
            self.add_module(f"member_{i}", model)  # registered: model.device, .to(), save
            # A short name for messages and reports: the folder's or Hub repository's last part.
            path = str(getattr(getattr(model, "config", None), "name_or_path", "") or "")
            name = path.rstrip("/").rsplit("/", 1)[-1] or f"member_{i}"
            self.members.append(Member.build(model, tokenizer, name=name))
        # What the members' calls may run ahead (the config's three settings); replace it
        # (``dataclasses.replace``) to change them for this model.
        self.speculation = Speculation.from_config(config)
        self.generation_config = default_generation_config()
        self._set_device_map(force=bool((member_kwargs or {}).get("device_map")))
        self.post_init()

    def _set_device_map(self, force: bool = False) -> None:
        """Expose the members' device maps so that pipelines do not move the ensemble."""
        maps = [getattr(m.model, "hf_device_map", None) for m in self.members]
        if force or any(maps):
            self.hf_device_map = {
                f"member_{i}{'.' + k if k else ''}": v
                for i, (m, dm) in enumerate(zip(self.members, maps, strict=True))
                for k, v in (dm or {"": str(m.model.device)}).items()
            }

    def _init_weights(self, module):
        """Members come trained: never re-initialise them."""

    @classmethod
    def from_members(
        cls,
        members: list,
        weights: list[float] | None = None,
        combine: str = "mixture",
        marginalization: str = "exact",
        max_hypotheses: int | None = DEFAULT_MAX_HYPOTHESES,
        weighting: str = "fixed",
        switch_rate: float = DEFAULT_SWITCH_RATE,
        prune_below: float | None = None,
        heal_prompt: bool = True,
        exact_prompt_tokens: int | None = DEFAULT_EXACT_PROMPT_TOKENS,
        **speculation,
    ) -> CharEDModel:
        """Wrap ``(model, tokenizer)`` pairs already in memory.

        Args:
            members: ``[(model, tokenizer), ...]``; each tokenizer must be a fast tokenizer.
            weights: one weight per member (default equal); normalised when used.
            combine: ``"mixture"`` (the paper) or ``"product"``.
            marginalization: ``"exact"`` (the default: every member a byte-level LM over all
                its tokenizations) or ``"chared"`` (the paper's decoding).
            max_hypotheses: with ``"exact"``, hypotheses kept per member (``None``: all).
            weighting: ``"fixed"`` (the paper), ``"bayes"`` or ``"switching"``: how the
                weights follow the text, ``weights`` being the prior (``chared_hf.weighting``).
            switch_rate: the fraction of weight returned to the prior after each byte
                (``"switching"``).
            prune_below: with ``"exact"``, also drop hypotheses whose mass is below this
                fraction of the text's probability (``CharEDConfig``).
            heal_prompt: with ``"chared"``, leave each member's last prompt tokens pending so
                that it can continue them with a longer token (``False``: the paper's literal
                handling, the whole prompt committed).
            exact_prompt_tokens: with ``"exact"``, the prompt's last tokens read over every
                tokenization (``None``: the whole prompt; ``CharEDConfig``).
            **speculation: ``run_ahead_bytes``, ``guess_bytes``, ``run_ahead_children``: what
                the members' calls run ahead (``CharEDConfig``; numbers never change).
        """
        if not isinstance(members, list | tuple) or not members:
            raise ValueError("members: expected a non-empty list of (model, tokenizer) pairs")
        if weights is not None:
            weights = check_weights(weights, len(members))
        config = CharEDConfig(weights=weights, combine=combine, marginalization=marginalization,
                              max_hypotheses=max_hypotheses, weighting=weighting,
                              switch_rate=switch_rate, prune_below=prune_below,
                              heal_prompt=heal_prompt, exact_prompt_tokens=exact_prompt_tokens,
                              **_speculation_settings(speculation))
        return cls(config, members=list(members))

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *model_args, config=None,
                        **kwargs) -> CharEDModel:
        """Load an ensemble folder (or Hub repository) and the members its config names.

        ``dtype`` (or ``torch_dtype``), ``device_map``, ``use_safetensors`` and the Hub options
        ``cache_dir``, ``token``, ``local_files_only``, ``force_download`` are passed on to every
        member (over the ``dtype`` and ``device_map`` a member's config entry may give; a
        device this machine lacks is an error naming the member); ``weights``, ``combine``,
        ``marginalization``, ``max_hypotheses``, ``prune_below``, ``weighting``,
        ``switch_rate``, ``heal_prompt``, ``exact_prompt_tokens`` and the speculation settings
        (``run_ahead_bytes``, ``guess_bytes``, ``run_ahead_children``) override the saved
        config (a config that names no ``marginalization`` gets the exact mode).

        ``trust_remote_code``: your consent to run members' own code (``True``, or a list of the
        members' ``name_or_path`` allowed). The config can only record that a member needs it;
        without your consent loading stops with an error naming the member. Consent given to
        ``AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)`` arrives here
        and extends to the members (see docs/security.md). ``local_members=True``: your
        consent for the config to name members by absolute path on this machine (a saved
        config that references your own local folders); without it only Hub ids and ``./``
        paths inside the ensemble's folder are loaded.
        """
        source = str(pretrained_model_name_or_path)
        trust = kwargs.pop("trust_remote_code", False)
        local_members = bool(kwargs.pop("local_members", False))
        hub = {k: kwargs[k] for k in (*HUB_OPTIONS, "revision") if kwargs.get(k) is not None}
        changes = {k: kwargs.pop(k) for k in CONFIG_OVERRIDES if k in kwargs}
        if not isinstance(config, CharEDConfig):
            config = CharEDConfig.from_pretrained(source, **hub)
        if changes:  # e.g. from_pretrained(folder, marginalization="exact"), validated
            config = CharEDConfig.from_dict({**config.to_dict(), **changes})
        overrides = {k: kwargs[k] for k in (*HUB_OPTIONS, "device_map", "max_memory",
                                            "use_safetensors") if kwargs.get(k) is not None}
        dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
        if dtype is not None:
            overrides["dtype"] = dtype
        model = cls(config, member_kwargs=overrides, source=source, trust_remote_code=trust,
                    local_members=local_members)
        try:
            model.generation_config = GenerationConfig.from_pretrained(source, **hub)
        except OSError:
            pass  # no generation_config.json: keep the defaults
        return model

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs) -> None:
        """Write the config (members by reference), generation config, byte tokenizer and the
        ``auto_map`` module; members built in memory are saved into ``member_<i>/``."""
        if push_to_hub:
            raise ValueError("push_to_hub: call model.push_to_hub(repo_id) instead")
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        specs = []
        for i, (member, ref) in enumerate(zip(self.members, self.member_references,
                                              strict=True)):
            if ref is None:  # built in memory: save it beside the config, referenced relatively
                sub = folder / f"member_{i}"
                member.model.save_pretrained(sub, **{k: v for k, v in kwargs.items()
                                                     if k in ("max_shard_size",)})
                member.tokenizer.save_pretrained(sub)
                ref = {"name_or_path": f"./member_{i}"}
            specs.append(ref)
        config = copy.deepcopy(self.config)
        config.members = specs
        config.architectures = [type(self).__name__]
        config.auto_map = AUTO_MAP
        config.save_pretrained(folder)
        self.generation_config.save_pretrained(folder)
        tokenizer = ByteTokenizer()
        tokenizer.init_kwargs["auto_map"] = {"AutoTokenizer": AUTO_MAP["AutoTokenizer"]}
        tokenizer.save_pretrained(folder)
        write_remote_code(folder)

    # -- generation ------------------------------------------------------------------------
    def generate(self, inputs=None, generation_config=None, loop: str = "package", **kwargs):
        """Transformers' ``generate``, with the ensemble's decoding state as its cache.

        ``max_new_tokens`` counts bytes. Temperature, top-k/top-p and other processors act on
        the ensemble's next-byte distribution. ``loop``: ``"package"`` (default) runs the
        package's own loop over the bytes through Transformers' ``custom_generate`` hook
        (``chared_hf.generation``: no ``forward`` call per byte, one wait for the device per
        step); ``"transformers"`` runs Transformers' own loop, one ``forward`` per byte; both
        give the same bytes. A ``custom_generate`` of your own is run as given.
        """
        if loop not in LOOPS:
            raise ValueError(f"loop: expected one of {LOOPS}, got {loop!r}")
        if loop == "package" and kwargs.get("custom_generate") is None:
            # Transformers hands a callable neither the streamer nor the tokenizer: the loop
            # takes the streamer here, and stop strings find the byte tokenizer by themselves
            # (``_get_stopping_criteria``).
            kwargs["custom_generate"] = functools.partial(byte_loop,
                                                          streamer=kwargs.get("streamer"))
        config = generation_config or self.generation_config
        if (kwargs.get("num_beams") or config.num_beams or 1) > 1:
            raise ValueError("num_beams: beam search is not supported by CharEDModel; use greedy "
                             "decoding (do_sample=False) or sampling (do_sample=True)")
        if kwargs.get("assistant_model") is not None or kwargs.get("prompt_lookup_num_tokens"):
            raise ValueError("assistant_model: assisted decoding is not supported by CharEDModel")
        if kwargs.get("max_length") is not None and "max_new_tokens" not in kwargs:
            kwargs["max_new_tokens"] = None  # let max_length win over our default of 256 bytes
        if kwargs.get(CACHE_KW) is None:
            do_sample = kwargs.get("do_sample")
            if do_sample is None:
                do_sample = config.do_sample
            kwargs[CACHE_KW] = EnsembleCache(decide="sample" if do_sample else "greedy")
        return super().generate(inputs, generation_config, **kwargs)

    def _get_logits_processor(self, *args, **kwargs) -> LogitsProcessorList:
        """Transformers' processors, wrapped so that a step whose every byte they ban commits
        the pending bytes and is processed again (see ``_Redecide``)."""
        processors = super()._get_logits_processor(*args, **kwargs)
        state = (kwargs.get("model_kwargs") or {}).get(CACHE_KW)
        if not isinstance(state, EnsembleCache):
            return processors
        return _Redecide(processors, state)

    def _get_stopping_criteria(self, generation_config, stopping_criteria, tokenizer=None):
        """Transformers' criteria; ``stop_strings`` need no ``tokenizer`` argument (the
        ensemble's vocabulary is always ``ByteTokenizer``'s)."""
        if tokenizer is None and generation_config.stop_strings is not None:
            tokenizer = ByteTokenizer()
        return super()._get_stopping_criteria(generation_config, stopping_criteria, tokenizer)

    def prepare_inputs_for_generation(self, input_ids, **kwargs):
        state = kwargs.get(CACHE_KW)
        seen = state.get_seq_length() if state is not None else 0
        return {
            "input_ids": input_ids[:, seen:],
            "attention_mask": kwargs.get("attention_mask"),
            CACHE_KW: state,
        }

    # -- forward ---------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        cache: EnsembleCache | None = None,
        past_key_values: EnsembleCache | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        """Next-byte log-probabilities, shape ``[batch, length, 259]`` (``[batch, 1, 259]``
        inside ``generate``)."""
        if input_ids is None or input_ids.dim() != 2:
            raise ValueError("input_ids: expected a 2-D tensor of byte ids [batch, length]")
        state = cache if cache is not None else past_key_values
        if state is None:
            state = EnsembleCache(decide="marginal")
        if not isinstance(state, EnsembleCache):
            raise ValueError("cache: expected an EnsembleCache (or None), got "
                             f"{type(state).__name__}")
        rows = self._read(state, input_ids, attention_mask)
        logits = _to_logits(rows, input_ids.shape[1] if state.decide == "marginal" else 1)
        # Logits where the ids are: the byte-level loop may run on the host while the members
        # run on their devices (nothing then waits for a device but the members' byte views).
        return CausalLMOutputWithPast(logits=logits.to(input_ids.device), **{CACHE_KW: state})

    def _read(self, state: EnsembleCache, input_ids: torch.Tensor,
              attention_mask: torch.Tensor | None) -> list[list[np.ndarray | None]]:
        """The rows read ``input_ids`` (new ones start; existing ones read on); per row, the
        distribution after each id (None: padding, ended)."""
        ids = input_ids.tolist()  # the one copy to the host a step needs (checked here)
        if any(i < 0 or i >= VOCAB_SIZE for seq in ids for i in seq):
            raise ValueError(f"input_ids: ids must lie in [0, {VOCAB_SIZE}) (ByteTokenizer ids)")
        if state.rows is None:  # the mask matters only where the rows start (left padding)
            mask = attention_mask.tolist() if attention_mask is not None else None
            rows = self._start(state, ids, mask)
        else:
            rows = self._continue(state, ids)
        state.seen += input_ids.shape[1]
        return rows

    def _first_step(self, state: EnsembleCache, input_ids: torch.Tensor,
                    attention_mask: torch.Tensor | None) -> list[np.ndarray | None]:
        """The package loop's start (``generation.byte_loop``): the rows take their prompts
        (with a cache from an earlier call, the ids it has not read); the first new byte's
        distribution of each."""
        seen = state.get_seq_length()
        return [dists[-1] for dists in self._read(state, input_ids[:, seen:], attention_mask)]

    def _step(self, state: EnsembleCache, chosen: list[int]) -> list[np.ndarray | None]:
        """The package loop's step: every row reads its chosen id (end of text and padding
        end it); the next byte's distribution of each (None where it ended)."""
        state.seen += 1
        return [dists[0] for dists in _step_together(state.rows, [[i] for i in chosen])]

    @property
    def weighting(self) -> Weighting:
        """How each row's member weights follow its text (``chared_hf.weighting``)."""
        return Weighting(self.config.weighting, tuple(self.member_weights),
                         self.config.switch_rate)

    def _new_row(self, state: EnsembleCache) -> SequenceState | ExactSequenceState:
        if state.trees is None:  # one token tree per member, shared by the rows
            state.trees = [TokenTree(m.model, m.table) for m in self.members]
        if self.config.marginalization == "exact":
            return ExactSequenceState(self.members, self.weighting, self.config.combine,
                                      self.config.max_hypotheses, self.config.pruning_floor,
                                      trees=state.trees,
                                      prompt_tokens=self.config.exact_prompt_tokens,
                                      speculation=self.speculation)
        return SequenceState(self.members, self.weighting, self.config.combine,
                             state.decide, trees=state.trees,
                             heal_prompt=self.config.heal_prompt and state.decide != "marginal",
                             speculation=self.speculation)

    def _start(self, state: EnsembleCache, ids, mask) -> list[list[np.ndarray | None]]:
        """First call: build one row per sequence and return its distributions. Generation
        starts the rows side by side (``engine.start``: one call per member for all
        prompts); teacher forcing reads the rows' texts side by side too (``_score``)."""
        state.rows, out, begins, scored = [], [], [], []
        for b, seq in enumerate(ids):
            keep = [i for i, _ in enumerate(seq) if mask is None or mask[b][i]]
            first = keep[0] if keep else len(seq)
            while first < len(seq) and seq[first] == PAD_ID and mask is None:
                first += 1  # unmasked left padding
            body = seq[first:]
            if not body:
                raise ValueError("input_ids: a row has no ids (only padding)")
            row = self._new_row(state)
            state.rows.append(row)
            out.append([None] * first)  # padding: no distribution
            with_bos = body[0] == BOS_ID
            text = body[1:] if with_bos else body
            chat = with_bos and any(i in CHAT_IDS for i in text)
            if state.decide == "marginal":
                scored.append((b, text, with_bos, chat))  # read side by side, below
                continue
            if chat:
                prompts = self._chat_prompts(text)
                begins.append(lambda r, p=prompts: r.begin_from_ids(p))
            else:
                _check_text_ids(text)
                if not with_bos and not text:
                    raise ValueError("input_ids: a prompt without <s> needs at least one byte")
                begins.append(lambda r, t=bytes(text), w=with_bos: r.begin(t, w))
            out[b] += [None] * len(body)  # the last one is the first new byte's
        if begins:
            for acc, dist in zip(out, engine.start(state.rows, begins), strict=True):
                acc[-1] = dist
        if scored:
            self._score(state.rows, scored, out)
        return out

    def _score(self, all_rows: list, scored: list, out: list) -> None:
        """Teacher forcing: the rows ``scored`` names (``(row index, text, with_bos, chat)``)
        read their texts side by side, each from its first id (``<s>``, or the first byte) or
        from the chat before the last ``<|content|>``, running ahead along the text; each
        member runs the calls the rows queue together. Appends to ``out``."""
        rows, begins, tails = [all_rows[b] for b, *_ in scored], [], []
        for row, (b, text, with_bos, chat) in zip(rows, scored, strict=True):
            if chat:
                cut = len(text) - text[::-1].index(CONTENT_ID)
                head, tail = text[:cut], text[cut:]
                prompts = self._chat_prompts(head)
                begins.append(lambda r, p=prompts: r.begin_from_ids(p))
                out[b] += [None] * len(head)  # <s> and the markup: no rows
            else:
                head = [] if with_bos else text[:1]
                tail = text[len(head):]
                begins.append(lambda r, h=bytes(head), w=with_bos: r.begin(h, w))
            _check_text_ids(text if not chat else tail)
            row.read_ahead(_leading_text(tail))
            tails.append(tail)
        firsts = engine.start(rows, begins)
        for (b, *_), first, dists in zip(scored, firsts, _step_together(rows, tails),
                                         strict=True):
            out[b] += [first, *dists]

    def _chat_prompts(self, ids: list[int]) -> list[list[int]]:
        """Chat markup: each member's own rendering of the messages (its chat template)."""
        messages, open_last = parse_chat(ids)
        return [member_chat_ids(m, messages, open_last) for m in self.members]

    def _continue(self, state: EnsembleCache, ids: list[list[int]]):
        """Later calls: the rows step through their ids side by side (``engine.step``), so
        that each member runs the calls of all rows together; teacher forcing first tells
        them the ids, to run ahead along."""
        if state.decide == "marginal":
            for row, seq in zip(state.rows, ids, strict=True):
                row.read_ahead(_leading_text(seq))
        return _step_together(state.rows, ids)


def _step_together(rows: list, seqs: list[list[int]]) -> list[list[np.ndarray | None]]:
    """The rows step through their ids side by side (``engine.step``: each member runs all
    rows' calls together); per row, the distribution after each id (None after its end)."""
    out: list[list[np.ndarray | None]] = [[] for _ in seqs]
    for j in range(max(map(len, seqs), default=0)):
        live = [b for b, (row, seq) in enumerate(zip(rows, seqs, strict=True))
                if j < len(seq) and _reads(row, seq[j])]
        dists = engine.step([rows[b] for b in live], [seqs[b][j] for b in live]) if live else []
        by_row = dict(zip(live, dists, strict=True))
        for b, acc in enumerate(out):
            if j < len(seqs[b]):
                acc.append(by_row.get(b))
    return out


def _reads(row, byte: int) -> bool:
    """Whether ``row`` reads ``byte``: end of text and padding finish it; ``<s>`` and chat
    markers cannot follow the text."""
    if row.finished or byte in (EOS_ID, PAD_ID):
        row.finished = True
        return False
    if byte == BOS_ID or byte in CHAT_IDS:
        raise ValueError("input_ids: <s> and chat markers may only come before the text "
                         "(chat markers from ByteTokenizer.apply_chat_template)")
    return True


class _Redecide(LogitsProcessorList):
    """Runs the generation's processors; where they leave a row no byte (every score -inf,
    e.g. a banned byte that was the only way to continue the current tokens), that row's
    members commit their pending bytes and the processors run again on the new distribution.
    A list (what ``generate`` expects) holding the processors, called directly (a plain list
    reads each processor's signature at every step)."""

    def __init__(self, inner: LogitsProcessorList, state: EnsembleCache):
        super().__init__(inner)
        self.inner, self.state = inner, state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
        if not self.inner:  # nothing bans a byte: every row keeps its distribution's support
            return scores
        out = self.inner(input_ids, scores)
        dead = (~torch.isfinite(out).any(-1)).nonzero().flatten().tolist()
        if dead and self.state.rows:
            out = redecide(self.state.rows, self.inner, input_ids, scores, out, dead)
        return out


def _member_kwargs(specs: list[dict], source: str | None, kwargs: dict, trust_remote_code,
                   local_members: bool) -> list[dict]:
    """Each member's loading options: the caller's; with ``device_map="auto"`` on a machine
    with accelerators, a ``device_map`` per member from ``placement.plan_members`` (whole
    members spread over the devices, the largest first)."""
    if kwargs.get("device_map") != "auto":
        return [kwargs] * len(specs)
    rest = {k: v for k, v in kwargs.items() if k not in ("device_map", "max_memory")}
    found = [member_config(spec, source, rest, trust_remote_code, i, local_members)
             for i, spec in enumerate(specs)]
    maps = plan_members([c for c, _ in found], [d for _, d in found], kwargs.get("max_memory"))
    if maps is None:
        return [kwargs] * len(specs)
    return [{**rest, "device_map": m} for m in maps]


def _speculation_settings(settings: dict) -> dict:
    """``from_members``' speculation keywords, refused by name where unknown."""
    known = ("run_ahead_bytes", "guess_bytes", "run_ahead_children")
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise TypeError(f"from_members() got unexpected keyword arguments {unknown}; "
                        f"speculation settings are {list(known)}")
    return settings


def _check_pair(index: int, pair):
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ValueError(f"members[{index}]: expected a (model, tokenizer) pair, got {pair!r}")
    model, tokenizer = pair
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"members[{index}]: expected a causal LM model first, "
                         f"got {type(model).__name__}")
    kernel = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if isinstance(kernel, str) and kernel not in TREE_MASK_KERNELS:
        raise ValueError(
            f"members[{index}]: attn_implementation={kernel!r} cannot read the tree attention "
            "mask chared_hf builds (a 4-D additive mask); load the member with "
            "attn_implementation='sdpa' (or 'eager')")
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(f"members[{index}]: expected a fast (tokenizers-backed) tokenizer "
                         f"second, got {type(tokenizer).__name__}")
    return model, tokenizer


def _check_text_ids(ids: list[int]) -> None:
    if any(i > 255 and i not in (EOS_ID, PAD_ID) for i in ids):
        raise ValueError("input_ids: <s> may only start a sequence, and chat markers (from "
                         "ByteTokenizer.apply_chat_template) only follow <s>")


def _leading_text(ids: list[int]) -> bytes:
    """The byte ids before the first special id (end of text, padding)."""
    end = next((i for i, t in enumerate(ids) if t > 255), len(ids))
    return bytes(ids[:end])


def _to_logits(rows: list[list[np.ndarray | None]], length: int) -> torch.Tensor:
    """Per row, the last ``length`` outcome distributions as log-probabilities over the byte
    vocabulary ``[rows, length, 259]`` (``generation.to_logits``; None: uniform)."""
    return torch.stack([to_logits(dists[-length:]) for dists in rows])


AutoConfig.register("chared", CharEDConfig, exist_ok=True)
AutoModelForCausalLM.register(CharEDConfig, CharEDModel, exist_ok=True)
AutoTokenizer.register(CharEDConfig, fast_tokenizer_class=ByteTokenizer, exist_ok=True)
