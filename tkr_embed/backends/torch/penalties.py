"""The repetition, frequency and presence penalties, over token histories kept on the device.

A penalty reads a sequence's history: the repetition penalty every id of its prompt and output, the frequency and
presence penalties every id of its output. Turning each row's history into an array of its distinct ids on the host,
every step, costs 20 ms a step at 256 rows (an H100's machine), more than the step; and a step whose sampling needs
the host's history cannot be launched before the step ahead of it is read (the engine's lookahead).

`PenaltyHistories` therefore keeps each penalised sequence's ids in one device tensor [slots, capacity]: written
from the host once (the sequence's first sampling, or when the host's history and the slot disagree in length,
e.g. after a preemption), then appended on the device from each step's sampled ids, so a lookahead step's
penalties see the token the step before it sampled without the host knowing it. The host keeps only each slot's
length. `apply_penalties` then works on [rows, history length], never on the vocabulary: a sort and a pass over its
runs for how often each id occurs, a gather and a scatter per penalty. Writes of one id by several positions
of a row compute the same value, so the scatter is deterministic, and the result is the one the penalties' formulas
give id by id (the same float operations in the same order).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tkr_embed.backends.torch.host_copy import on_device
from tkr_embed.engine.runner import BatchEntry

logger = logging.getLogger(__name__)
_ROUND = 256  # capacity grows in whole multiples of this, at least doubling


@dataclass
class HistoryRows:
    """The penalised rows of one step and their histories on the device."""

    rows: torch.Tensor  # [R] int64: the rows of the step's logits
    row_list: list[int]  # the same rows on the host
    ids: torch.Tensor  # [R, L] int64: each row's history, what lies past its length any id
    valid: torch.Tensor  # [R, L] bool: within the row's history
    output: torch.Tensor  # [R, L] bool: within the row's output (past its prompt)
    slots: torch.Tensor  # [R] int64: where each row's next id goes
    lengths: torch.Tensor  # [R] int64: ... at this position
    slot_list: list[int]  # the same slots on the host


class PenaltyHistories:
    """Each penalised sequence's ids (its prompt too when its entry carried it), on the device, by sequence id.

    With `persistent` False every step writes every row's history from its entry, so nothing is remembered
    between calls (a sampler used on its own, whose rows' ids need not name one sequence across calls)."""

    def __init__(self, persistent: bool = True) -> None:
        self.persistent = persistent
        self._ids: torch.Tensor | None = None  # [slots, capacity] int32
        self._slot_of: dict[int, int] = {}
        self._length: list[int] = []  # per slot: ids written, or queued to be (host-known)
        self._prompt: list[int] = []  # per slot: how many of them are the prompt's
        self._free: list[int] = []

    def release(self, seq_id: int) -> None:
        slot = self._slot_of.pop(seq_id, None)
        if slot is not None:
            self._free.append(slot)

    def rows(self, entries: Sequence[BatchEntry], device: torch.device) -> HistoryRows | None:
        """The histories of the entries whose sampling is penalised, written first where the device lacks them;
        None when no entry is penalised."""
        if not self.persistent:
            self._slot_of.clear()
            self._length.clear()
            self._prompt.clear()
            self._free.clear()
        rows, slots, writes = [], [], []
        for row, entry in enumerate(entries):
            if entry.sampling is None or not entry.sampling.is_penalised:
                continue
            slot = self._slot_of.get(entry.seq_id)
            if entry.history_on_host:
                if slot is None:
                    slot = self._new_slot(entry.seq_id)
                prompt = len(entry.prompt_token_ids)
                length = prompt + len(entry.output_token_ids)
                if self._length[slot] != length or self._prompt[slot] != prompt:
                    self._length[slot], self._prompt[slot] = length, prompt
                    writes.append((slot, entry))
            elif slot is None:
                # A lookahead step's sequence that finished with the token before (released since): its token is
                # discarded, so it goes unpenalised.
                logger.debug("sequence %d has no penalty history on the device", entry.seq_id)
                continue
            rows.append(row)
            slots.append(slot)
        if not rows:
            return None
        width = max(self._length[slot] for slot in slots)
        self._ensure(width + 1, device)  # room for every row's history and the id this step appends to it
        assert self._ids is not None
        if writes:
            self._write(writes, device)
        width = max(1, width)
        slot_index = on_device(slots, torch.int64, device)
        lengths = on_device([self._length[slot] for slot in slots], torch.int64, device)
        prompts = on_device([self._prompt[slot] for slot in slots], torch.int64, device)
        positions = torch.arange(width, device=device)
        valid = positions < lengths[:, None]
        return HistoryRows(
            rows=on_device(rows, torch.int64, device),
            row_list=rows,
            ids=self._ids[:, :width].index_select(0, slot_index).long(),
            valid=valid,
            output=valid & (positions >= prompts[:, None]),
            slots=slot_index,
            lengths=lengths,
            slot_list=slots,
        )

    def append(self, history: HistoryRows, token_ids: torch.Tensor) -> None:
        """Each penalised row's sampled id [S] (on the device) at the end of its history."""
        assert self._ids is not None
        self._ids[history.slots, history.lengths] = token_ids.index_select(0, history.rows).to(self._ids.dtype)
        for slot in history.slot_list:
            self._length[slot] += 1

    def _new_slot(self, seq_id: int) -> int:
        if self._free:
            slot = self._free.pop()
        else:
            slot = len(self._length)
            self._length.append(0)
            self._prompt.append(0)
        self._length[slot] = self._prompt[slot] = 0
        self._slot_of[seq_id] = slot
        return slot

    def _ensure(self, capacity: int, device: torch.device) -> None:
        """Room for every slot, and for `capacity` ids in each."""
        slots = len(self._length)
        ids = self._ids
        if ids is not None and ids.shape[0] >= slots and ids.shape[1] >= capacity and ids.device == device:
            return
        old_slots, old_capacity = (0, 0) if ids is None else ids.shape
        new_slots = old_slots if old_slots >= slots else max(slots, 2 * old_slots, 8)
        new_capacity = (
            old_capacity if old_capacity >= capacity else max(-(-capacity // _ROUND) * _ROUND, 2 * old_capacity)
        )
        grown = torch.zeros(new_slots, new_capacity, dtype=torch.int32, device=device)
        if ids is not None:
            grown[:old_slots, :old_capacity] = ids.to(device)
        self._ids = grown

    def _write(self, writes: list[tuple[int, BatchEntry]], device: torch.device) -> None:
        """The entries' host histories into their slots, in one copy."""
        width = max(self._length[slot] for slot, _ in writes)
        if width == 0:
            return
        host = np.zeros((len(writes), width), dtype=np.int32)
        for row, (slot, entry) in enumerate(writes):
            prompt = self._prompt[slot]
            host[row, :prompt] = entry.prompt_token_ids
            host[row, prompt : self._length[slot]] = entry.output_token_ids
        assert self._ids is not None
        self._ids[on_device([slot for slot, _ in writes], torch.int64, device), :width] = on_device(
            host, torch.int32, device
        )


def _distinct(ids: torch.Tensor, member: torch.Tensor, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ids of each row's `member` positions of `ids` [R, L], in order, each with how many members hold it
    ([R, L] both): a sort and a pass over its runs. The padding past a row's members names the row's last member
    again with the same count (id 0, count 0, in a row without members), so writing one value per (id, count)
    gives each id one value, whichever of its positions writes last."""
    ordered = torch.where(member, ids, vocab_size).sort(dim=1).values  # the members' ids, then vocab_size
    width = ordered.shape[1]
    position = torch.arange(width, device=ids.device).expand_as(ordered)
    starts = torch.ones_like(member)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(member)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, 0).cummax(dim=1).values
    last = torch.where(ends, position, width).flip(1).cummin(dim=1).values.flip(1)
    counts = last - first + 1
    members = member.sum(dim=1, keepdim=True)
    final = (members - 1).clamp(min=0)
    padding = position >= members
    fill = members > 0
    ids_out = torch.where(padding, torch.where(fill, ordered.gather(1, final), 0), ordered)
    counts_out = torch.where(padding, torch.where(fill, counts.gather(1, final), 0), counts)
    return ids_out, counts_out


def apply_penalties(logits: torch.Tensor, entries: Sequence[BatchEntry], history: HistoryRows) -> torch.Tensor:
    """The repetition penalty on every id of each row's prompt and output, then the frequency and presence
    penalties on every id of its output, out of place. Only the ids a row has seen are read and written."""
    device = logits.device
    vocab = logits.shape[1]
    picked = [entries[row].sampling for row in history.row_list]
    logits = logits.clone()
    rows = history.rows[:, None]
    if any(p.repetition_penalty != 1.0 for p in picked):
        penalty = on_device([p.repetition_penalty for p in picked], torch.float32, device)[:, None]
        ids, counts = _distinct(history.ids, history.valid, vocab)
        values = logits[rows, ids]
        logits[rows, ids] = torch.where(counts > 0, torch.where(values > 0, values / penalty, values * penalty), values)
    if any(p.presence_penalty != 0.0 or p.frequency_penalty != 0.0 for p in picked):
        frequency = on_device([p.frequency_penalty for p in picked], torch.float32, device)[:, None]
        presence = on_device([p.presence_penalty for p in picked], torch.float32, device)[:, None]
        ids, counts = _distinct(history.ids, history.output, vocab)
        values = logits[rows, ids]
        logits[rows, ids] = values - frequency * counts.float() - presence * (counts > 0).float()
    return logits
