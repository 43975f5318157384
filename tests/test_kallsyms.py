"""klpinspect's lazy vmlinux kallsyms (klpinspect/kallsyms.py and
klpinspect/backends/drgn/kallsyms.py) against drgn's own loader, on the
fixture dumps: every symbol, name and address gives the same answer."""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator

import drgn
import pytest
from conftest import LpFixture

from klpinspect.backends.drgn import kallsyms as lazy
from klpinspect.backends.drgn.btf_finder import (
    _KALLSYMS_TABLES,
    KallsymsSymbols,
    kallsyms_symtab,
    load_vmlinux_kallsyms,
)
from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.kallsyms import KallsymsError, KallsymsTable, binding_kind

pytestmark = pytest.mark.dump

Row = tuple[str, int, int, drgn.SymbolBinding, drgn.SymbolKind]


def _row(sym: drgn.Symbol) -> Row:
    return (sym.name, sym.address, sym.size, sym.binding, sym.kind)


def _drgn_index(prog: drgn.Program) -> object:
    """drgn's own C loader, as btf_finder calls it."""
    from _drgn import _linux_helper_load_builtin_kallsyms

    text = prog["VMCOREINFO"].string_().decode()
    found = {m.group(1): int(m.group(2), 16) for m in re.finditer(r"SYMBOL\((\w+)\)=(\w+)", text)}
    return _linux_helper_load_builtin_kallsyms(prog, *(found.get(n, 0) for n in _KALLSYMS_TABLES))


@pytest.fixture(scope="module")
def both(lp: LpFixture) -> Iterator[tuple[drgn.Program, object, lazy.VmlinuxKallsyms]]:
    prog = drgn.Program()
    prog.set_core_dump(str(lp.vmcore_elf))
    ours = lazy.load(prog)
    assert ours is not None  # both fixtures have kallsyms_seqs_of_names
    yield prog, _drgn_index(prog), ours


def test_every_symbol_identical(both: tuple[drgn.Program, object, lazy.VmlinuxKallsyms]) -> None:
    prog, ref, ours = both
    theirs = [_row(s) for s in ref(prog, None, None, False)]  # type: ignore[operator]
    assert len(theirs) > 40000
    # one by one (look-ups), decoded in whole blocks (a listing without
    # drgn's loader), and the listing (from drgn's loader's index)
    assert [_row(ours.symbol(i)) for i in range(len(theirs))] == theirs
    python_only = lazy.VmlinuxKallsyms(ours.table)
    assert [_row(s) for s in python_only(prog, None, None, False)] == theirs
    assert [_row(s) for s in ours(prog, None, None, False)] == theirs
    assert [_row(s) for s in ours(prog, None, None, True)] == theirs[:1]
    # a symbol of each binding drgn gives kallsyms, and sizes 0 (aliases, the last)
    assert {r[3] for r in theirs} >= {drgn.SymbolBinding.GLOBAL, drgn.SymbolBinding.UNKNOWN}
    assert sum(1 for r in theirs if r[2] == 0) > 100


def test_names_identical(both: tuple[drgn.Program, object, lazy.VmlinuxKallsyms]) -> None:
    """Every name that several symbols share (in drgn's order), a sample of
    the others, and names kallsyms does not have."""
    prog, ref, ours = both
    counts = Counter(s.name for s in ref(prog, None, None, False))  # type: ignore[operator]
    shared = [n for n, c in counts.items() if c > 1]
    assert len(shared) > 100
    names = shared + random.Random(16).sample(sorted(counts), 2000)
    names += ["_stext", "", "~", "\x7f", "nope_not_a_kernel_symbol", "a", "zzzz"]
    for name in names:
        for one in (False, True):
            want = [_row(s) for s in ref(prog, name, None, one)]  # type: ignore[operator]
            assert [_row(s) for s in ours(prog, name, None, one)] == want, name


