"""A regular expression matching exactly one of many literal words, fast.

Python's ``re`` tries the alternatives of ``a|b|c`` one after the other at
each place a search stops; with tens of names (the symbols or BTF types a
command asks for), searched at each of the ~200,000 NULs of a string table,
that is most of the search.  The same words as a trie (``m(?:od(?:ule|_x))``)
fail at a place after one or two character tests: the same matches, about a
third of the time.  Pure: bytes in, bytes out.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ("alternation",)


def alternation(words: Iterable[bytes]) -> bytes:
    """A pattern (no group of its own) matching exactly one of ``words`` at a place,
    the longest first where one is a prefix of another (``ab`` before ``a``, as
    in ``ab|a``)."""
    unique = sorted(set(words))
    if not unique:
        return b"(?!)"  # matches nothing
    return _trie(unique)


def _trie(words: list[bytes]) -> bytes:
    groups: dict[bytes, list[bytes]] = {}
    empty = False
    for w in words:
        if w:
            groups.setdefault(w[:1], []).append(w[1:])
        else:
            empty = True
    alts = [re.escape(first) + _trie(rest) for first, rest in sorted(groups.items())]
    if not alts:
        return b""
    body = alts[0] if len(alts) == 1 and not empty else b"(?:" + b"|".join(alts) + b")"
    # a word ending here and longer ones going on: the longer first (greedy ``?``)
    return body + b"?" if empty else body
