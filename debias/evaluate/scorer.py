"""One batched log-likelihood scorer that every benchmark goes through.

A request is (context ids, continuation ids); its score is the summed log-probability of the
continuation given the context, the number of continuation tokens, and whether every
continuation token is the model's greedy choice (lm-evaluation-harness's `loglikelihood`).

How the work is cut down:
- identical requests are scored once;
- a request only needs the logits over its input `(context + continuation)[:-1]`; when that
  input is a prefix of another request's input, the longer sequence's forward pass serves both
  (one pass for "... because [he]" / "... because [she]", for every single-token alternative);
- the remaining sequences are sorted by length (longest first, so memory trouble shows at once)
  and run in right-padded batches. Causal attention means a position never sees the padding to
  its right, so no attention mask is needed and pad positions are simply never read.
Sequences that differ after a shared prefix (CrowS-Pairs sentence pairs) are run in full: sharing
that prefix would need a key/value cache, which the model contract (`model(ids) -> logits`) does
not offer, and these sentences are short.

Precision: the model body runs as loaded (under bf16 autocast on CUDA); the output layer and the
log-softmax always run in float32 or wider, on every device. In bf16 a logit between 16 and 32 is
rounded to a multiple of 0.125, which is the size of the effects being measured. `precision`
records what was used; the report's model identity carries it.

A NaN or infinite score (damaged weights) stops scoring with a one-line error naming the
benchmark and the item's text: no metric is ever computed from it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from debias.errors import UserError


END_OF_TEXT = "<|endoftext|>"


@dataclass(frozen=True)
class Request:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


@dataclass(frozen=True)
class Score:
    logprob: float   # summed log-probability of the continuation
    num_tokens: int  # continuation length in tokens
    greedy: bool     # every continuation token is the argmax


class Scorer:
    """Scores requests with `model(ids[B, T]) -> logits[B, T, V]` (or an object with `.logits`).

    `batch_size` sequences per forward pass; on CUDA the body runs under bf16 autocast unless
    `autocast=False`; the output layer and log-probabilities are always computed in float32 or
    wider (float64 if the model's weights are float64, which the parity tests use).
    """

    def __init__(self, model: Callable, tokenizer: Tokenizer, *, batch_size: int = 16,
                 device: str | torch.device | None = None, autocast: bool | None = None,
                 max_length: int | None = None, progress: bool = True):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise UserError(f"eval.batch_size={batch_size!r}: must be a positive integer (sequences per forward pass)")
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else _model_device(model)
        self.autocast = self.device.type == "cuda" if autocast is None else autocast
        config = getattr(model, "config", None)
        self.max_length = max_length or getattr(config, "max_position_embeddings", None)
        self.progress = progress
        self.prefix_id = tokenizer.token_to_id(END_OF_TEXT)
        if self.prefix_id is None:
            raise UserError(f"tokenizer: no {END_OF_TEXT} token, which prefixes every scored sentence "
                            "(use a GPT-NeoX-style tokenizer.json)")

    @property
    def precision(self) -> dict:
        """The dtypes actually used: weights, the body's compute, the output layer and log-softmax."""
        weights = _model_dtype(self.model)
        body = "bfloat16 autocast" if self._autocast_enabled() else _name(weights)
        head = getattr(self.model, "embed_out", None)
        if isinstance(head, torch.nn.Linear):
            output = _name(torch.promote_types(head.weight.dtype, torch.float32))
        else:  # a model without a separate output layer: its own logits, normalised in fp32 or wider
            output = f"model's own ({body}), log-softmax in float32"
        return {"weights": _name(weights), "body": body, "output_layer": output}

    # -- text helpers -------------------------------------------------------------------
    def encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def sentence_request(self, sentence: str) -> Request:
        """Whole sentence given only the `<|endoftext|>` prefix token (lm-eval with empty context)."""
        return Request((self.prefix_id,), self.encode(sentence))

    def text_request(self, context: str, continuation: str) -> Request:
        """lm-evaluation-harness's `_encode_pair`: encode context+continuation together and split,
        with trailing context spaces moved into the continuation."""
        if not context:
            return self.sentence_request(continuation)
        spaces = len(context) - len(context.rstrip())
        if spaces:
            context, continuation = context[:-spaces], context[-spaces:] + continuation
        whole = self.encode(context + continuation)
        context_ids = self.encode(context)
        return Request(context_ids, whole[len(context_ids):])

    # -- scoring ------------------------------------------------------------------------
    def score(self, requests: Sequence[Request], desc: str = "scoring") -> list[Score]:
        """One Score per request, in order (`desc` labels the progress bar)."""
        unique = list(dict.fromkeys(requests))
        inputs = [self._input_of(r) for r in unique]
        hosts = _prefix_hosts([ids for ids, _ in inputs])
        host_ids = sorted(set(hosts), key=lambda h: -len(inputs[h][0]))
        served_by: dict[int, list[int]] = {}
        for request_index, host in enumerate(hosts):
            served_by.setdefault(host, []).append(request_index)

        results: dict[Request, Score] = {}
        batches = [host_ids[i:i + self.batch_size] for i in range(0, len(host_ids), self.batch_size)]
        for batch in tqdm(batches, desc=desc, unit="batch", disable=not self.progress, leave=False):
            members = [(row, r) for row, h in enumerate(batch) for r in served_by[h]]
            scores = self._score_batch([inputs[h][0] for h in batch],
                                       [(row, inputs[r][1], unique[r].continuation) for row, r in members])
            for (_, r), score in zip(members, scores):
                if not math.isfinite(score.logprob):
                    raise UserError(f"{desc}: the model gave a non-finite log-probability ({score.logprob}) for "
                                    f"{self._describe(unique[r])}; its weights are likely damaged (NaN/inf): "
                                    "evaluate a sound checkpoint")
                results[unique[r]] = score
        return [results[r] for r in requests]

    def _describe(self, request: Request) -> str:
        text = self.tokenizer.decode(list(request.context + request.continuation), skip_special_tokens=False)
        return repr(text if len(text) <= 120 else text[:60] + " ... " + text[-55:])

    def _input_of(self, request: Request) -> tuple[tuple[int, ...], int]:
        """Model input for a request and the position whose logits predict its first target.
        Too long for the model: drop tokens from the left, as lm-eval does."""
        if not request.continuation:
            raise ValueError("a request needs at least one continuation token")
        full = request.context + request.continuation
        if not request.context:  # nothing to condition the first token on
            raise ValueError("a request needs at least one context token (use the prefix token)")
        if self.max_length is not None and len(full) - 1 > self.max_length:
            if len(request.continuation) > self.max_length:
                raise UserError(f"a continuation of {len(request.continuation)} tokens exceeds the "
                                f"model context of {self.max_length}; shorten the text")
            full = full[len(full) - 1 - self.max_length:]
        ids = full[:-1]
        return ids, len(ids) - len(request.continuation)

    @torch.no_grad()
    def _score_batch(self, sequences: list[tuple[int, ...]],
                     wanted: list[tuple[int, int, tuple[int, ...]]]) -> list[Score]:
        """Forward one right-padded batch; `wanted` = (row, first position, targets) per request."""
        width = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), width), self.prefix_id, dtype=torch.long)
        for row, seq in enumerate(sequences):
            ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)

        rows, positions, targets, owner = [], [], [], []
        for k, (row, start, cont) in enumerate(wanted):
            rows += [row] * len(cont)
            positions += range(start, start + len(cont))
            targets += cont
            owner += [k] * len(cont)
        rows_t, pos_t, tgt_t, owner_t = (torch.tensor(x, device=self.device)
                                         for x in (rows, positions, targets, owner))

        logits = self._logits_at(ids.to(self.device), rows_t, pos_t)  # [N, V] for the wanted positions
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        target_logit = logits.gather(1, tgt_t[:, None]).squeeze(1)
        token_logprob = target_logit - torch.logsumexp(logits, dim=-1)
        missed = (target_logit < logits.amax(dim=-1)).to(logits.dtype)  # greedy = target is the max
        logprob = torch.zeros(len(wanted), dtype=logits.dtype, device=logits.device)
        logprob.index_add_(0, owner_t, token_logprob)
        misses = torch.zeros_like(logprob).index_add_(0, owner_t, missed)
        return [Score(float(lp), len(cont), bool(m == 0))
                for lp, m, (_, _, cont) in zip(logprob.tolist(), misses.tolist(), wanted)]

    def _logits_at(self, ids: torch.Tensor, rows: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Logits at the (row, position) pairs only, from an output layer run in fp32 or wider.

        With a large vocabulary the output projection and the normalisation over it dominate a
        small model's cost, and most benchmarks need few positions (LAMBADA: the last word of a
        long passage). GPT-NeoX models (ours and transformers') name that projection `embed_out`:
        the body gives the hidden states (`hidden_states(ids)` on ours; on others the projection is
        bypassed for the forward pass), and the projection is applied to the wanted positions
        afterwards, outside autocast. Other models get their full logits.
        """
        head = getattr(self.model, "embed_out", None)
        if not isinstance(head, torch.nn.Linear):
            with self._autocast():
                out = self.model(ids)
            return getattr(out, "logits", out)[rows, positions]
        with self._autocast():
            if callable(getattr(self.model, "hidden_states", None)):
                hidden = self.model.hidden_states(ids)
            else:
                self.model.embed_out = torch.nn.Identity()
                try:
                    out = self.model(ids)
                finally:
                    self.model.embed_out = head
                hidden = getattr(out, "logits", out)
        dtype = torch.promote_types(head.weight.dtype, torch.float32)
        bias = None if head.bias is None else head.bias.to(dtype)
        return torch.nn.functional.linear(hidden[rows, positions].to(dtype), head.weight.to(dtype), bias)

    def _autocast_enabled(self) -> bool:
        return bool(self.autocast) and self.device.type == "cuda"

    def _autocast(self):
        if self._autocast_enabled():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()


def _prefix_hosts(inputs: list[tuple[int, ...]]) -> list[int]:
    """For each input, the index of an input that starts with it and is served by no other.

    In lexicographic order every sequence that extends `s` follows `s` directly, so walking the
    sorted list backwards and inheriting the next one's host when `s` is its prefix finds it.
    """
    order = sorted(range(len(inputs)), key=lambda i: inputs[i])
    host = list(range(len(inputs)))
    for k in range(len(order) - 2, -1, -1):
        here, after = inputs[order[k]], inputs[order[k + 1]]
        if after[:len(here)] == here:
            host[order[k]] = host[order[k + 1]]
    return host


def _model_dtype(model) -> torch.dtype:
    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration):
        return torch.float32


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _model_device(model) -> torch.device:
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")

