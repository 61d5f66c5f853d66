"""Loading: resolve a model spec (hub id or folder), check it can be had, fetch it, check its parts, load it.

- `families`: the three families and what each model flag expects; `LoadOptions`;
- `models`: resolving a spec, loading once per process, kind and head checks, device and dtype; `LoadedModel`;
- `availability`: before any model loads, can every requested model be had, and one sentence for a failed load;
- `checkpoint_checks`: what a checkpoint is and whether its parts (layers, shapes, weights, tokenizer) belong
  together;
- `shapes`: a model's layers and attention heads, read from its config.json alone (usage checks before a load);
- `download`: a first run of an uncached hub id, with its bytes shown;
- `fast_load`: the written-out load of a local safetensors folder of a known architecture;
- `versions`: the transformers gbcli runs on, checked at start-up from package metadata alone;
- `capability`: `FastPath`, the once-per-process check of whether a speed path (here or in `lm`) finds the private
  names of transformers and torch it uses, and the debug line when it does not.

The bottom room: it may import `gbcli.terminal`, `gbcli.errors` and libraries (torch, transformers,
huggingface_hub), never `cli`, `tasks`, `render`, `warm`, `jobs` or `lm`.
"""
