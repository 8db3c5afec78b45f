from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvlab.workload.content import (
    VOCAB_SIZE,
    VOCABULARY,
    prompt_text,
    prompt_token_ids,
    text,
    token_array,
    token_ids,
)
from kvlab.workload.records import Request, Segment


def test_vocabulary_is_fixed_lowercase_distinct() -> None:
    assert VOCAB_SIZE == 512 == len(set(VOCABULARY))
    assert all(w.isascii() and w.isalpha() and w.islower() for w in VOCABULARY)
    # The order is part of the format: pin both ends.
    assert VOCABULARY[:4] == ("the", "of", "and", "to")


def test_streams_are_pinned() -> None:
    # Golden values: a change here changes every workload's content.
    assert token_ids("sys", 5) == [180, 165, 343, 390, 378]
    assert text("sys", 3) == " light add king"


@settings(max_examples=60, deadline=None)
@given(st.text(min_size=1, max_size=20), st.integers(0, 200), st.integers(0, 200))
def test_prefix_closed(cid: str, n: int, m: int) -> None:
    a, b = sorted((n, m))
    assert token_ids(cid, a) == token_ids(cid, b)[:a]
    assert text(cid, b).startswith(text(cid, a))
    assert len(text(cid, a).split()) == a


def test_text_matches_token_ids() -> None:
    ids = token_ids("doc-7", 100)
    assert text("doc-7", 100) == "".join(" " + VOCABULARY[i] for i in ids)
    assert token_array("doc-7", 100).dtype == np.int32


def test_distinct_ids_differ_within_a_block() -> None:
    # 2,000 ids: no two share their first 8 tokens (512**-8 per pair).
    heads = {tuple(token_ids(f"c{i}", 8)) for i in range(2000)}
    assert len(heads) == 2000
    # First tokens are spread uniformly (collisions only at the 1/512 birthday rate).
    firsts = [token_ids(f"c{i}", 1)[0] for i in range(2000)]
    counts = np.bincount(firsts, minlength=VOCAB_SIZE)
    assert counts.max() < 20


def test_prompt_concatenates_segments() -> None:
    r = Request(
        "r",
        (Segment("system", 5, "s", "system"), Segment("user", 3, "u")),
        output_tokens=1,
    )
    assert prompt_token_ids(r) == token_ids("s", 5) + token_ids("u", 3)
    assert prompt_text(r) == text("s", 5) + text("u", 3)


def test_negative_length_rejected() -> None:
    with pytest.raises(ValueError):
        token_ids("x", -1)


def _train_bpe(vocab_size: int):  # type: ignore[no-untyped-def]
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # A corpus in which every vocabulary word occurs, plus ordinary prose.
    corpus = [text(f"corpus-{i}", 400) for i in range(60)]
    corpus += ["The quick brown fox jumps over the lazy dog. " * 3] * 10
    tok.train_from_iterator(corpus, trainer=trainer)
    return tok


@pytest.mark.hf
def test_stable_tokenization_with_a_real_bpe_tokenizer() -> None:
    tok = _train_bpe(vocab_size=3000)
    word_token = {}
    for w in VOCABULARY:
        enc = tok.encode(" " + w).ids
        assert len(enc) == 1, f"' {w}' is {len(enc)} tokens"
        word_token[w] = enc[0]
    # (a) exactly n tokens, one per word, mapped one-to-one from token_ids.
    for cid, n in [("sys", 300), ("tools", 1000), ("u-3", 1)]:
        enc = tok.encode(text(cid, n)).ids
        assert enc == [word_token[VOCABULARY[i]] for i in token_ids(cid, n)]
    # (b) a prefix shared at a segment boundary is a token prefix on the server.
    shared = Segment("system", 200, "sys", "system")
    r1 = Request("a", (shared, Segment("user", 50, "u1")), output_tokens=1)
    r2 = Request("b", (shared, Segment("user", 70, "u2")), output_tokens=1)
    e1, e2, es = (tok.encode(t).ids for t in (prompt_text(r1), prompt_text(r2), text("sys", 200)))
    assert e1[:200] == e2[:200] == es
    # (c) different ids differ from their first token for these ids.
    assert e1[200] != e2[200]
    assert tok.encode(text("u1", 1)).ids != tok.encode(text("u2", 1)).ids


@pytest.mark.hf
def test_prefix_property_holds_when_words_split() -> None:
    # A small vocabulary cannot hold every word: words split into several tokens, yet
    # tokens never merge across words, so prefixes still tokenize as prefixes.
    tok = _train_bpe(vocab_size=400)
    long = tok.encode(text("doc", 500)).ids
    assert len(long) > 500
    for n in (1, 17, 250, 499):
        short = tok.encode(text("doc", n)).ids
        assert long[: len(short)] == short
    seg_a, seg_b = text("a", 40), text("b", 40)
    assert tok.encode(seg_a + seg_b).ids == tok.encode(seg_a).ids + tok.encode(seg_b).ids


@pytest.mark.hf
def test_exact_length_with_the_tiny_model_tokenizer() -> None:
    pytest.importorskip("tokenizers")
    from kvlab.backends.tiny_model import TinyModelConfig, train_tokenizer, vocabulary_words

    assert vocabulary_words() == VOCABULARY
    tok = train_tokenizer(TinyModelConfig().vocab, vocabulary_words())
    word_token = {}
    for w in VOCABULARY:
        enc = tok.encode(" " + w).ids
        assert len(enc) == 1, f"' {w}' is {len(enc)} tokens in the tiny tokenizer"
        word_token[w] = enc[0]
    for cid, n in [("sys", 1), ("tools", 700), ("u/3", 33)]:
        enc = tok.encode(text(cid, n)).ids
        assert enc == [word_token[VOCABULARY[i]] for i in token_ids(cid, n)]
    r = Request(
        "r", (Segment("system", 64, "s", "system"), Segment("user", 9, "u")), output_tokens=1
    )
    assert len(tok.encode(prompt_text(r)).ids) == r.prompt_tokens