def test_addresses_identical(both: tuple[drgn.Program, object, lazy.VmlinuxKallsyms]) -> None:
    """Addresses at, around and between symbols, aliases, gaps over 64 KiB
    (no symbol), the ends; also the look-ups by address and name, and
    KallsymsSymbols' alias ranking (target.py's vmlinux names)."""
    prog, ref, ours = both
    syms = ref(prog, None, None, False)  # type: ignore[operator]
    starts = [s.address for s in syms]
    probes = {0, 1, starts[0] - 1, starts[-1], starts[-1] + 1, (1 << 64) - 1}
    for a in random.Random(16).sample(starts, 3000):
        probes.update((a - 1, a, a + 1, a + 2))
    old, new = KallsymsSymbols(prog, ref), lazy.symtab_of(prog, ours)
    assert new is not None
    hits = 0
    for a in sorted(probes):
        want = [_row(s) for s in ref(prog, None, a, True)]  # type: ignore[operator]
        assert [_row(s) for s in ours(prog, None, a, True)] == want, hex(a)
        assert [_row(s) for s in ours(prog, None, a, False)] == want, hex(a)
        if want:
            hits += 1
            name = want[0][0]
            assert [_row(s) for s in ours(prog, name, a, True)] == want
            assert ours(prog, name + "x", a, True) == []
        assert new.lookup(a) == old.lookup(a), hex(a)
        assert new.size_to_next(a) == old.size_to_next(a), hex(a)
    assert hits > 5000


def test_used_by_btf_path(lp: LpFixture) -> None:
    """The BTF path (no -s) registers the lazy finder; drgn's Program.symbol
    and helpers answer through it; module addresses skip it."""
    prog, kind = open_program(core=str(lp.vmcore_elf), symbols=[])
    index = load_vmlinux_kallsyms(prog)
    assert isinstance(index, lazy.VmlinuxKallsyms)
    assert isinstance(kallsyms_symtab(prog), lazy.LazyKallsymsSymbols)
    assert "klpinspect_vmlinux_kallsyms" in prog.registered_symbol_finders()
    schedule = prog.symbol("schedule")
    assert schedule.size > 4 and schedule.kind == drgn.SymbolKind.FUNC
    assert prog.symbol(schedule.address + 4) == schedule
    assert lazy.module_addresses_unnamed(prog)
    target = DrgnTarget(prog, kind)
    with_dwarf, _ = open_program(core=str(lp.vmcore_elf), symbols=[str(lp.vmlinux_debug)])
    assert not lazy.module_addresses_unnamed(with_dwarf)
    assert target.debuginfo == "btf+kallsyms"


def test_binding_kind_letters() -> None:
    """libdrgn's symbol_from_kallsyms() rules, letter by letter."""
    assert binding_kind("T") == ("GLOBAL", "FUNC")
    assert binding_kind("t") == ("UNKNOWN", "FUNC")
    assert binding_kind("u") == ("UNIQUE", "UNKNOWN")
    assert binding_kind("U") == ("GLOBAL", "UNKNOWN")
    assert binding_kind("W") == ("WEAK", "UNKNOWN")
    assert binding_kind("v") == ("WEAK", "OBJECT")
    for letter in "bcdgr":
        assert binding_kind(letter) == ("UNKNOWN", "OBJECT")
        assert binding_kind(letter.upper()) == ("GLOBAL", "OBJECT")
    assert binding_kind("A") == ("GLOBAL", "UNKNOWN")


def test_damaged_tables_are_refused(lp: LpFixture) -> None:
    """Markers one word off, a name index that is not sorted, short tables."""
    prog = drgn.Program()
    prog.set_core_dump(str(lp.vmcore_elf))
    ours = lazy.load(prog)
    assert ours is not None
    t = ours.table
    region = t._names
    markers = list(t._markers)
    n = t.num_syms
    start = region.find(
        b"".join(m.to_bytes(4, "little") for m in markers[:4])
    )  # where load() found them
    assert start > 0
    aligns = [a for a in (8, 4) if lazy._markers_at(region, start, n, a, t._long, True) == markers]
    assert aligns  # 6.1: .balign 8; 7.2: .balign 4
    for off in (-8, -4, 4, 8):
        assert lazy._markers_at(region, start + off, n, aligns[0], t._long, True) is None
    assert t._seqs is not None
    shuffled = bytearray(t._seqs)
    shuffled[: 3 * 64], shuffled[3 * (n // 2) : 3 * (n // 2 + 64)] = (
        shuffled[3 * (n // 2) : 3 * (n // 2 + 64)],
        shuffled[: 3 * 64],
    )
    bad = KallsymsTable(
        num_syms=n,
        names=region,
        markers=markers,
        tokens=t._tokens,
        long_names=t._long,
        values=t._values,
        encoding=t._encoding,
        base=t._base,
        seqs=bytes(shuffled),
    )
    assert not bad.check_name_order()
    with pytest.raises(KallsymsError):
        KallsymsTable(
            num_syms=n,
            names=region,
            markers=markers[:-1],
            tokens=t._tokens,
            long_names=t._long,
            values=t._values,
            encoding=t._encoding,
            base=t._base,
            seqs=t._seqs,
        )
