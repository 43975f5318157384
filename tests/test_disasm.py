"""Display disassembly: capstone plus the prefixed-instruction fallback, against objdump.

For every assembled stub the mnemonic shown for each word (or prefixed pair) must
be objdump's (binutils 2.40, ``-M power10``), both byte orders.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from asmutil import Assembled, assemble, objdump_mnemonics

from klpinspect.ppc64 import insn
from klpinspect.ppc64.disasm import annotate_stub, disassemble, disassemble_word
from klpinspect.ppc64.stubs import OOL_STUB_SIZE, StubKind, decode_ool_stub, decode_stub

ADDR = 0xC008000001A70100
TV1 = {"STUB": ADDR, "TOC": 0xC008000001A88000, "TARGET": 0xC000000000AB1230}
SOURCES: list[tuple[str, Mapping[str, int]]] = [
    ("stub_normal.s", TV1),
    ("stub_legacy_mcount.s", TV1),
    ("stub_normal_elfv1.s", {**TV1, "FTOC": 0xC000000001C0B100}),
    ("stub_legacy_elfv1_lwa.s", {**TV1, "FTOC": 0xC000000001C0B100}),
    ("stub_legacy_r12.s", {**TV1, "FTOC": 0xC000000001C0B100}),
    ("stub_legacy_2016_normal.s", TV1),
    ("stub_ftrace.s", {"KTOC": 0xC000000001C0B100, "TARGET": 0xC000000000089B00, "PACATOC": 16}),
    ("stub_legacy_2016_profiling.s",
     {"KTOC": 0xC000000001C0B100, "TARGET": 0xC000000000089B00, "PACATOC": 16}),
    ("stub_pcrel.s", {"TARGET": 0xC000000000AB1230}),
    ("stub_pcrel_ftrace.s", {"KBASE": 0xC000000000000000, "TARGET": 0xC000000000089B00,
                             "PACAKB": 16}),
    ("tramp_pcrel.s", {"REL": 0x1234560}),
]


def _ours(lines: list[str], base: int) -> dict[int, str]:
    """Offset -> mnemonic of ``disassemble()`` lines ``0x…: xxxxxxxx [yyyyyyyy]  text``."""
    out = {}
    for line in lines:
        head, text = line.split("  ", 1)
        out[int(head.split(":")[0], 16) - base] = text.split()[0]
    return out


@pytest.mark.parametrize("order", ["little", "big"])
@pytest.mark.parametrize(("source", "syms"), SOURCES, ids=[s for s, _ in SOURCES])
def test_mnemonics_match_objdump(source: str, syms: Mapping[str, int], order: str) -> None:
    asm = assemble(source, byteorder=order, defsyms=syms)
    theirs = objdump_mnemonics(asm)
    ours = _ours(disassemble(asm.text, ADDR, byteorder=order), ADDR)
    assert ours == theirs


def test_prefixed_by_fallback() -> None:
    """capstone 5 cannot decode pld/paddi/pla: the fallback does, operands included."""
    pcrel = assemble("stub_pcrel.s", defsyms={"TARGET": 0xC000000000AB1230}).text
    assert disassemble_word(insn.words(pcrel)[0], ADDR) == ".long 0x04100000"
    lines = disassemble(pcrel, ADDR)
    assert lines[0] == f"{ADDR:#x}: 04100000 e5800020  pld r12, 0x20(r0), 1 # {ADDR + 32:#x}"
    tv5 = assemble("stub_pcrel_ftrace.s", defsyms={"KBASE": 0xC000000000000000,
                                                   "TARGET": 0xC000000000089B00, "PACAKB": 16})
    assert disassemble(tv5.text, ADDR)[2].endswith("paddi r12, r12, 0x89b00, 0")
    tv9 = assemble("tramp_pcrel.s", defsyms={"REL": 0x1234560})
    # objdump: pla r12,19088736 (pc-relative: the target is the pla's address + REL)
    assert disassemble(tv9.text, ADDR)[0].endswith(f"pla r12, 0x1234560 # {ADDR + 0x1234560:#x}")


def _normal(order: str = "little") -> Assembled:
    return assemble("stub_normal.s", byteorder=order, defsyms=TV1)


@pytest.mark.parametrize("order", ["little", "big"])
def test_annotate_normal(order: str) -> None:
    stub = decode_stub(_normal(order).text, ADDR, byteorder=order)
    lines = annotate_stub(stub, byteorder=order)
    text = "\n".join(lines)
    assert "andi." not in text  # the magic is data, never code
    assert lines[7] == f"{ADDR + 28:#x}: 73747562  .long 0x73747562  # magic: STUB_MAGIC"
    assert lines[8] == f"{ADDR + 32:#x}: funcdata = {TV1['TARGET']:#x}"
    assert lines[-1] == f"# normal -> {TV1['TARGET']:#x}, implied TOC {TV1['TOC']:#x}"
    assert _ours(lines[:7], ADDR) == {
        k: v for k, v in objdump_mnemonics(_normal(order)).items() if k < 28
    }
    assert lines[0].endswith("addis r11, r2, -1")  # capstone style (facts §11)
    assert lines[1].endswith("addi r11, r11, -0x7f00")


def test_annotate_bad_magic_and_unknown() -> None:
    data = bytearray(_normal().text)
    data[28:32] = b"\0\0\0\0"
    stub = decode_stub(bytes(data), ADDR)
    assert "# magic: not STUB_MAGIC" in annotate_stub(stub)[7]
    garbage = decode_stub(b"\xff" * 40, ADDR)
    lines = annotate_stub(garbage)
    assert lines[-1] == "# unknown"
    assert len(lines) == 7 + 1 + 1 + 1  # 7 words, magic, funcdata, summary
    short = decode_stub(b"\x01\x02\x03", ADDR)
    assert annotate_stub(short) == ["# unknown"]


def test_annotate_ool() -> None:
    syms = {"BASE": 0xC008000001A60000, "TOC": 0xC008000001A88000, "KTOC": 0xC000000001C0B100,
            "PACATOC": 16, "FC": 0xC000000000089B00, "FRC": 0xC000000000089C00,
            "CALLEE": 0xC000000000AB1230, "OP0": 0xC000000002000000, "OP1": 0, "OP2": 0}
    text = assemble("ool.s", defsyms=syms).text
    ool = 0xC008000001A70050
    stub = decode_ool_stub(text[0x10050 : 0x10050 + OOL_STUB_SIZE], ool)
    assert stub.kind is StubKind.OOL_FTRACE
    lines = annotate_stub(stub)
    assert lines[0] == f"{ool:#x}: ftrace_op = 0xc000000002000000"
    # facts TV6: bl 0xc008000001a70000 (tramp), b 0xc008000001a6040c (ip + 4)
    assert lines[1].endswith("mflr r0")
    assert lines[2] == f"{ool + 12:#x}: 4bffffa5  bl 0xc008000001a70000"
    assert lines[3].endswith("mtlr r0")
    assert lines[4] == f"{ool + 20:#x}: 4bff03a8  b 0xc008000001a6040c"
    assert lines[-1] == "# ool-ftrace -> 0xc008000001a70000"
