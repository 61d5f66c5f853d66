"""How each next token is chosen: the decoding settings every generating column shares, so that GPT-2, BERT and
BART are asked the same thing. Plain values; `gbcli.tasks.decoding_options` builds them from the command's options
and says what is wrong with a bad one."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Mode = Literal["greedy", "sample", "beam"]

DEFAULT_TEMPERATURE = 1.0
DEFAULT_TOP_K = 50
DEFAULT_TOP_P = 1.0
# How many of the tokens the model weighed at each step a result keeps (`--json` always carries them).
DEFAULT_ALTERNATIVES = 5


@dataclass(frozen=True)
class DecodingSettings:
    """How each next token is chosen. Probabilities reported elsewhere are always the raw model's."""

    mode: Mode
    max_new_tokens: int
    temperature: float = DEFAULT_TEMPERATURE
    top_k: int = DEFAULT_TOP_K
    top_p: float = DEFAULT_TOP_P
    repetition_penalty: float = 1.0
    num_beams: int = 1
    num_return_sequences: int = 1
    seed: int | None = None
    alternatives: int = DEFAULT_ALTERNATIVES

    def one_stream_each(self) -> list[DecodingSettings]:
        """Sampling several sequences: one stream each, decoded (and streamed, and kept on Ctrl-C) in turn; the
        seed seeds the first, the others continue its random stream, so one seed still gives the same sequences.
        Anything else decodes as one job: [self]."""
        if self.mode != "sample" or self.num_return_sequences == 1:
            return [self]
        return [
            replace(self, num_return_sequences=1, seed=self.seed if k == 0 else None)
            for k in range(self.num_return_sequences)
        ]

    def describe(self) -> str:
        if self.mode == "greedy":
            text = "greedy"
        elif self.mode == "beam":
            text = f"beam search ({self.num_beams} beams)"
        else:
            text = (
                f"sampling (temperature {self.temperature:g}, top-k {self.top_k}, top-p {self.top_p:g}, "
                f"seed {self.seed})"
            )
        if self.repetition_penalty != 1.0:
            text += f", repetition penalty {self.repetition_penalty:g}"
        return text

    def logits_processors(self):  # -> transformers.LogitsProcessorList
        """The same transformations `model.generate` applies, for columns that decode in their own loop."""
        from transformers.generation.logits_process import (
            LogitsProcessorList,
            RepetitionPenaltyLogitsProcessor,
            TemperatureLogitsWarper,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        processors = LogitsProcessorList()
        if self.repetition_penalty != 1.0:
            processors.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if self.mode == "sample":
            if self.temperature != 1.0:
                processors.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                processors.append(TopKLogitsWarper(self.top_k))
            if self.top_p < 1.0:
                processors.append(TopPLogitsWarper(self.top_p))
        return processors
