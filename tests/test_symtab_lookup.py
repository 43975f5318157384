"""``ElfSymbols.lookup`` against its documented rules, by brute force over every entry.

The rules (libdrgn ``elf_symtab.c``, as the class docstring states them): the sized
symbols containing the address win, the closest start first, then the smaller,
then the higher binding (global = unique > weak > local), then table order; else
the closest size-0 label at or below the address, unless a symbol starting at or
below it reaches past the label.  Random tables with overlaps, aliases and labels
exercise both the scan and the one-candidate shortcut taken first.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from klpinspect.symtab import ElfSymbols, SymEntry

_RANK = {1: 3, 10: 3, 2: 2}  # STB_GLOBAL, STB_GNU_UNIQUE, STB_WEAK; the rest 1


def _brute(entries: list[SymEntry], address: int) -> tuple[int, int, str] | None:
    sized = [
        ((start, -size, _RANK.get(bind, 1), -row), (start, size, str(name)))
        for row, (start, size, name, bind, _shndx) in enumerate(entries)
        if size and start <= address < start + size
    ]
    if sized:
        return max(sized)[1]
    below = [e for e in entries if e[0] <= address]
    labels = [(row, e) for row, e in enumerate(entries) if not e[1] and e[0] <= address]
    if not labels:
        return None
    nearest = max(e[0] for _row, e in labels)
    if nearest < max(e[0] + e[1] for e in below):
        return None
    _key, best = max(
        ((_RANK.get(e[3], 1), -row), (e[0], e[1], str(e[2])))
        for row, e in labels if e[0] == nearest
    )
    return best


_ENTRY = st.tuples(
    st.integers(0x1000, 0x1200),  # start: a small window, so symbols overlap
    st.sampled_from([0, 0, 4, 8, 16, 0x40, 0x100]),  # size; 0 = a label
    st.sampled_from(["a", "b", "c", "d", "e"]),
    st.sampled_from([0, 1, 2, 10]),  # LOCAL, GLOBAL, WEAK, GNU_UNIQUE
    st.just(1),
)


@settings(max_examples=400, deadline=None)
@given(entries=st.lists(_ENTRY, max_size=12), probes=st.lists(st.integers(0xFF0, 0x1320),
                                                               min_size=1, max_size=20))
def test_lookup_is_the_rules(entries: list[SymEntry], probes: list[int]) -> None:
    table = ElfSymbols(list(entries))
    for address in probes:
        assert table.lookup(address) == _brute(entries, address), hex(address)


def test_functions_one_after_another() -> None:
    """A module's kallsyms: functions end to end (the shortcut), then a label after them."""
    entries: list[SymEntry] = [(0x1000 + 0x100 * i, 0x100, f"f{i}", 0, 1) for i in range(8)]
    entries.append((0x1800, 0, "label", 1, 1))
    table = ElfSymbols(list(entries))
    for address in [0xFFF, *range(0x1000, 0x1900, 0x24)]:
        assert table.lookup(address) == _brute(entries, address)
    assert table.lookup(0x1008) == (0x1000, 0x100, "f0")
    assert table.lookup(0x1810) == (0x1800, 0, "label")
