"""Property tests: any text through tokenize, score and fill-mask (with a mask inserted) crashes nothing, keeps
offsets inside the text, and gives probabilities in [0, 1] that sum to at most 1 per mask."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gbcli.errors import GbcliError
from gbcli.loading.models import LoadOptions, load_model
from gbcli.tasks.masking import fill_mask
from gbcli.tasks.scoring import ScoreSettings, score_batch
from gbcli.tasks.tokenization import tokenize

TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)),  # lone surrogates cannot be encoded at all
    min_size=1,
    max_size=40,
)
SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def models(gpt_path, bert_path):
    options = LoadOptions(device="cpu", dtype="float32")
    return [load_model("gpt", str(gpt_path), options), load_model("bert", str(bert_path), options)]


@SETTINGS
@given(text=TEXT)
def test_tokenize_offsets_stay_inside_the_text(models, text):
    assume(text.strip())
    result = tokenize(models, text)
    for column in result.columns:
        for piece in column.pieces:
            assert 0 <= piece.start <= piece.end <= len(text)
            if not piece.special:
                assert piece.text == text[piece.start : piece.end]


@SETTINGS
@given(text=TEXT)
def test_score_never_crashes_and_gives_finite_log_likelihoods(models, text):
    assume(text.strip())
    try:
        record = score_batch(models, [text], [1], ScoreSettings()).records[0]
    except GbcliError as error:  # a clear refusal (e.g. too long) is allowed, a crash is not
        assert error.exit_code in (1, 2)
        return
    for column in record.columns:
        assert column.log_likelihood <= 0 and math.isfinite(column.log_likelihood)


@SETTINGS
@given(left=TEXT, right=TEXT)
def test_fill_mask_probabilities_are_in_0_1_and_sum_to_at_most_1(models, left, right):
    text = f"{left} [MASK] {right}"
    try:
        result = fill_mask({lm.family: lm for lm in models}, text, top_k=5)
    except GbcliError as error:
        assert error.exit_code in (1, 2)
        return
    assert result.masks
    for slot in result.masks:
        for column in slot.columns():
            probs = [p.prob for p in column.predictions if p.prob is not None]
            assert all(0.0 <= p <= 1.0 for p in probs)
            assert sum(probs) <= 1.0 + 1e-6
