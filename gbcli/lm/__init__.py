"""What one loaded model computes, knowing nothing of commands.

- `batching`: right-padded batches of token-id sequences under a token or row budget;
- `heads`: the vocabulary projection applied at chosen positions only (`logits_at`), the masked-LM head table;
- `reads`: log-probabilities of given tokens and the top k at chosen positions (`run_reads`), and the causal
  log-probability of given sequences (`causal_logprobs`);
- `teacher_forcing`: teacher forcing of an encoder-decoder (`teacher_forced_logprobs`);
- `decoding_settings`: how each next token is chosen (greedy, sampled, beam), plain values;
- `hf_generate`: one `model.generate` call (its arguments and streamer) for GPT-2's sampled/beam paths and BART;
- `hidden`: every layer's hidden states, pooled to one vector per text;
- `fast/`: the written-out speed paths and their capability checks: gbcli's own decoding loop, GPT-2's
  written-out step, the shared-prefix cache, the thread chooser (see its docstring).

The model-level facts these need (the pad id, the BOS id, whether an input fits, the mask token) are properties
and methods of `gbcli.loading.models.LoadedModel`. The modules a command imports before it checks its text
(all but `hidden`, `hf_generate`, `fast.decoding_loop` and `fast.gpt2_step`, which `generate` imports once its
text has passed) import torch and transformers inside the functions that use them, so that a usage error
comes before torch is imported (tests/test_late_imports.py: START_UP). This file re-exports nothing, so that importing
a light module (`decoding_settings`, `pooling`) imports no computation with it: import each name from its module.
It may import `loading`, `terminal` and `gbcli.errors`, never `cli`, `tasks`, `render`, `warm` or `jobs`.
"""
