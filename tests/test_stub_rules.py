"""Each stub and trampoline rule alone, with the kernel-wide traits given.

Stubs are decoded from ``tests/asm/stub_normal.s`` and ``stub_ftrace.s``
assembled at test time; the module and kernel are plain dataclasses.
"""

from __future__ import annotations

from asmutil import assemble
from synthetic import SyntheticTarget

from klpinspect.checks.stub_rules import (
    KernelTraits,
    bad_magic,
    dangling_target,
    paca_offset,
    stub_findings,
    toc_mismatch,
    tramp_findings,
)
from klpinspect.checks.symbols import Symbolizer
from klpinspect.ppc64.stubs import Stub, StubKind, decode_stub
from klpinspect.report import FindingCode, Severity
from klpinspect.target import KernelInfo, ModuleInfo

STUB = 0xC008000001A70100
TOC = 0xC008000001A88000
TARGET = 0xC000000000AB1230
KTOC = 0xC000000001C0B100
FTRACE_CALLER = 0xC000000000089B00
KERNEL = KernelInfo(release="6.1.0-test", toc=KTOC, ftrace_caller=FTRACE_CALLER,
                    paca_toc_offset=16)
MOD = ModuleInfo(name="rk_lib")
LP = ModuleInfo(name="rk_lp", livepatch=True)


def normal(magic_ok: bool = True) -> Stub:
    data = bytearray(assemble("stub_normal.s", defsyms={"STUB": STUB, "TOC": TOC,
                                                        "TARGET": TARGET}).text)
    if not magic_ok:
        data[28:32] = bytes(4)
    stub = decode_stub(bytes(data), STUB)
    assert stub.kind is StubKind.NORMAL and stub.magic_ok is magic_ok
    return stub


def ftrace(pacatoc: int = 16) -> Stub:
    text = assemble("stub_ftrace.s", defsyms={"KTOC": KTOC, "TARGET": FTRACE_CALLER,
                                              "PACATOC": pacatoc}).text
    stub = decode_stub(text, STUB, kernel_toc=KTOC)
    assert stub.kind is StubKind.FTRACE and stub.target == FTRACE_CALLER
    return stub


def test_bad_magic_only_where_the_kernel_writes_it() -> None:
    assert bad_magic(MOD, normal(), KernelTraits()) is None
    assert bad_magic(MOD, normal(False), KernelTraits(writes_stub_magic=False)) is None
    found = bad_magic(MOD, normal(False), KernelTraits())
    assert found is not None and found.code is FindingCode.STUB_BAD_MAGIC
    assert found.level is Severity.WARNING


def test_toc_mismatch() -> None:
    assert toc_mismatch(MOD, normal(), TOC, ".toc") is None
    assert toc_mismatch(MOD, normal(), None, "none") is None
    found = toc_mismatch(MOD, normal(), TOC + 0x100, ".toc")
    assert found is not None and found.code is FindingCode.STUB_TOC_MISMATCH
    assert f"implies TOC {TOC:#x}" in found.message


def test_paca_offset() -> None:
    assert paca_offset(MOD, ftrace(16), KERNEL) is None
    found = paca_offset(MOD, ftrace(8), KERNEL)
    assert found is not None and found.code is FindingCode.FTRACE_STUB_PACA_OFFSET


def test_dangling_is_a_warning_in_a_livepatch_module() -> None:
    assert dangling_target(MOD, normal(), {TARGET}) is None
    error = dangling_target(MOD, normal(), set())
    warning = dangling_target(LP, normal(), set())
    assert error is not None and error.level is Severity.ERROR
    assert warning is not None and warning.level is Severity.WARNING


def test_stub_findings_in_rule_order() -> None:
    stubs = [normal(), normal(False), ftrace(8)]
    found = stub_findings(MOD, stubs, kernel=KERNEL, traits=KernelTraits(),
                          mod_toc=TOC + 0x100, toc_source=".toc", loaded=set())
    assert [(f.code, f.address) for f in found] == [
        (FindingCode.STUB_TOC_MISMATCH, STUB),
        (FindingCode.STUB_TARGET_DANGLING, STUB),
        (FindingCode.STUB_BAD_MAGIC, STUB),
        (FindingCode.STUB_TOC_MISMATCH, STUB),
        (FindingCode.STUB_TARGET_DANGLING, STUB),
        (FindingCode.FTRACE_STUB_PACA_OFFSET, STUB),
        (FindingCode.STUB_TARGET_DANGLING, STUB),
    ]
    assert stub_findings(MOD, stubs[:1], kernel=KERNEL, traits=KernelTraits(), mod_toc=TOC,
                         toc_source=".toc", loaded=None) == []


def test_r2_relative_tramp_only_on_paca_tramp_kernels() -> None:
    symbols = Symbolizer(SyntheticTarget(KERNEL))
    opts = {"want_name": "ftrace_caller", "want": TARGET, "symbols": symbols}
    assert tramp_findings(MOD, "tramp", normal(), traits=KernelTraits(paca_tramps=False),
                          **opts) == []  # type: ignore[arg-type]
    (found,) = tramp_findings(MOD, "tramp", normal(), traits=KernelTraits(),
                              **opts)  # type: ignore[arg-type]
    assert found.code is FindingCode.TRAMP_NOT_FTRACE_STUB and "r2-relative" in found.message
    found_all = tramp_findings(MOD, "tramp", ftrace(), traits=KernelTraits(),
                               **opts)  # type: ignore[arg-type]
    assert [f.code for f in found_all] == [FindingCode.TRAMP_TARGET_MISMATCH]
