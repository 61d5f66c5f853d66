"""How long a beam search leaves the screen without news: the first report of its best beam so far, against the
whole search (issue 32, item 16: `generate -n N` with beams showed nothing until it had finished).

    python benchmarks/beam_progress.py [--beams 5] [--max-new-tokens 40] [--repeats 3]

Full-size GPT-2-small and BERT-base with random weights and the real vocabularies (benchmarks/build_models.py);
each column runs `generate --num-beams B -n B` through the task gbcli runs, timing the callback the live view
draws from. Medians of --repeats runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

from build_models import DEFAULT_CACHE, DEFAULT_TOKENIZERS, build_bert, build_gpt2


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--beams", type=int, default=5)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from gbcli.loading.models import load_model
    from gbcli.tasks.decoding_options import settings_from_options
    from gbcli.tasks.generation.causal import generate_causal
    from gbcli.tasks.generation.masked import generate_masked

    settings = settings_from_options(
        max_new_tokens=args.max_new_tokens, num_beams=args.beams, num_return_sequences=args.beams
    )
    columns = {
        "gpt": (build_gpt2(DEFAULT_TOKENIZERS, DEFAULT_CACHE), generate_causal),
        "bert": (build_bert(DEFAULT_TOKENIZERS, DEFAULT_CACHE), generate_masked),
    }
    print(
        f"| column | first report of the best beam (s) | whole search (s) | reports | "
        f"(--num-beams {args.beams} -n {args.beams} --max-new-tokens {args.max_new_tokens}) |"
    )
    print("|---|---|---|---|---|")
    for family, (path, runner) in columns.items():
        lm = load_model(family, str(path))
        firsts, wholes, counts = [], [], []
        for _ in range(args.repeats):
            reports: list[float] = []
            started = time.perf_counter()
            runner(lm, "hi", settings, lambda *_, reports=reports: reports.append(time.perf_counter()))
            wholes.append(time.perf_counter() - started)
            firsts.append(reports[0] - started)
            counts.append(len(reports))
        print(
            f"| {family} | {statistics.median(firsts):.2f} | {statistics.median(wholes):.2f} | "
            f"{statistics.median(counts):.0f} | |"
        )


if __name__ == "__main__":
    main()
