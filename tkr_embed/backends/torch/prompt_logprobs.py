"""Prompt logprobs: the scores of the prompt tokens that a prefill chunk's positions predict.

Position p's logits score the prompt token at p + 1 (`BatchEntry.prompt_logprob_targets`), so a chunk's last
position scores the next chunk's first token. The logits are made a slice of rows at a time, so a chunk of
thousands of tokens never holds its [T, V] logits. Shared by the torch and MLX runners: each passes a function
that returns float32 torch logits for a range of the step's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from tkr_embed.engine.runner import BatchEntry, PromptLogprobs

# Logits made at once, rows x vocabulary: 128 MiB of float32 (and as much again for their log-softmax).
SLICE_ELEMENTS = 1 << 25

RowLogits = Callable[[int, int], torch.Tensor]  # (first row, end row) -> [rows, V] float32 logits


@dataclass
class _EntryScores:
    entry: BatchEntry
    chosen: torch.Tensor  # [N] the targets' logprobs
    top_values: torch.Tensor | None  # [N, k], best first
    top_ids: torch.Tensor | None  # [N, k]


def score_rows(
    row_logits: RowLogits, first_row: int, targets: torch.Tensor, k: int, vocab_size: int
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Log-softmax (float32, the whole vocabulary) of rows first_row .. first_row + N - 1; -> each row's target
    logprob [N] and, when k > 0, its top k (values, ids) [N, k]."""
    num_rows = targets.shape[0]
    rows_per_slice = max(1, SLICE_ELEMENTS // vocab_size)
    if num_rows == 0:
        device = targets.device
        values = torch.empty((0, k), device=device) if k else None
        ids = torch.empty((0, k), dtype=torch.int64, device=device) if k else None
        return torch.empty(0, device=device), values, ids
    chosen, top_values, top_ids = [], [], []
    for begin in range(0, num_rows, rows_per_slice):
        end = min(num_rows, begin + rows_per_slice)
        logprobs = torch.log_softmax(row_logits(first_row + begin, first_row + end).float(), dim=-1)  # [n, V]
        chosen.append(logprobs.gather(1, targets[begin:end, None]).squeeze(1))  # [n]
        if k:
            values, ids = logprobs.topk(k, dim=-1)  # [n, k]
            top_values.append(values)
            top_ids.append(ids)
    if not k:
        return torch.cat(chosen), None, None
    return torch.cat(chosen), torch.cat(top_values), torch.cat(top_ids)


class PromptScores:
    """A step's prompt scores, one per entry that asks for them, computed now (queued, on a device that computes
    asynchronously); `results` reads them on the host."""

    def __init__(
        self, entries: Sequence[BatchEntry], ends: Sequence[int], row_logits: RowLogits, vocab_size: int, device
    ) -> None:
        """ends: each entry's end row in the step's flat batch of tokens."""
        self._scores: list[_EntryScores] = []
        for entry, end in zip(entries, ends, strict=True):
            if entry.prompt_logprobs is None:
                continue
            targets = torch.tensor(entry.prompt_logprob_targets, dtype=torch.int64, device=device)  # [N]
            first_row = end - len(entry.token_ids)
            scored = score_rows(row_logits, first_row, targets, entry.prompt_logprobs, vocab_size)
            self._scores.append(_EntryScores(entry, *scored))

    def results(self) -> list[PromptLogprobs]:
        """The scores as host values, in entry order (reading device tensors waits for them)."""
        results = []
        for scores in self._scores:
            k = scores.entry.prompt_logprobs
            ids = scores.top_ids.tolist() if scores.top_ids is not None else None
            values = scores.top_values.tolist() if scores.top_values is not None else None
            chosen = scores.chosen.tolist()
            if k:
                top = [list(zip(ids[row], values[row], strict=True)) for row in range(len(chosen))]
            else:
                top = [[] for _ in chosen]
            results.append(PromptLogprobs(scores.entry.seq_id, scores.entry.start_pos + 1, chosen, top))
        return results
