"""A step queued on the device by `TorchModelRunner.launch`, read back on the host when called."""

from __future__ import annotations

import torch

from tkr_embed.backends.torch.prompt_logprobs import PromptScores
from tkr_embed.backends.torch.sampler import MaskJob, Sampler, SampleTensors
from tkr_embed.engine.runner import PromptLogprobs, SampledToken


class QueuedStep:
    """A step queued by TorchModelRunner.launch: calling it reads the sampled tokens (then the prompt scores,
    if any) on the host.

    Its sampling is queued by `sample`: at launch, or for a lookahead step with masks once the step before it
    was postprocessed (when it is read or followed). The samples' copy to the host is queued with them, so
    reading them waits for this step only, not for a lookahead step queued after it. A step with prompt
    scores is a prefill, which no lookahead step follows: reading them directly waits for nothing else."""

    def __init__(
        self,
        entries,
        logits: torch.Tensor | None,
        token_buffer: torch.Tensor | None,
        sampler: Sampler,
        prompt_scores: PromptScores | None = None,
    ):
        self.entries = entries
        self._logits = logits  # [S, V] float32 until sampled
        self._token_buffer = token_buffer
        self._prompt_scores = prompt_scores
        self._sampler = sampler
        self.token_ids: torch.Tensor | None = None  # [S] on the device, once sampled
        self._masks: MaskJob | None = None
        self._host: SampleTensors | None = None
        self._ready: torch.cuda.Event | None = None
        self._result: list[SampledToken | PromptLogprobs] | None = None

    def start_masks(self) -> None:
        """Begin resolving the masks of the sampling to come (`Sampler.start_masks`)."""
        if self._logits is not None and self._masks is None:
            self._masks = self._sampler.start_masks(self.entries, self._logits.shape[1], self._logits.device)

    def sample(self) -> None:
        """Queue the sampling (resolving the masks) and the copy of its tokens to the host, once."""
        if self._logits is None:
            return
        with torch.inference_mode():
            sampled = self._sampler.sample(self._logits, self.entries, self._masks)
        self._logits, self._masks = None, None
        self.token_ids = sampled.token_ids
        self._host, self._ready = sampled.copy_to_host(self._token_buffer)

    def sampled_token_ids(self) -> torch.Tensor:
        """The sampled token ids [S] on the device, the sampling queued now if it was not yet."""
        self.sample()
        assert self.token_ids is not None
        return self.token_ids

    def __call__(self) -> list[SampledToken | PromptLogprobs]:
        if self._result is None:
            self.sample()
            result: list[SampledToken | PromptLogprobs] = []
            if self._host is not None:
                if self._ready is not None:
                    self._ready.synchronize()
                result += self._sampler.results(self.entries, self._host)
            if self._prompt_scores is not None:
                result += self._prompt_scores.results()
            self._result = result
        return self._result
