"""DrgnTarget on the real ppc64le 6.1 and 7.2 dumps, checked against each fixture's own records.

The expected values come from the fixture READMEs (the guest's
``/sys/module/*/sections`` table, the paca TOC, the parked task),
``facts.txt`` (``/proc/kallsyms``, ``/proc/PID/stack``), ``vmcoreinfo.txt``
and the kernel's embedded ``.config``, parsed by tests/fixturefacts.py rather
than retyped.  6.1 is read in all three dump formats, 7.2 as its ELF (the
only form in that fixture).
"""

from __future__ import annotations

import re
import struct

import pytest
from conftest import lp_fixture
from fixturefacts import Facts

from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.errors import KlpError, MemoryReadError
from klpinspect.target import Target

pytestmark = pytest.mark.dump

DUMPS = {
    "6.1-elf": ("6.1", "vmcore.elf.xz"),
    "6.1-kdump": ("6.1", "vmcore.kdump"),
    "6.1-qemu": ("6.1", "vmcore.qemu.elf.xz"),
    "7.2-elf": ("7.2", "vmcore.elf.xz"),
}


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, DrgnTarget]:
    cache = tmp_path_factory.mktemp("klpcache")
    out = {}
    for key, (version, name) in DUMPS.items():
        lp = lp_fixture(version)
        core = lp.unpacked(name) if name.endswith(".xz") else lp.file(name)
        prog, kind = open_program(
            core=str(core), symbols=[str(lp.vmlinux_debug)], cache_dir=str(cache)
        )
        out[key] = DrgnTarget(prog, kind)
    return out


@pytest.fixture(params=list(DUMPS))
def dump(request: pytest.FixtureRequest) -> str:
    key: str = request.param
    return key


@pytest.fixture
def target(dump: str, targets: dict[str, DrgnTarget]) -> DrgnTarget:
    return targets[dump]


@pytest.fixture
def facts(dump: str) -> Facts:
    return lp_fixture(DUMPS[dump][0]).facts


def test_is_a_target(target: DrgnTarget) -> None:
    assert isinstance(target, Target)
    assert target.kind == "vmcore"


def test_modules_match_sysfs_table(target: DrgnTarget, facts: Facts) -> None:
    table = facts.modules
    assert len(table) == int(re.findall(r"^RK-FACT modules_loaded (\d+)$",
                                        (facts.path / "facts.txt").read_text(), re.M)[0])
    mods = list(target.modules())
    assert [m.name for m in mods] == [r.name for r in table]
    for mod, row in zip(mods, table, strict=True):
        assert mod.sections.get(".text") == row.text, mod.name
        assert mod.toc_section == row.toc_section == mod.sections[".toc"], mod.name
        assert mod.stubs == row.stubs, mod.name
        assert mod.tramp == row.tramp, mod.name
        assert mod.tramp_regs == row.tramp_regs, mod.name
        # no arch.toc (4.x only); stub_count where the README has it (7.2), else none (6.1);
        # no out-of-line stubs in either (gcc 12: PPC_FTRACE_OUT_OF_LINE=n)
        assert mod.arch_toc is None and mod.ool_stubs is None
        assert "CONFIG_PPC_FTRACE_OUT_OF_LINE" not in facts.config
        assert mod.stub_count == (row.used if facts.has_stub_count else None), mod.name
        assert mod.address is not None and mod.text_ranges
        start, end = mod.text_ranges[0]
        assert start <= row.stubs < row.tramp_regs < end


def test_livepatch_modules_and_stubs_size(target: DrgnTarget, facts: Facts) -> None:
    patches = set(facts.livepatches)
    assert len(patches) == 5
    mods = {m.name: m for m in target.modules()}
    assert {name for name, m in mods.items() if m.livepatch} == patches
    rk_lp = mods["rk_lp"]
    # klp_info->sechdrs: .stubs holds 7 used 40-byte slots (README) and the sentinel room
    assert facts.module("rk_lp").used == 7
    assert rk_lp.stubs_size is not None and rk_lp.stubs_size >= 7 * 40
    assert rk_lp.section_sizes[".toc"] > 0
    assert mods["rk_target"].stubs_size is None  # not a livepatch: unknown


