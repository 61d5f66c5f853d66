"""Text generation: GPT-2 continues a prompt; BERT is made to by iterative mask filling; BART by its decoder.

GPT-2 was trained to predict the next token, so generation is what it does. BERT was trained to fill blanks
inside a sentence; the closest it gets to writing is to append a `[MASK]`, fill it, and repeat (Wang and Cho
2019, "BERT has a Mouth, and It Must Speak"). Running both with the same decoding settings shows the difference.

- results: the result types every column returns, and the text each new token adds;
- causal: GPT-2's column (the decoding loop itself is gbcli.lm.fast.decoding_loop, GPT-2's fast step
  gbcli.lm.fast.gpt2_step);
- masked: BERT's column.
BART's column is gbcli.tasks.seq2seq.generate_seq2seq.

This file re-exports the result types alone: a column imports torch at its top, and the live view and the warm
runner build a result before the libraries are imported (import a column from its module).
"""

from gbcli.tasks.generation.results import (
    Alternative,
    Continuation,
    GeneratedToken,
    GenerationResult,
    ModelGeneration,
    TokenCallback,
    continuation,
    model_generation,
)

__all__ = [
    "Alternative",
    "Continuation",
    "GeneratedToken",
    "GenerationResult",
    "ModelGeneration",
    "TokenCallback",
    "continuation",
    "model_generation",
]
