"""The curve's point at zero examples: each family's dev accuracy before any training, from its pre-training alone.

`--prompt "{text} It was {label}." --verbalizer positive=great,negative=terrible` puts each dev text in the
template and asks which label word the model finds most likely where {label} stands, each family the way its
pre-training allows: GPT-2 by the log-likelihood of the word's tokens after the prompt's left part (it cannot see
what follows), BERT by filling [MASK]s in its place (one per word piece, each read with the whole template around
it). Both use gbcli's reads (gbcli.lm.reads), the computation behind `score` and `fill-mask`.
"""

from __future__ import annotations

from dataclasses import dataclass

from gbcli.errors import usage_error
from gbcli.lm.reads import Reads, causal_logprobs, run_reads
from gbcli.loading.models import LoadedModel
from gbcli.tasks.finetune.data import Example
from gbcli.tasks.finetune.results import ZeroShot

ZERO_SHOT_METHODS = {
    "causal": "log-likelihood of the label word after the prompt",
    "masked": "[MASK] filled in the label word's place (one mask per word piece)",
}


@dataclass(frozen=True)
class Template:
    before: str  # the template up to {label}, with {text} (and {text_b}) still to fill
    after: str

    def parts(self, example: Example) -> tuple[str, str]:
        def fill(part: str) -> str:
            return part.replace("{text}", example.text).replace("{text_b}", example.text_b or "")

        return fill(self.before), fill(self.after)


def parse_template(prompt: str) -> Template:
    """`{text} It was {label}.` (TEXT is accepted for {text}): the template, split at its one {label}."""
    if "{text}" not in prompt and "TEXT" in prompt:
        prompt = prompt.replace("TEXT", "{text}", 1)
    if "{text}" not in prompt:
        raise usage_error(
            "--prompt has no {text} where each example's text goes.", 'e.g. --prompt "{text} It was {label}."'
        )
    if prompt.count("{label}") != 1:
        raise usage_error(
            "--prompt must hold {label} exactly once: where the label word goes.",
            'e.g. --prompt "{text} It was {label}."',
        )
    before, _, after = prompt.partition("{label}")
    return Template(before, after)


def parse_verbalizer(raw: str, labels: list[str]) -> dict[str, str]:
    """`positive=great,negative=terrible` → {label: word}, covering every label of the data."""
    words: dict[str, str] = {}
    for item in raw.split(","):
        label, equals, word = item.partition("=")
        if not equals or not label.strip() or not word.strip():
            raise usage_error(
                f"--verbalizer item '{item}' is not LABEL=WORD.", "e.g. --verbalizer positive=great,negative=terrible"
            )
        words[label.strip()] = word.strip()
    missing = [label for label in labels if label not in words]
    if missing:
        raise usage_error(
            f"--verbalizer gives no word for the label(s) {', '.join(missing)}.",
            f"Name a word for each of: {', '.join(labels)}.",
        )
    unknown = [label for label in words if label not in labels]
    if unknown:
        raise usage_error(
            f"--verbalizer names label(s) the data does not have: {', '.join(unknown)}.",
            f"The labels are: {', '.join(labels)}.",
        )
    return {label: words[label] for label in labels}


def label_scores(lm: LoadedModel, template: Template, words: list[str], examples: list[Example]) -> list[list[float]]:
    """Per example, the log-probability of each label word in the template (summed over its tokens)."""
    if lm.kind == "causal":
        return _causal_scores(lm, template, words, examples)
    if lm.kind == "masked":
        return _masked_scores(lm, template, words, examples)
    raise usage_error(
        f"The zero-shot point is not defined for {lm.name} ({lm.kind}).",
        "Leave --prompt out for this family, or choose --models gpt,bert.",
    )


def _causal_scores(lm: LoadedModel, template: Template, words: list[str], examples: list[Example]) -> list[list[float]]:
    # The space before {label} belongs to the word ("Ġgreat"), as GPT-2 saw words after a space in pre-training.
    sequences, starts = [], []
    start = [] if lm.bos_id is None else [lm.bos_id]
    for example in examples:
        before, _ = template.parts(example)
        left = before.rstrip()
        space = before[len(left) :]
        prefix = start + lm.tokenizer.encode(left, add_special_tokens=False)
        for word in words:
            sequences.append(prefix + lm.tokenizer.encode(space + word, add_special_tokens=False))
            starts.append(len(prefix))
    for ids in sequences:
        lm.check_fits(len(ids), "a dev text in the --prompt template", "Shorten the template or the texts.")
    logprobs, _ = causal_logprobs(lm, sequences, starts)
    sums = [sum(values) for values in logprobs]
    return [sums[i * len(words) : (i + 1) * len(words)] for i in range(len(examples))]


def _masked_scores(lm: LoadedModel, template: Template, words: list[str], examples: list[Example]) -> list[list[float]]:
    mask = lm.tokenizer.mask_token
    lm.require_mask_token("fill the --prompt's {label}", "Leave --prompt out for this family.")
    pieces = [lm.tokenizer.encode(word, add_special_tokens=False) for word in words]
    reads = []
    for example in examples:
        before, after = template.parts(example)
        for word_pieces in pieces:
            text = before + " ".join([mask] * len(word_pieces)) + after
            ids = lm.tokenizer.encode(text)
            lm.check_fits(len(ids), "a dev text in the --prompt template", "Shorten the template or the texts.")
            positions = [i for i, token in enumerate(ids) if token == lm.tokenizer.mask_token_id]
            reads.append(Reads(ids, positions, [[piece] for piece in word_pieces]))
    run_reads(lm, reads)
    sums = [sum(values[0] for values in r.target_logprobs) for r in reads]
    return [sums[i * len(words) : (i + 1) * len(words)] for i in range(len(examples))]


def zero_shot(lm: LoadedModel, prompt: str, verbalizer: dict[str, str], examples: list[Example]) -> ZeroShot:
    """Dev accuracy of the most likely label word (the first label wins a tie)."""
    template = parse_template(prompt)
    labels = list(verbalizer)
    scores = label_scores(lm, template, [verbalizer[label] for label in labels], examples)
    predictions = [labels[max(range(len(labels)), key=lambda j, row=row: (row[j], -j))] for row in scores]
    correct = sum(p == e.label for p, e in zip(predictions, examples, strict=True))
    return ZeroShot(prompt, verbalizer, ZERO_SHOT_METHODS[lm.kind], correct / len(examples), predictions)
