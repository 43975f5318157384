"""``klpinspect.wordset.alternation``: a trie of the words matches as ``w1|w2|...``
with the longer words first (what the string-table searches used before)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from klpinspect.wordset import alternation

# few letters, regex metacharacters among them: words share prefixes, end inside
# one another, and need escaping
_ALPHABET = b"ab_.*("
_words = st.sets(st.binary(min_size=1, max_size=5).map(
    lambda b: bytes(_ALPHABET[x % len(_ALPHABET)] for x in b)), min_size=1, max_size=10)
_hay = st.binary(max_size=400).map(lambda b: bytes((_ALPHABET + b"\0")[x % 7] for x in b))


def _plain(words: set[bytes]) -> bytes:
    return b"|".join(map(re.escape, sorted(words, key=len, reverse=True)))


@settings(max_examples=300, deadline=None)
@given(_words, _hay)
def test_same_matches_as_the_plain_alternation(words: set[bytes], hay: bytes) -> None:
    for tail in (b"", b"(?=\0)"):  # symtab.prefetch_names, Btf.prefetch_strings
        plain = re.compile(b"\0(" + _plain(words) + b")" + tail)
        trie = re.compile(b"\0(" + alternation(words) + b")" + tail)
        want = [(m.start(), m.group(1)) for m in plain.finditer(hay)]
        assert [(m.start(), m.group(1)) for m in trie.finditer(hay)] == want


def test_each_word_and_nothing_else() -> None:
    words = [b"module", b"module_sect_attr", b"mod", b"rq", b".TOC.", b"a*b"]
    pattern = re.compile(alternation(words))
    for w in words:
        assert pattern.fullmatch(w)
    for other in (b"modul", b"modules", b"r", b"xTOCx", b"aab", b""):
        assert not pattern.fullmatch(other)
    assert not re.compile(alternation([])).search(b"anything")
