"""Commands over a file of texts: reading the input, running it in batches, chunked JSON Lines output, torchrun.

- `inputs`: the user's text from an argument, stdin or a file of one text per line;
- `pair_file`: a file of minimal pairs (TSV or BLiMP's JSON Lines), and the pairs a resumed run already scored;
- `plan`: a command's texts a batch at a time through one task, and its `--output` work as a `Plan` of chunks;
- `jsonl_output`: `--output F [--resume]`, JSON Lines written whole a chunk at a time, and read back to resume;
- `distributed`: torchrun's environment, the chunks dealt out by cost, the part files merged;
- `torchrun_job`: a file job as one of torchrun's processes;
- `labelled`: labelled examples (text, label, word or pairs) from JSONL, CSV or TSV, for `probe` and `finetune`;
- `builtin_tasks`: the probing tasks gbcli generates from its own templates, as the same labelled data;
- `state_cache`: the on-disk cache of pooled hidden states that `probe` reads back.

Below `cli`, above `render`: it may import `render`, `tasks`, `lm`, `loading`, `terminal` and `gbcli.errors`,
never `cli` or `warm`.
"""
