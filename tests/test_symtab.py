"""``klpinspect.symtab``: the lazy ways give the answers of the indexed table.

A table read from a file answers :meth:`ElfSymbols.size_to_next` from the raw
``Elf64_Sym`` words before it is parsed (what a backtrace asks), and
:meth:`ElfSymbols.address_of` without the name index for the first names; the
indexed table (checked against drgn in ``test_gdb.py``) is the reference.
Both fixtures' real debug vmlinux files.
"""

from __future__ import annotations

import pytest
from conftest import LpFixture

from klpinspect.symtab import read_elf_symbols

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
