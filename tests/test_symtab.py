"""``klpinspect.symtab``: the lazy ways give the answers of the indexed table.

A table read from a file answers :meth:`ElfSymbols.size_to_next` from the raw
``Elf64_Sym`` words before it is parsed (what a backtrace asks), and
:meth:`ElfSymbols.address_of` without the name index for the first names; the
indexed table (checked against drgn in ``test_gdb.py``) is the reference.
Both fixtures' real debug vmlinux files.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from conftest import LP61, LpFixture
from elftools.elf.elffile import ELFFile

from klpinspect.symtab import (
    elf_symbol_value,
    parse_elf_columns_within,
    parse_elf_symbols,
    read_elf_symbols,
)

pytestmark = pytest.mark.dump


def test_raw_size_to_next_is_the_indexed_one(lp: LpFixture) -> None:
    path = str(lp.vmlinux_debug)
    indexed = read_elf_symbols(path)
    assert indexed.lookup(0) is None  # builds the index
    starts = sorted(set(indexed._starts))
    sizeless = [indexed._starts[k] for k in indexed._sizeless]
    assert len(starts) > 20000 and sizeless
    # symbol starts, size-0 labels, addresses in between, below and above everything
    addresses = [*starts[::997], *sizeless[::31], *(s + 4 for s in starts[::1999]),
                 0, max(starts[0] - 8, 0), starts[-1], starts[-1] + 8]
    for address in addresses:
        fresh = read_elf_symbols(path)
        assert fresh._raw is not None
        got = fresh.size_to_next(address)
        assert fresh._raw is not None and not fresh._indexed  # answered unparsed
        assert got == indexed.size_to_next(address), hex(address)
    assert any(indexed.size_to_next(a) for a in addresses)


def test_names_without_the_index_are_the_indexed_ones(lp: LpFixture) -> None:
    path = str(lp.vmlinux_debug)
    names = ["ftrace_caller", "livepatch_handler", "_stext", "_end", "init_uts_ns",
             "modules", "schedule", "kfree", "no_such_symbol_anywhere"]
    few = read_elf_symbols(path)
    got = [few.address_of(n) for n in names]
    assert few._by_name is None  # the name index was not built
    full = read_elf_symbols(path)
    for i in range(70):  # past the few names: the index
        full.address_of(f"no_such_symbol_{i}")
    assert full._by_name is not None
    assert got == [full.address_of(n) for n in names]
    assert got[-1] is None and all(a is not None for a in got[:-1])
    # a function's address names the function
    for name in ("schedule", "kfree"):
        hit = full.lookup(got[names.index(name)] or 0)
        assert hit is not None and hit[2] == name


def test_elf_symbol_value_is_the_indexed_one(lp: LpFixture) -> None:
    """One name's value without parsing the table: every name the table has
    once (a sample), tail-merged names (``vmcoreinfo_note`` is the end of
    ``paddr_vmcoreinfo_note`` in ``.strtab``), absent names."""
    path = str(lp.vmlinux_debug)
    full = read_elf_symbols(path)
    for i in range(70):
        full.address_of(f"no_such_symbol_{i}")
    by_name = full._by_name
    assert by_name is not None
    rows: dict[str, int] = {}
    for name in full._names:  # type: ignore[attr-defined]
        key = full._name(name)
        rows[key] = rows.get(key, 0) + 1
    unique = sorted(n for n, k in rows.items() if k == 1 and n)
    assert len(unique) > 10000
    for name in [*unique[::211], "vmcoreinfo_note", "vmcoreinfo_data", "ftrace_caller"]:
        assert elf_symbol_value(path, name) == by_name[name], name
    strtab = open(path, "rb").read()
    assert b"_vmcoreinfo_note\0" in strtab and b"\0vmcoreinfo_note\0" not in strtab
    assert elf_symbol_value(path, "no_such_symbol_anywhere") is None
    assert elf_symbol_value(path, "vmcoreinfo_not") is None  # a prefix is not a name


def test_elf_symbol_value_skips_undefined_and_bad_files(lp: LpFixture, tmp_path: Path) -> None:
    ko = next(iter(sorted(lp.modules.glob("*.ko"))))
    with open(ko, "rb") as f:
        symtab = ELFFile(f).get_section_by_name(".symtab")
        undefined = [s.name for s in symtab.iter_symbols()
                     if s["st_shndx"] == "SHN_UNDEF" and s.name]
    assert undefined, ko
    assert b"\0" + undefined[0].encode() + b"\0" in ko.read_bytes()
    assert elf_symbol_value(str(ko), undefined[0]) is None  # a reference only
    junk = tmp_path / "junk"
    junk.write_bytes(b"not ELF")
    assert elf_symbol_value(str(junk), "x") is None
    assert elf_symbol_value(str(tmp_path / "absent"), "x") is None


def test_prefetched_names_are_the_indexed_ones(lp: LpFixture) -> None:
    """:meth:`ElfSymbols.prefetch_names` (one pass over the reversed ``.strtab``)
    answers as the name index: names at a string's start, names that are the
    tail of a longer one (the linker merges those: ``st_name`` points inside
    it), a name ending another asked one, regex characters, absent names."""
    path = str(lp.vmlinux_debug)
    full = read_elf_symbols(path)
    full.lookup(0)
    strtab = full._strtab
    assert strtab is not None
    offsets = list(full._names)
    tails = [o for o in offsets[::7] if o and strtab[o - 1] != 0]
    assert tails  # the fixture's linker merged some
    tail_names = [full._name(o) for o in tails[:10]]
    names = [*tail_names, "ftrace_caller", "_end", "ftrace_list_end", ".TOC.", "modules",
             "init_task", "_stext", "no_such_symbol_anywhere", "a.b*c"]
    few = read_elf_symbols(path)
    few.prefetch_names(names)
    assert few._by_name is None and len(few._found) >= len(names) - 2  # _end: alone
    got = [few.address_of(n) for n in names]
    assert few._by_name is None
    for i in range(70):  # past the few names: the index
        full.address_of(f"no_such_symbol_{i}")
    assert full._by_name is not None
    assert got == [full.address_of(n) for n in names]
    assert got[-1] is None and got[-2] is None and all(a is not None for a in got[:5])
    # and whether each name is in .strtab at all (gdb's look-up of a miss is skipped)
    assert [few.in_strtab(n) for n in names] == [
        n.encode() + b"\0" in strtab for n in names]
    assert few._nowhere >= {"no_such_symbol_anywhere", "a.b*c"}


def _module_symtabs() -> list[tuple[str, bytes, bytes]]:
    """``(name, .symtab, .strtab)`` of the 6.1 fixture's module files."""
    from elftools.elf.elffile import ELFFile

    out = []
    for path in sorted((LP61 / "modules").glob("*.ko"))[:12]:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            symtab, strtab = elf.get_section_by_name(".symtab"), elf.get_section_by_name(".strtab")
            out.append((path.name, symtab.data(), strtab.data()))
    return out


