"""The written-out speed paths of `lm`, and their capability checks.

Each path computes what a public path of transformers or torch computes, with the same numbers (the tests hold it
to them), faster on the models it was written for; each declares a `FastPath` (gbcli.loading.capability) whose
probe looks at every private name the path reads, so that on a transformers without them the public path runs.

- `decoding_loop`: gbcli's own token-by-token loop for one stream of a causal LM (`decode_one_stream`), instead of
  `model.generate`; its FastPath is `MODEL_STEPS`;
- `gpt2_step`: GPT-2's decoding step written out (`gpt2_decoder`), instead of the model's forward
  (`GPT2_DECODER`);
- `shared_prefix`: sequences that begin alike scored with their shared start run once, against copies of its KV
  cache (`grouped_logprobs`, `run_prefix`, `continuation_logprobs`), instead of whole (`PREFIX_CACHE`);
- `threads`: how many threads token-by-token work runs on, and two models side by side on half the threads each
  (public torch calls only: no probe).

The short checkpoint load (`gbcli.loading.fast_load`) is a speed path of loading, below `lm`, and stays there.
It may import the rest of `lm`, `loading`, `terminal` and `gbcli.errors`; the rest of `lm` never imports it
(the import contract `lm-fast-above-lm` in pyproject.toml).
"""
