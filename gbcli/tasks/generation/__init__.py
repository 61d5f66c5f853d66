"""Text generation: GPT-2 continues a prompt; BERT is made to by iterative mask filling; BART by its decoder.

GPT-2 was trained to predict the next token, so generation is what it does. BERT was trained to fill blanks
inside a sentence; the closest it gets to writing is to append a `[MASK]`, fill it, and repeat (Wang and Cho
2019, "BERT has a Mouth, and It Must Speak"). Running both with the same decoding settings shows the difference.

- results: the result types every column returns, and the text each new token adds;
- causal: GPT-2's column (the decoding loop itself is gbcli.lm.fast.decoding_loop, GPT-2's fast step
  gbcli.lm.fast.gpt2_step);
- masked: BERT's column.
BART's column is gbcli.tasks.seq2seq.generate_seq2seq.
"""

from gbcli.lm.fast.decoding_loop import decodes_in_own_loop
from gbcli.lm.fast.threads import StepThreads, other_busy_cores, step_threads, usable_cores
from gbcli.tasks.generation.causal import GPT_METHOD, generate_causal, score_continuation
from gbcli.tasks.generation.masked import BERT_METHOD, generate_masked
from gbcli.tasks.generation.results import (
    Alternative,
    Continuation,
    GeneratedToken,
    GenerationResult,
    ModelGeneration,
    TokenCallback,
    check_prompt,
    continuation,
    model_generation,
)

__all__ = [
    "BERT_METHOD",
    "GPT_METHOD",
    "Alternative",
    "Continuation",
    "GeneratedToken",
    "GenerationResult",
    "ModelGeneration",
    "StepThreads",
    "TokenCallback",
    "check_prompt",
    "continuation",
    "decodes_in_own_loop",
    "generate_causal",
    "generate_masked",
    "model_generation",
    "other_busy_cores",
    "score_continuation",
    "step_threads",
    "usable_cores",
]