def _big_endian(symtab: bytes) -> bytes:
    """The same Elf64_Sym records as a big-endian file has them (field by field)."""
    little, big = struct.Struct("<IBBHQQ"), struct.Struct(">IBBHQQ")
    return b"".join(big.pack(*rec) for rec in little.iter_unpack(symtab))


@pytest.mark.parametrize("order", ["little", "big"])
def test_columns_within_spans_are_the_filtered_parse(order: str) -> None:
    """A module's kallsyms table (layout.module_kallsyms): parse_elf_columns_within is
    parse_elf_symbols filtered to the spans, bindings LOCAL, names as offsets."""
    tables = _module_symtabs()
    assert len(tables) >= 5
    for name, symtab, _strtab in tables:
        if order == "big":
            symtab = _big_endian(symtab)
        entries = parse_elf_symbols(symtab, b"", order, lazy_names=True)
        values = sorted({e[0] for e in entries})
        assert len(values) > 4, name
        cuts = values[:: max(1, len(values) // 5)]
        for spans in ([(0, 1 << 64)], [(cuts[0], cuts[1]), (cuts[2], cuts[3] + 1)],
                      [(cuts[1], cuts[1])], [(values[-1], values[-1] + 1)]):
            starts, ends = [s for s, _e in spans], [e for _s, e in spans]
            want = [e for e in entries if any(s <= e[0] < end for s, end in spans)]
            got = parse_elf_columns_within(symtab, order, starts, ends)
            assert [list(col) for col in got] == [
                [e[0] for e in want], [e[1] for e in want], [e[2] for e in want],
                [0] * len(want), [e[4] for e in want]], (name, spans)
        assert 0 < len(parse_elf_columns_within(symtab, order, [0], [1 << 64])[0])


@pytest.mark.parametrize("order", ["little", "big"])
def test_columns_within_skip_section_file_tls(order: str) -> None:
    """Named, non-zero section/file/TLS symbols (real records, st_info changed) are left
    out as by parse_elf_symbols; the same records as functions are kept."""
    _name, symtab, _strtab = _module_symtabs()[0]
    rec = struct.Struct("<IBBHQQ")
    named = [r for r in rec.iter_unpack(symtab) if r[0] and r[3] and r[4]][:3]
    assert len(named) == 3
    for kind, kept in ((3, False), (4, False), (6, False), (2, True)):  # SECTION FILE TLS FUNC
        table = b"".join(rec.pack(r[0], (1 << 4) | kind, *r[2:]) for r in named)
        if order == "big":
            table = _big_endian(table)
        got = parse_elf_columns_within(table, order, [0], [1 << 64])
        assert len(got[0]) == (3 if kept else 0) == len(parse_elf_symbols(table, b"", order,
                                                                           lazy_names=True))
