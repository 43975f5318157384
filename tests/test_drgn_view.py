"""The drgn back end's layout-layer answers (backends/drgn/view.py DrgnKernel) on a
program built in the test: no dump needed, so the fallbacks each answer is tested.

``symbol_address`` is what the ftrace view's ``LayoutSource`` queries and the
layout layer share: the ELF symbol, else a debug-info variable (as the gdb back
end's ``&'name'`` fallback); an enumerator or an unknown name is ``None``.
Type queries answer ``None`` for a name drgn cannot parse, not an exception.
"""

from __future__ import annotations

import drgn
from drgn import Object

from klpinspect.backends.drgn.view import DrgnKernel

VAR = 0xC000000001234560  # a variable only the debug info names
SYM = 0xC000000000001000  # an ELF symbol


def _kernel() -> DrgnKernel:
    prog = drgn.Program(
        drgn.Platform(
            drgn.Architecture.PPC64,
            drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN,
        )
    )
    int_type = prog.int_type("int", 4, True)

    def objects(
        prog: drgn.Program, name: str, flags: drgn.FindObjectFlags, filename: str | None
    ) -> Object | None:
        if name == "klp_ops" and flags & drgn.FindObjectFlags.VARIABLE:
            return Object(prog, int_type, address=VAR)
        if name == "MOD_TEXT" and flags & drgn.FindObjectFlags.CONSTANT:
            return Object(prog, int_type, value=3)
        return None

    prog.register_object_finder("test", objects, enable_index=0)
    symbol = drgn.Symbol("modules", SYM, 16, drgn.SymbolBinding.GLOBAL, drgn.SymbolKind.OBJECT)
    prog.register_symbol_finder("test", drgn.SymbolIndex([symbol]), enable_index=0)
    return DrgnKernel(prog)


def test_symbol_address_falls_back_to_a_variable() -> None:
    k = _kernel()
    assert k.symbol_address("modules") == SYM
    assert k.symbol_address("klp_ops") == VAR
    assert k.symbol_address("MOD_TEXT") is None  # a constant has no address
    assert k.symbol_address("nothing") is None


def test_type_queries_answer_none() -> None:
    k = _kernel()
    assert k.constant("MOD_TEXT") == 3
    assert k.constant("nothing") is None
    for name in ("struct nosuch", "struct ("):  # unknown; unparseable
        assert k.type_size(name) is None
        assert k.offsetof(name, "a") is None
