"""Batched sampling over logits [S, V]: penalties, constraints, temperature, top-k/top-p/min-p, seeds, logprobs."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from tkr_embed.backends.torch.dispatch import use_kernels
from tkr_embed.backends.torch.host_copy import on_device
from tkr_embed.backends.torch.penalties import PenaltyHistories, apply_penalties
from tkr_embed.engine.constraints import mask_words, resolve_masks
from tkr_embed.engine.runner import BatchEntry, SampledToken
from tkr_embed.engine.sampling_params import SamplingParams

_MASK_64 = (1 << 64) - 1
NUCLEUS_CANDIDATES = (1024, 16384)  # the best values a CPU top_p tries, in turn, before it sorts whole rows


def _splitmix64(value: int) -> int:
    value = (value + 0x9E3779B97F4A7C15) & _MASK_64
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK_64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK_64
    return value ^ (value >> 31)


def step_seed(seed: int, num_generated: int) -> int:
    """The RNG seed of a seeded request's next token: a function of (seed, step) only."""
    return _splitmix64(_splitmix64(seed & _MASK_64) ^ num_generated) & ((1 << 63) - 1)


def unpack_bitmask(packed: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[S, W] int32 words -> [S, V] bool, bit i % 32 of word i // 32 for id i."""
    if packed.device.type == "cpu":  # numpy unpacks the bytes directly, 50x faster than shifting [S, W, 32] ints
        bits = np.unpackbits(packed.numpy().view(np.uint8), axis=1, count=vocab_size, bitorder="little")
        return torch.from_numpy(bits).view(torch.bool)
    shifts = torch.arange(32, device=packed.device, dtype=torch.int32)  # [32]
    bits = (packed.unsqueeze(-1) >> shifts) & 1  # [S, W, 32]
    return bits.reshape(packed.shape[0], -1)[:, :vocab_size].bool()


def _masked(logits: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """-inf at every id the packed `words` do not allow, out of place (a decode graph's output stays as it was):
    one kernel on CUDA, the unpacked bool mask elsewhere."""
    if use_kernels(logits) and logits.dtype == torch.float32:
        from tkr_embed.backends.torch.kernels.token_mask import masked_logits

        return masked_logits(logits, words)
    return logits.masked_fill(~unpack_bitmask(words, logits.shape[1]), float("-inf"))


def argmax_rows(values: torch.Tensor, allowed: torch.Tensor | None = None) -> torch.Tensor:
    """The first index of each row's largest value [S] (NaN counts as largest, as torch's argmax has it), among
    the ids the packed `allowed` words [S, W] allow when given. A float32 CPU tensor goes through numpy, whose
    argmax is about ten times faster there; there a row's best id stands when its mask allows it, and only the
    other rows are masked, one at a time, instead of writing a masked copy of every row."""
    if values.device.type != "cpu" or values.dtype != torch.float32:
        return (values if allowed is None else _masked(values, allowed)).argmax(dim=-1)
    array = values.numpy()
    ids = array.argmax(axis=1)
    if allowed is not None:
        words = allowed.numpy().view(np.uint32)
        refused = ((words[np.arange(len(ids)), ids >> 5] >> (ids & 31).astype(np.uint32)) & 1) == 0
        for row in np.flatnonzero(refused):
            mask = unpack_bitmask(allowed[row : row + 1], array.shape[1])[0].numpy()
            ids[row] = np.where(mask, array[row], -np.inf).argmax()
    return torch.from_numpy(ids)


def _argmax_can_mask(logits: torch.Tensor, params: Sequence[SamplingParams]) -> bool:
    """Whether the masks may wait for the argmaxes (`argmax_rows`): on the CPU, when no row truncates its
    distribution, whose top_k, top_p and min_p must read the masked probabilities."""
    vocab = logits.shape[1]
    return (
        logits.device.type == "cpu" and logits.dtype == torch.float32 and not any(_truncates(p, vocab) for p in params)
    )


def _truncates(params: SamplingParams, vocab: int) -> bool:
    """Whether `truncated` cuts this row: a sampled row with a top_k below the vocabulary, a top_p or a min_p."""
    return not params.is_greedy and (0 < params.top_k < vocab or params.top_p < 1.0 or params.min_p > 0.0)


def truncated(scaled: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """`scaled` [S, V] (logits over the temperature) with -inf at the ids each row's top_k, top_p and min_p leave
    out, out of place; top_p and min_p both read the probabilities left by top_k. Each keeps the ids at or above
    a value of its own, so ids tied with the last one kept are kept too:

    - top_k: the row's k-th largest value;
    - top_p: the value of the last of the fewest best ids whose probabilities sum to top_p (`_nucleus_floor`);
    - min_p: min_p times the best probability, as a difference of logits.

    Only top_p needs values in order, and only the rows that ask for it are ordered: sorting every row's 201k
    values cost more than the model's step on the CPU. A greedy row is left whole: its pick is its argmax."""
    vocab = scaled.shape[1]
    device = scaled.device
    cut = [_truncates(p, vocab) for p in params]
    top_k = [p.top_k if c and 0 < p.top_k < vocab else 0 for p, c in zip(params, cut, strict=True)]
    if any(top_k):
        best = scaled.topk(max(top_k), dim=-1).values  # [S, k], largest first
        kth = best.gather(1, on_device([max(k, 1) - 1 for k in top_k], torch.int64, device)[:, None])  # [S, 1]
        limited = on_device([k > 0 for k in top_k], torch.bool, device)[:, None]
        scaled = scaled.masked_fill(limited & (scaled < kth), float("-inf"))
    below_min_p = None
    min_p = [p.min_p if c else 0.0 for p, c in zip(params, cut, strict=True)]
    if any(min_p):
        log_min_p = on_device(min_p, torch.float32, device).log()[:, None]  # log 0 = -inf: no floor
        below_min_p = scaled < scaled.amax(dim=-1, keepdim=True) + log_min_p
    nucleus_rows = [row for row, (p, c) in enumerate(zip(params, cut, strict=True)) if c and p.top_p < 1.0]
    if nucleus_rows:
        index = on_device(nucleus_rows, torch.int64, device)
        rows = scaled.index_select(0, index)  # [R, V]
        floor = _nucleus_floor(
            rows, on_device([params[row].top_p for row in nucleus_rows], torch.float32, device)[:, None]
        )
        scaled = scaled.index_copy(0, index, rows.masked_fill(rows < floor, float("-inf")))
    if below_min_p is not None:
        scaled = scaled.masked_fill(below_min_p, float("-inf"))
    return scaled


def _nucleus_floor(rows: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """The value [R, 1] of the last id each row's top_p keeps. On the CPU a row tries its best values in the
    widths of NUCLEUS_CANDIDATES in turn (a trained model's nucleus is rarely wider than the first; a row's best
    16k cost a sixth of sorting it), and is sorted whole once its nucleus is known, or likely, to be wider still:
    the ids past the ones listed are no likelier than the last of them, which bounds how many more it needs. On a
    GPU the rows are sorted whole, since deciding would wait for the device."""
    log_total = rows.logsumexp(dim=-1, keepdim=True)  # [R, 1]
    if rows.device.type != "cpu":
        return _floor_among(rows.sort(dim=-1, descending=True).values, log_total, top_p)[0]
    floor = torch.empty_like(log_total)
    widths = [width for width in NUCLEUS_CANDIDATES if width < rows.shape[1]]
    pending, whole = torch.arange(rows.shape[0]), []
    for turn, width in enumerate(widths):
        found, listed_mass, last_prob = _floor_among(
            rows[pending].topk(width).values, log_total[pending], top_p[pending]
        )
        reached = (listed_mass >= top_p[pending])[:, 0]
        floor[pending[reached]] = found[reached]
        at_least = (width + (top_p[pending] - listed_mass) / last_prob)[:, 0]  # ids the nucleus needs
        next_width = widths[turn + 1] if turn + 1 < len(widths) else rows.shape[1]
        # a guess, not a bound: rows whose listed ids hold under a quarter of top_p (random weights' flat rows)
        # have nuclei wider than the next list far more often than not
        thin = (listed_mass < top_p[pending] / 4)[:, 0]
        wider = ~reached & ((at_least > next_width) | thin)
        whole.append(pending[wider])
        pending = pending[~reached & ~wider]
    whole = torch.cat([*whole, pending])
    if len(whole):
        floor[whole] = _floor_among(rows[whole].sort(dim=-1, descending=True).values, log_total[whole], top_p[whole])[0]
    return floor


def _floor_among(best: torch.Tensor, log_total: torch.Tensor, top_p: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Over each row's best values [R, K], largest first: the value of the last id top_p keeps [R, 1] (right
    when these K ids' probabilities reach top_p), their probabilities' sum [R, 1] and the last one's [R, 1]."""
    probs = (best - log_total).exp()
    before = probs.cumsum(dim=-1) - probs  # the mass of the better ids
    kept = (before < top_p).sum(dim=-1, keepdim=True).clamp(min=1)
    return best.gather(1, kept - 1), before[:, -1:] + probs[:, -1:], probs[:, -1:]


@dataclass
class MaskJob:
    """A step's masks being resolved into page-locked `staging` (int32 [S, W]); `words` gives them, None when no
    row turned out restricted."""

    staging: torch.Tensor
    words: Future


class _PinnedRing:
    """Page-locked host buffers for the packed masks, used in turn. Fresh page-locked memory each step costs
    milliseconds of host time on the step's critical path; a buffer is written again only once the device has
    copied it (its event)."""

    SIZE = 3

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor] = []
        self._events: list[torch.cuda.Event | None] = []
        self._turn = 0

    def take(self, rows: int, words: int) -> torch.Tensor:
        """An int32 [rows, words] view of the next buffer, safe to write."""
        if not self._buffers or self._buffers[0].shape[1] != words or self._buffers[0].shape[0] < rows:
            capacity = max(rows, 64)
            self._buffers = [torch.empty(capacity, words, dtype=torch.int32, pin_memory=True) for _ in range(self.SIZE)]
            self._events = [None] * self.SIZE
        self._turn = (self._turn + 1) % self.SIZE
        event = self._events[self._turn]
        if event is not None:
            event.synchronize()
        return self._buffers[self._turn][:rows]

    def copied(self) -> None:
        """The taken buffer's copy to the device is queued: record when it is done."""
        event = torch.cuda.Event()
        event.record()
        self._events[self._turn] = event


class Sampler:
    """Picks one token per row of logits, honouring each row's SamplingParams.

    Invariant: a seeded row's token depends only on its logits, its seed and how many tokens it
    has generated, never on the other rows of the batch. The only host transfer is the result.
    """

    def __init__(self, keep_histories: bool = False) -> None:
        """`keep_histories`: the penalised sequences' histories stay on the device between steps, appended with
        each sampled token (a runner's sampler, whose lookahead steps' entries lack their latest token); else
        each step reads them from its entries alone."""
        self._mask_staging = _PinnedRing()
        self._mask_worker: ThreadPoolExecutor | None = None
        self._histories = PenaltyHistories(persistent=keep_histories)

    def release(self, seq_id: int) -> None:
        """Forget a finished sequence's penalty history."""
        self._histories.release(seq_id)

    def start_masks(self, entries: Sequence[BatchEntry], vocab_size: int, device: torch.device) -> MaskJob | None:
        """CUDA: begin resolving the rows' masks on a worker thread (a grammar engine fills them without the GIL),
        so the host can stage the next forward's inputs meanwhile; `sample(..., masks=job)` takes the result.
        None when no row has a mask or off CUDA (there they are resolved inline)."""
        pending = [e.allowed_tokens for e in entries]
        if device.type != "cuda" or all(mask is None for mask in pending):
            return None
        if self._mask_worker is None:
            self._mask_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sampler-masks")
        staging = self._mask_staging.take(len(entries), mask_words(vocab_size))
        words = staging.numpy().view(np.uint32)
        return MaskJob(staging, self._mask_worker.submit(resolve_masks, pending, vocab_size, words))

    def __call__(self, logits: torch.Tensor, entries: Sequence[BatchEntry]) -> list[SampledToken]:
        # logits: [S, V] float32, one row per entry with sample=True
        return self.results(entries, self.sample(logits, entries))

    def sample(
        self, logits: torch.Tensor, entries: Sequence[BatchEntry], masks: MaskJob | None = None
    ) -> SampleTensors:
        """Queue the sampling (and the logprobs asked for) on the device. `masks`: the rows' masks begun by
        `start_masks`."""
        device = logits.device
        params = [e.sampling for e in entries]
        assert all(p is not None for p in params), "every sampled entry carries SamplingParams"
        # first: nothing before it waits for the device
        allowed = self._allowed_words(
            entries, logits.shape[1], device, masks or self.start_masks(entries, logits.shape[1], device)
        )
        raw_logprobs = torch.log_softmax(logits, dim=-1) if any(p.logprobs is not None for p in params) else None
        history = self._histories.rows(entries, device)
        if history is not None:
            logits = apply_penalties(logits, entries, history)
        logits = self._apply_logit_bias(logits, entries)
        deferred = None  # the masks, when only the argmaxes need them
        if allowed is not None:
            if _argmax_can_mask(logits, params):
                deferred = allowed
            else:
                logits = _masked(logits, allowed)

        if all(p.is_greedy for p in params):
            token_ids = argmax_rows(logits, deferred)  # [S]
        elif not any(p.is_greedy for p in params):
            token_ids = self._sample_random(logits, entries, deferred)
        else:
            token_ids = torch.where(
                on_device([p.is_greedy for p in params], torch.bool, device),
                argmax_rows(logits, deferred),
                self._sample_random(logits, entries, deferred),
            )
        if history is not None:
            self._histories.append(history, token_ids)
        if raw_logprobs is None:
            return SampleTensors(token_ids)
        max_top = max(e.sampling.logprobs or 0 for e in entries)
        chosen = raw_logprobs.gather(1, token_ids[:, None]).squeeze(1)  # [S]
        top_values, top_ids = raw_logprobs.topk(max_top, dim=-1) if max_top else (None, None)  # [S, K]
        return SampleTensors(token_ids, chosen, top_values, top_ids)

    def _apply_logit_bias(self, logits: torch.Tensor, entries: Sequence[BatchEntry]) -> torch.Tensor:
        """Each row's `logit_bias` added to its logits (out of place)."""
        biases = [e.sampling.logit_bias for e in entries]
        if not any(biases):
            return logits
        rows = [row for row, bias in enumerate(biases) for _ in bias]
        ids = [token_id for bias in biases for token_id, _ in bias]
        values = [value for bias in biases for _, value in bias]
        device = logits.device
        index = (on_device(rows, torch.int64, device), on_device(ids, torch.int64, device))
        return logits.index_put(index, on_device(values, logits.dtype, device), accumulate=True)

    def _allowed_words(
        self, entries: Sequence[BatchEntry], vocab_size: int, device: torch.device, job: MaskJob | None
    ) -> torch.Tensor | None:
        """Each row's allowed ids as packed int32 words [S, ceil(V / 32)] on the device (None when no row is
        constrained): -inf goes to every other id (`_masked`), so greedy takes the best allowed id and sampling
        draws from the row's distribution renormalised over them.

        The masks are resolved after the forward was queued and before anything that waits for the device (on
        CUDA by `start_masks`, on its worker thread), so a grammar's mask is computed on the CPU while the device
        runs the forward; then the packed words go to the device in one copy (page-locked, non-blocking)."""
        if job is None:
            if device.type == "cuda":  # start_masks found no row with a mask
                return None
            words = resolve_masks([e.allowed_tokens for e in entries], vocab_size)
            return None if words is None else torch.from_numpy(words.view(np.int32))
        if job.words.result() is None:  # every restriction lifted by the tokens before this one
            return None
        packed = job.staging.to(device, non_blocking=True)  # [S, W]
        self._mask_staging.copied()
        return packed

    def _sample_random(
        self, logits: torch.Tensor, entries: Sequence[BatchEntry], allowed: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Each row's draw from softmax(logits / T) over the ids `truncated` leaves, by the Gumbel-max trick:
        argmax(logits / T + G) with G = -log(-log U), U uniform, draws from that distribution. It reads the
        vocabulary a few times and sorts nothing (no top_p): a twentieth of a sorted draw's time on the CPU."""
        params = [e.sampling for e in entries]
        device = logits.device
        scaled = logits
        if any(p.temperature not in (0.0, 1.0) for p in params):
            temperature = on_device(
                [p.temperature if p.temperature > 0 else 1.0 for p in params], torch.float32, device
            )
            scaled = logits / temperature[:, None]
        scaled = truncated(scaled, params)  # [S, V]; `logits` itself is left as it was
        noise = torch.empty_like(scaled).uniform_()
        for row, entry in enumerate(entries):
            seed = entry.sampling.seed
            if seed is not None:
                generator = torch.Generator(device=device)
                generator.manual_seed(step_seed(seed, len(entry.output_token_ids)))
                noise[row].uniform_(generator=generator)
        return argmax_rows(noise.log_().neg_().log_().neg_().add_(scaled), allowed)  # [S]

    def results(self, entries: Sequence[BatchEntry], sampled: SampleTensors) -> list[SampledToken]:
        """The sampled tokens as host values (reading device tensors waits for them)."""
        ids_list = sampled.token_ids.tolist()
        if sampled.chosen is None:
            return [SampledToken(e.seq_id, t) for e, t in zip(entries, ids_list, strict=False)]
        chosen_list = sampled.chosen.tolist()
        top_values_list = sampled.top_values.tolist() if sampled.top_values is not None else None
        top_ids_list = sampled.top_ids.tolist() if sampled.top_ids is not None else None
        results = []
        for row, entry in enumerate(entries):
            k = entry.sampling.logprobs
            if k is None:
                results.append(SampledToken(entry.seq_id, ids_list[row]))
                continue
            top = list(zip(top_ids_list[row][:k], top_values_list[row][:k], strict=False)) if k else []
            results.append(SampledToken(entry.seq_id, ids_list[row], chosen_list[row], top))
        return results


@dataclass
class SampleTensors:
    """A step's samples on the device: token ids [S], and where logprobs were asked for the chosen
    token's logprob [S] and the top ones (values, ids) [S, K]."""

    token_ids: torch.Tensor
    chosen: torch.Tensor | None = None
    top_values: torch.Tensor | None = None
    top_ids: torch.Tensor | None = None

    def copy_to_host(self, token_buffer: torch.Tensor | None = None) -> tuple[SampleTensors, torch.cuda.Event | None]:
        """CUDA: queue copies into pinned host memory now, so reading them later waits only for this
        step, not for work queued after it (a lookahead step); -> (host copies, event to wait on).
        token_buffer: pinned int64 memory for the token ids (at least S long), else allocated."""
        if self.token_ids.device.type != "cuda":
            return self, None
        host = {}
        for name in ("token_ids", "chosen", "top_values", "top_ids"):
            tensor = getattr(self, name)
            if tensor is None:
                continue
            if name == "token_ids" and token_buffer is not None and token_buffer.numel() >= tensor.numel():
                host[name] = token_buffer[: tensor.numel()]
            else:
                host[name] = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
            host[name].copy_(tensor, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        return SampleTensors(**host), event
