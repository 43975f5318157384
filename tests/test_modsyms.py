"""klpinspect.backends.drgn.modsyms.module_symbols gives what drgn's module_kallsyms gives."""

from __future__ import annotations

import drgn
import pytest
from conftest import FIXTURES
from drgn.helpers.linux.kallsyms import module_kallsyms
from drgn.helpers.linux.module import for_each_module, module_address_regions
from test_btf_dump import _core

from klpinspect.backends.drgn.modsyms import module_symbols
from klpinspect.backends.drgn.program import open_program

pytestmark = pytest.mark.dump


def _key(sym: drgn.Symbol) -> tuple[object, ...]:
    return (sym.name, sym.address, sym.size, sym.binding, sym.kind)


@pytest.mark.parametrize("fixture", ["ppc64le-6.1-lp", "ppc64le-7.2-lp"])
@pytest.mark.parametrize("symbols", [False, True], ids=["btf", "dwarf"])
def test_same_symbols_as_drgn(fixture: str, symbols: bool) -> None:
    lp = FIXTURES / fixture
    prog, _ = open_program(
        core=str(_core(lp, "vmcore.elf.xz")),
        symbols=[str(lp / "vmlinux.debug")] if symbols else [],
    )
    total = outside = 0
    for mod in for_each_module(prog):
        ours = [_key(s) for s in module_symbols(mod)]
        assert ours == [_key(s) for s in module_kallsyms(mod)], mod.name.string_()
        total += len(ours)
        regions = [(s, s + n) for s, n in module_address_regions(mod) if s and n]
        within = [_key(s) for s in module_symbols(mod, regions)]
        assert within == [
            _key(s) for s in module_kallsyms(mod) if any(a <= s.address < b for a, b in regions)
        ]
        outside += len(ours) - len(within)
    assert total > 3000
    assert outside > 0  # livepatch modules' resolved klp symbols ('u'): the filter matters