def test_kernel_facts(target: DrgnTarget, facts: Facts) -> None:
    k = target.kernel()
    syms = {s.name: s.address for s in facts.kallsyms if s.owner == "vmlinux"}
    assert k.release == facts.release
    assert (k.arch, k.byteorder, k.abi, k.func_desc_size) == ("ppc64le", "little", 2, 8)
    assert k.toc == facts.kernel_toc
    assert k.toc_source == "paca"
    assert k.ftrace_caller == syms["ftrace_caller"]
    assert k.ftrace_regs_caller == syms["ftrace_regs_caller"]
    assert k.mcount == syms["_mcount"]
    assert k.livepatch_handler == syms["livepatch_handler"]
    assert k.kernelbase == 0xC000000000000000 + facts.kernel_offset  # vmcoreinfo.txt
    assert k.has_livepatch_sp
    assert any(a <= syms["ftrace_caller"] < b for a, b in k.text_ranges)
    # The ftrace stub the kernel wrote loads the TOC with `ld r12,PACATOC(r13)`:
    # its DS field is the paca offset of kernel_toc.
    tramp = next(iter(target.modules())).tramp
    assert tramp is not None
    (word0,) = struct.unpack("<I", target.read(tramp, 4))
    assert k.paca_toc_offset == word0 & 0xFFFC


def test_module_memory_reads(dump: str, target: DrgnTarget, targets: dict[str, DrgnTarget]) -> None:
    elf = targets[f"{DUMPS[dump][0]}-elf"]
    for mod in target.modules():
        assert mod.stubs is not None
        data = target.read(mod.stubs, 4000)
        assert data == elf.read(mod.stubs, 4000), mod.name
        assert data[28:32] == b"\x62\x75\x74\x73"  # STUB_MAGIC 0x73747562, LE


def test_unreadable_memory(target: DrgnTarget) -> None:
    with pytest.raises(MemoryReadError) as exc:
        target.read(0xC00800003FFF0000, 16)
    assert exc.value.address == 0xC00800003FFF0000 and exc.value.size == 16


def test_symbolize_matches_kallsyms(target: DrgnTarget, facts: Facts) -> None:
    for name, addr, kind, owner in ((s.name, s.address, s.type, s.owner) for s in facts.kallsyms):
        if kind == "u":  # a livepatch's resolved reference to another module
            continue
        sym = target.symbolize(addr)
        assert sym is not None, name
        assert (sym.name, sym.address, sym.owner) == (name, addr, owner)
    assert target.symbolize(0) is None


def test_parked_task(target: DrgnTarget, facts: Facts) -> None:
    stack, lp_sp = facts.task_stack, facts.livepatch_sp
    tasks = list(target.tasks())
    (task,) = [t for t in tasks if t.pid == facts.pid]
    assert (task.comm, task.stack, task.livepatch_sp) == (facts.comm, stack, lp_sp)
    # THREAD_SIZE = 1 << CONFIG_THREAD_SHIFT (6.1: 14, 7.2: 15)
    thread_size = 1 << int(facts.config["CONFIG_THREAD_SHIFT"])
    assert task.thread_info_in_task and task.stack_size == thread_size
    assert task.ksp is not None and stack < task.ksp < stack + task.stack_size
    # only that task has anything on its livepatch stack (README)
    assert [t.pid for t in tasks if t.livepatch_sp != t.stack + 8] == [facts.pid]


def test_stack_trace_matches_proc_stack(target: DrgnTarget, facts: Facts) -> None:
    proc = facts.proc_stack
    # name+offset [owner] without /size: drgn's sizes are the ELF ones
    want = [re.sub(r"/0x[0-9a-f]+", "", line) for line in proc if "+" in line]
    frames = target.stack_trace(facts.pid)
    assert all(f.sp is not None for f in frames)
    got = []
    for i, f in enumerate(frames):
        if i and (f.pc, f.sp) == (frames[i - 1].pc, frames[i - 1].sp):
            continue  # an inlined function's frame: same pc and sp as its caller's
        fsym = target.symbolize(f.pc)
        assert fsym is not None
        got.append(re.sub(r"/0x[0-9a-f]+", "", fsym.format(f.pc)))
    # a label without ELF size is sized to the next symbol, like kallsyms does
    handler = next(f.pc for f in frames if "livepatch_handler" in str(target.symbolize(f.pc)))
    sym = target.symbolize(handler)
    assert sym is not None and sym.format(handler) in proc  # livepatch_handler+0x30/0x64
    # /proc/PID/stack starts at the saved LR in __switch_to; drgn at its pc
    assert want[0].startswith("__switch_to+") and got[0].startswith("__switch_to+")
    it = iter(got[1:])
    assert all(line in it for line in want[1:]), (want, got)
    with pytest.raises(KlpError, match="no task with pid 99999"):
        target.stack_trace(99999)
