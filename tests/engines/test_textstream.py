"""Incremental detokenizing and stop strings, against real tokenizers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from engines.textstream import REPLACEMENT, IncrementalDetokenizer, StopMatcher

Decode = Callable[[Sequence[int]], str]

CORPUS = ["hello world, the quick brown fox", "naïve café ▁ underscores", "日本語 and emoji 😀"]


@pytest.fixture(scope="module")
def byte_level(tiny_models) -> tuple[Decode, Callable[[str], list[int]], int]:
    """The tiny chat model's own tokenizer, through transformers as the engine uses it."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models.chat, local_files_only=True)

    def decode(ids: Sequence[int]) -> str:
        return str(tok.decode(list(ids), skip_special_tokens=True))

    def encode(text: str) -> list[int]:
        return list(tok(text, add_special_tokens=False).input_ids)

    return decode, encode, len(tok)


@pytest.fixture(scope="module")
def metaspace() -> tuple[Decode, Callable[[str], list[int]], int]:
    """A SentencePiece-style tokenizer: its decoder drops the first token's space."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first")
    tok.decoder = decoders.Metaspace(prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>"], show_progress=False
    )
    tok.train_from_iterator(CORPUS * 3, trainer)

    def decode(ids: Sequence[int]) -> str:
        return tok.decode(list(ids), skip_special_tokens=True)

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    return decode, encode, tok.get_vocab_size()


def _stream(decode: Decode, ids: list[int], cuts: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(decode)
    deltas, start = [], 0
    for cut in [*sorted({c % (len(ids) + 1) for c in cuts}), len(ids)]:
        deltas.append(detok.push(ids[start:cut]))
        start = cut
    deltas.append(detok.flush())
    return deltas


ids_or_text = st.one_of(
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
    st.text(max_size=30),
)


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(ids_or_text, max_size=4), cuts=st.lists(st.integers(0, 200), max_size=12))
def test_deltas_join_to_the_full_decode(byte_level, metaspace, pieces, cuts) -> None:
    for decode, encode, vocab in (byte_level, metaspace):
        ids: list[int] = []
        for piece in pieces:  # random ids (split characters, specials) and real text
            ids += encode(piece) if isinstance(piece, str) else [i % vocab for i in piece]
        assert "".join(_stream(decode, ids, cuts)) == decode(ids)


@settings(max_examples=60, deadline=None)
@given(text=st.text(max_size=40))
def test_one_token_at_a_time_never_splits_a_character(byte_level, text) -> None:
    decode, encode, _ = byte_level
    ids = encode(text)
    deltas = _stream(decode, ids, list(range(len(ids))))
    assert "".join(deltas) == decode(ids)
    if REPLACEMENT not in decode(ids):
        assert not any(REPLACEMENT in d for d in deltas)


def test_multibyte_character_is_held_until_complete(byte_level) -> None:
    decode, encode, _ = byte_level
    ids = encode("é😀")
    assert len(ids) > 2  # byte-level pieces of the two characters
    detok = IncrementalDetokenizer(decode)
    out = [detok.push([i]) for i in ids]
    assert [d for d in out if d] == ["é", "😀"]
    assert detok.flush() == ""


def test_flush_emits_a_dangling_partial_character(byte_level) -> None:
    decode, encode, _ = byte_level
    ids = encode("a😀")[:-1]  # cut inside the emoji
    detok = IncrementalDetokenizer(decode)
    text = detok.push(ids)
    assert text + detok.flush() == decode(ids)
    assert decode(ids).endswith(REPLACEMENT)


def test_leading_space_survives_sentencepiece_style_decoding(metaspace) -> None:
    decode, encode, _ = metaspace
    ids = encode("hello world fox")
    assert "".join(_stream(decode, ids, list(range(len(ids))))) == "hello world fox"


def _reference_cut(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text up to the stop occurrence that completes first (earliest end, then start)."""
    hits = [(i + len(s), i) for s in stops if s and (i := text.find(s)) >= 0]
    return (text[: min(hits)[1]], True) if hits else (text, False)


alphabet = st.sampled_from("abc😀")


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet, max_size=30),
    stops=st.lists(st.text(alphabet, min_size=1, max_size=4), min_size=1, max_size=4),
    cuts=st.lists(st.integers(0, 30), max_size=10),
)
def test_stop_strings_never_leak_whatever_the_split(text, stops, cuts) -> None:
    matcher = StopMatcher(stops)
    emitted, start = "", 0
    for cut in [*sorted({min(c, len(text)) for c in cuts}), len(text)]:
        emitted += matcher.feed(text[start:cut])
        start = cut
        expected, _ = _reference_cut(text, stops)
        assert expected.startswith(emitted)  # never emits what a stop may still claim
    emitted += matcher.flush()
    expected, stopped = _reference_cut(text, stops)
    assert emitted == expected
    assert matcher.stopped == stopped


def test_stop_across_deltas_and_earliest_completion() -> None:
    matcher = StopMatcher(["END", "xyz"])
    assert matcher.feed("hello E") == "hello "
    assert matcher.feed("N") == ""
    assert matcher.feed("D and more") == ""
    assert matcher.stopped and matcher.flush() == ""
    matcher = StopMatcher(["abcd", "c"])
    assert matcher.feed("abcd") == "ab"  # "c" completes before "abcd" does


def test_held_text_is_released_when_no_stop_follows() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("go ST") == "go "
    assert matcher.feed("ill") == "STill"
    assert matcher.feed("ST") == ""
    assert matcher.flush() == "ST"
    assert not matcher.stopped
