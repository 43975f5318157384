"""klpinspect.arm32: the decoder and the prologue classes, on assembled and compiled code.

Every encoding comes from binutils/GCC at test time (tests/arm32util.py); the
expectations below are what each source function was written (or compiled) to be.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from arm32util import assemble, compile_c, link, objdump

from klpinspect.arm32 import (
    Deviation,
    FilePrologues,
    FunctionPrologue,
    PrologueClass,
    classify_arm,
    lint_prologues,
)
from klpinspect.arm32.insn import (
    FP,
    IP,
    LR,
    PC,
    SP,
    DpOp,
    Kind,
    decode_arm,
    expand_imm,
    format_reglist,
)

VECTORS = "arm32_prologues.s"

A = PrologueClass.APCS_FRAME
X = PrologueClass.APCS_FRAME_EXTRA
U = PrologueClass.UNWIND_TABLES
T = PrologueClass.THUMB2
N = PrologueClass.NO_MCOUNT

# name -> (class, register list, locals, deviation, text in the offender)
EXPECTED: dict[str, tuple[PrologueClass, str | None, int | None, Deviation | None, str]] = {
    "apcs_plain": (A, "{fp, ip, lr, pc}", None, None, ""),
    "apcs_locals": (A, "{r4-r9, sl, fp, ip, lr, pc}", 100, None, ""),
    "apcs_rotated": (A, "{r4, fp, ip, lr, pc}", 0x10400, None, ""),
    "extra_arg_spill": (X, "{fp, ip, lr, pc}", None, Deviation.ARG_SPILL, "push {r0, r1, r2, r3}"),
    "extra_args_area": (X, "{r4-r9, sl, fp, ip, lr, pc}", 12, Deviation.ARGS_AREA,
                        "sub sp, sp, #8"),
    "extra_arg_store": (X, "{fp, ip, lr, pc}", 8, Deviation.ARG_SPILL, "str r1"),
    "extra_vpush": (X, "{r4, fp, ip, lr, pc}", None, Deviation.VPUSH, "vpush {d8, d9}"),
    "extra_realign": (X, "{fp, ip, lr, pc}", None, Deviation.STACK_REALIGN, "bic sp, sp, #7"),
    "extra_sub_sp_reg": (X, "{r4, fp, ip, lr, pc}", None, Deviation.SUB_SP_REG, "sub sp, sp, r4"),
    "extra_sub_twice": (X, "{fp, ip, lr, pc}", 69632 + 368, Deviation.SUB_SP_AGAIN, "#0x170"),
    "extra_conditional": (X, "{fp, ip, lr, pc}", None, Deviation.CONDITIONAL, "subne sp"),
    "extra_no_push_lr": (X, "{fp, ip, lr, pc}", None, Deviation.NO_PUSH_LR, "bl __gnu_mcount_nc"),
    "unwind_push": (U, None, None, None, ""),
    "unwind_first": (U, None, None, None, ""),
    "unwind_aapcs_fp": (U, None, None, None, ""),
    "notrace_frame": (N, None, None, None, ""),
    "notrace_leaf": (N, None, None, None, ""),
    "thumb_traced": (T, None, None, None, ""),
    "thumb_notrace": (N, None, None, None, ""),
}
ALIASES = {"apcs_alias", "apcs_aliased"}


@pytest.fixture(scope="module")
def relocatable() -> FilePrologues:
    return lint_prologues(str(assemble(VECTORS)))


@pytest.fixture(scope="module")
def linked() -> FilePrologues:
    return lint_prologues(str(link([assemble(VECTORS, defsyms=["LINKED=1"])])))


def _by_name(result: FilePrologues) -> dict[str, FunctionPrologue]:
    return {f.name: f for f in result.functions}


@pytest.mark.parametrize("kind", ["relocatable", "linked"])
def test_every_vector_class(kind: str, request: pytest.FixtureRequest) -> None:
    result: FilePrologues = request.getfixturevalue(kind)
    funcs = _by_name(result)
    assert result.linked is (kind == "linked")
    for name, (cls, regs, locals_, dev, text) in EXPECTED.items():
        f = funcs[name]
        assert f.cls is cls, (name, f.cls, f.reason)
        if regs is not None:
            assert format_reglist(f.regs) == regs, name
        assert f.locals == locals_, (name, f.locals)
        assert f.deviation is dev, (name, f.reason)
        if text:
            assert f.offender is not None and text in f.offender.text, (name, f.offender)
            assert text in f.reason
        if cls is N:
            assert f.mcount_call is None
        else:
            assert f.mcount_call is not None and f.address < f.mcount_call < f.address + f.size
    # the alias pair is one function, and it has the frame shape (its literal
    # pool is data, not code)
    aliases = [f for f in result.functions if f.name in ALIASES]
    assert len(aliases) == 1 and aliases[0].cls is A
    # the symbol-less copy is counted, not classified
    assert result.orphan_calls == 1
    assert any("1 call(s) to __gnu_mcount_nc outside every function symbol" in n
               for n in result.notes)
    # every class occurs; nothing is left unclassified
    counts = result.counts
    assert all(counts[c] for c in PrologueClass)
    assert sum(counts.values()) == len(result.functions)
    assert result.traced == len(result.functions) - counts[N]


def test_linked_call_sites_match_objdump(linked: FilePrologues, tmp_path: Path) -> None:
    """The mcount call found by branch target is the one objdump names."""
    obj = link([assemble(VECTORS, defsyms=["LINKED=1"])])
    sites = set()
    for line in objdump(obj).splitlines():
        if "<__gnu_mcount_nc>" in line and "\tbl" in line:
            sites.add(int(line.split(":")[0], 16))
    found = {f.mcount_call for f in linked.functions if f.mcount_call is not None}
    assert found < sites and len(sites - found) == linked.orphan_calls == 1
    thumb = _by_name(linked)["thumb_traced"]
    assert thumb.thumb and "push {r4, r7, lr}" in thumb.reason


def test_relocatable_call_sites_are_relocations(relocatable: FilePrologues) -> None:
    obj = assemble(VECTORS)
    relocs = set()
    for line in objdump(obj).splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2] == "__gnu_mcount_nc" and parts[1].startswith("R_ARM_"):
            relocs.add(int(parts[0].rstrip(":"), 16))
    found = {f.mcount_call for f in relocatable.functions if f.mcount_call is not None}
    assert found < relocs and len(relocs - found) == relocatable.orphan_calls == 1
    assert len(found) == sum(1 for f in relocatable.functions if f.cls is not N)


def test_unwind_tables_reason_shows_the_prologue(relocatable: FilePrologues) -> None:
    funcs = _by_name(relocatable)
    assert funcs["unwind_push"].reason == "no APCS frame: push {r4, r5, lr}; sub sp, sp, #0x3c"
    assert funcs["unwind_first"].reason == "no APCS frame: nothing saved before the call"
    assert "add fp, sp, #4" in funcs["unwind_aapcs_fp"].reason


def test_compiled_shapes() -> None:
    """GCC's own shapes with the kernel's frame-pointer + ftrace flags."""
    result = lint_prologues(str(compile_c("shapes.c")))
    funcs = _by_name(result)
    assert funcs["plain"].cls is A and funcs["plain"].locals is None
    assert funcs["with_locals"].cls is A and funcs["with_locals"].locals is not None
    assert funcs["with_locals"].locals >= 100
    assert funcs["variadic"].deviation is Deviation.ARG_SPILL
    assert funcs["huge"].deviation is Deviation.SUB_SP_AGAIN
    assert funcs["huge"].locals is not None and funcs["huge"].locals >= 70000
    assert funcs["fpmul"].deviation is Deviation.VPUSH
    assert funcs["split_arg"].deviation is Deviation.ARGS_AREA
    assert funcs["split_arg"].offender is not None
    assert funcs["split_arg"].offender.address == funcs["split_arg"].address + 4
    assert funcs["notrace_fn"].cls is N


def test_compiled_without_frame_pointer_is_unwind_tables() -> None:
    """The Debian (CONFIG_ARM_UNWIND) flags: no APCS frame anywhere."""
    result = lint_prologues(str(compile_c(
        "shapes.c", ["-marm", "-pg", "-O2", "-funwind-tables"])))
    classes = {f.name: f.cls for f in result.functions}
    assert classes["notrace_fn"] is N
    assert {c for n, c in classes.items() if n != "notrace_fn"} == {U}


def test_compiled_thumb2() -> None:
    result = lint_prologues(str(compile_c("shapes.c", ["-mthumb", "-pg", "-O2"])))
    classes = {f.name: f.cls for f in result.functions}
    assert classes["notrace_fn"] is N
    assert {c for n, c in classes.items() if n != "notrace_fn"} == {T}
    assert all(f.thumb for f in result.functions)


# -- the decoder on assembled words -------------------------------------------------------

def _words(asm: Path, name: str) -> list[int]:
    """The words of function ``name`` up to its mcount call, read from objdump."""
    words: list[int] = []
    inside = False
    for line in objdump(asm).splitlines():
        if line.endswith(f"<{name}>:"):
            inside = True
            continue
        if inside:
            parts = line.split("\t")
            if len(parts) < 3:
                if not line.strip():
                    break
                continue
            if "__gnu_mcount_nc" in line and parts[2].startswith("bl"):
                return words
            words.append(int(parts[1].strip(), 16))
    raise AssertionError(f"{name}: no mcount call")


def test_classify_arm_words() -> None:
    obj = assemble(VECTORS)
    v = classify_arm(_words(obj, "apcs_locals"))
    assert v.cls is A and v.regs == (4, 5, 6, 7, 8, 9, 10, FP, IP, LR, PC) and v.locals == 100
    v = classify_arm(_words(obj, "extra_vpush"))
    assert v.cls is X and v.deviation is Deviation.VPUSH and v.offender_index == 3
    assert classify_arm(_words(obj, "unwind_push")).cls is U
    assert classify_arm([]).cls is U


def test_decode_fields() -> None:
    obj = assemble(VECTORS)
    w = _words(obj, "apcs_rotated")
    mov, push, subfp, subsp, pushlr = (decode_arm(x) for x in w)
    assert mov.is_mov_reg(IP, SP)
    assert push.is_push and push.regs == (4, FP, IP, LR, PC)
    assert subfp.is_dp_imm(DpOp.SUB, FP, IP) and subfp.imm == 4
    assert subsp.is_dp_imm(DpOp.SUB, SP, SP) and subsp.imm == 0x10400
    assert pushlr.is_push and pushlr.pushed == (LR,) and pushlr.kind is Kind.LDST_IMM
    vp = decode_arm(_words(obj, "extra_vpush")[3])
    assert vp.is_vpush and vp.vdouble and (vp.vfirst, vp.vcount) == (8, 2)
    cond = decode_arm(_words(obj, "extra_conditional")[3])
    assert cond.conditional and cond.is_dp_imm(DpOp.SUB, SP, SP)
    assert expand_imm(0x000) == 0 and expand_imm(0x0FF) == 0xFF


IMMS = [0, 1, 4, 100, 255, 0x3FC, 0x400, 0x1000, 0x10400, 0x11000, 0xFF000, 0xFF0000,
        0x3F000000, 0xFF000000, 0xC000003F, 0xF000000F, 0x80000001, 0x104, 0x2040, 0xFC000003]


def test_modified_immediates() -> None:
    """Every rotation of the modified immediate, from the assembler's own encodings."""
    obj = assemble("arm32_imm.s")
    words = [int(line.split("\t")[1].strip(), 16) for line in objdump(obj).splitlines()
             if "\tsub\t" in line]
    assert len(words) == len(IMMS)
    for word, value in zip(words, IMMS, strict=True):
        insn = decode_arm(word)
        assert insn.is_dp_imm(DpOp.SUB, SP, SP) and insn.imm == value, (hex(word), value)
        assert not insn.conditional and insn.writes(SP)


def test_format_reglist() -> None:
    assert format_reglist((4, 5, 6, 7, 8, 9, 10, FP, IP, LR, PC)) == "{r4-r9, sl, fp, ip, lr, pc}"
    assert format_reglist((4, 5, LR)) == "{r4, r5, lr}"


def test_compressed_modules(relocatable: FilePrologues, tmp_path: Path) -> None:
    """``.ko.xz``/``.ko.gz`` (CONFIG_MODULE_COMPRESS_*) read as the plain object."""
    import gzip
    import lzma

    raw = Path(relocatable.path).read_bytes()
    want = [(f.name, f.cls, f.reason) for f in relocatable.functions]
    for suffix, pack in ((".ko.xz", lzma.compress), (".ko.gz", gzip.compress)):
        path = tmp_path / f"vec{suffix}"
        path.write_bytes(pack(raw))
        got = lint_prologues(str(path))
        assert [(f.name, f.cls, f.reason) for f in got.functions] == want
        assert got.name == relocatable.name or got.name == "vec"
