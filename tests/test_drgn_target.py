"""DrgnTarget on the real ppc64le 6.1 dumps, checked against the fixture's own records.

The expected values come from the fixture README (the guest's
``/sys/module/*/sections`` table, the paca TOC, the parked task) and
``facts.txt`` (``/proc/kallsyms``, ``/proc/130/stack``), parsed here rather
than retyped.  Every check runs on all three dump formats.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import pytest

from klpinspect.backends.drgn.program import open_program
from klpinspect.backends.drgn.target import DrgnTarget
from klpinspect.errors import KlpError, MemoryReadError
from klpinspect.target import Target

pytestmark = pytest.mark.dump

FORMATS = ("elf", "kdump", "qemu")


@dataclass(frozen=True)
class ModuleRow:
    name: str
    text: int | None
    toc: int
    stubs: int
    tramp: int
    tramp_regs: int


def _hex(s: str) -> int | None:
    return None if s.strip() == "-" else int(s, 16)


def readme_module_table(readme: str) -> list[ModuleRow]:
    """The README's ``| module | .text | .toc | .stubs | ...`` table, in order."""
    rows: list[ModuleRow] = []
    lines = iter(readme.splitlines())
    for line in lines:
        if line.startswith("| module | .text | .toc | .stubs |"):
            header = [c.strip() for c in line.strip("|").split("|")]
            next(lines)  # | --- |
            for row in lines:
                if not row.startswith("|"):
                    break
                values = (c.strip() for c in row.strip("|").split("|"))
                cells = dict(zip(header, values, strict=True))
                rows.append(
                    ModuleRow(
                        name=cells["module"],
                        text=_hex(cells[".text"]),
                        toc=int(cells[".toc"], 16),
                        stubs=int(cells[".stubs"], 16),
                        tramp=int(cells["arch.tramp"], 16),
                        tramp_regs=int(cells["arch.tramp_regs"], 16),
                    )
                )
    return rows


def readme_value(readme: str, pattern: str) -> int:
    m = re.search(pattern, readme, re.S)
    assert m, pattern
    return int(m.group(1), 16)


def facts_kallsyms(facts: str) -> list[tuple[str, int, str, str]]:
    """``(name, address, type, owner)`` of each ``RK-FACT kallsyms`` line."""
    out = []
    for m in re.finditer(
        r"^RK-FACT kallsyms (\S+) ([0-9a-f]+) (\w)(?: \[(\w+)\])?$", facts, re.M
    ):
        out.append((m.group(1), int(m.group(2), 16), m.group(3), m.group(4) or "vmlinux"))
    return out


@pytest.fixture(scope="module")
def readme(lp61: Path) -> str:
    return (lp61 / "README.md").read_text()


@pytest.fixture(scope="module")
def facts(lp61: Path) -> str:
    return (lp61 / "facts.txt").read_text()


@pytest.fixture(scope="module")
def targets(
    vmcore_elf: Path,
    vmcore_kdump: Path,
    vmcore_qemu_elf: Path,
    vmlinux_debug: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, DrgnTarget]:
    cache = tmp_path_factory.mktemp("klpcache")
    out = {}
    for fmt, core in (("elf", vmcore_elf), ("kdump", vmcore_kdump), ("qemu", vmcore_qemu_elf)):
        prog, kind = open_program(
            core=str(core), symbols=[str(vmlinux_debug)], cache_dir=str(cache)
        )
        out[fmt] = DrgnTarget(prog, kind)
    return out


@pytest.fixture(params=FORMATS)
def target(request: pytest.FixtureRequest, targets: dict[str, DrgnTarget]) -> DrgnTarget:
    return targets[request.param]


def test_is_a_target(target: DrgnTarget) -> None:
    assert isinstance(target, Target)
    assert target.kind == "vmcore"


def test_modules_match_sysfs_table(target: DrgnTarget, readme: str) -> None:
    table = readme_module_table(readme)
    assert len(table) == 40
    mods = list(target.modules())
    assert [m.name for m in mods] == [r.name for r in table]
    for mod, row in zip(mods, table, strict=True):
        assert mod.sections.get(".text") == row.text, mod.name
        assert mod.toc_section == row.toc == mod.sections[".toc"], mod.name
        assert mod.stubs == row.stubs, mod.name
        assert mod.tramp == row.tramp, mod.name
        assert mod.tramp_regs == row.tramp_regs, mod.name
        # 6.1: no arch.toc, no stub_count, no out-of-line stubs
        assert mod.arch_toc is None and mod.stub_count is None and mod.ool_stubs is None
        assert mod.address is not None and mod.text_ranges
        start, end = mod.text_ranges[0]
        assert start <= row.stubs < row.tramp_regs < end


def test_livepatch_modules_and_stubs_size(target: DrgnTarget, facts: str) -> None:
    patches = set(re.findall(r"^RK-FACT livepatch (\S+) ", facts, re.M))
    assert len(patches) == 5
    mods = {m.name: m for m in target.modules()}
    assert {name for name, m in mods.items() if m.livepatch} == patches
    rk_lp = mods["rk_lp"]
    # klp_info->sechdrs: .stubs holds 7 used 40-byte slots (README) and the sentinel room
    assert rk_lp.stubs_size is not None and rk_lp.stubs_size >= 7 * 40
    assert rk_lp.section_sizes[".toc"] > 0
    assert mods["rk_target"].stubs_size is None  # not a livepatch: unknown


def test_kernel_facts(target: DrgnTarget, readme: str, facts: str) -> None:
    k = target.kernel()
    syms = {name: addr for name, addr, _, owner in facts_kallsyms(facts) if owner == "vmlinux"}
    assert k.release == "6.1.192"
    assert (k.arch, k.byteorder, k.abi, k.func_desc_size) == ("ppc64le", "little", 2, 8)
    assert k.toc == readme_value(readme, r"paca_ptrs\[0\]->kernel_toc` = `(0x[0-9a-f]+)`")
    assert k.toc_source == "paca"
    assert k.ftrace_caller == syms["ftrace_caller"]
    assert k.ftrace_regs_caller == syms["ftrace_regs_caller"]
    assert k.mcount == syms["_mcount"]
    assert k.livepatch_handler == syms["livepatch_handler"]
    assert k.kernelbase == 0xC000000000000000  # KERNELOFFSET=0 in vmcoreinfo.txt
    assert k.has_livepatch_sp
    assert any(a <= syms["ftrace_caller"] < b for a, b in k.text_ranges)
    # The ftrace stub the kernel wrote loads the TOC with `ld r12,PACATOC(r13)`:
    # its DS field is the paca offset of kernel_toc.
    tramp = next(iter(target.modules())).tramp
    assert tramp is not None
    (word0,) = struct.unpack("<I", target.read(tramp, 4))
    assert k.paca_toc_offset == word0 & 0xFFFC


def test_module_memory_reads(target: DrgnTarget, targets: dict[str, DrgnTarget]) -> None:
    for mod in target.modules():
        assert mod.stubs is not None
        data = target.read(mod.stubs, 4000)
        assert data == targets["elf"].read(mod.stubs, 4000), mod.name
        assert data[28:32] == b"\x62\x75\x74\x73"  # STUB_MAGIC 0x73747562, LE


def test_unreadable_memory(target: DrgnTarget) -> None:
    with pytest.raises(MemoryReadError) as exc:
        target.read(0xC00800003FFF0000, 16)
    assert exc.value.address == 0xC00800003FFF0000 and exc.value.size == 16


def test_symbolize_matches_kallsyms(target: DrgnTarget, facts: str) -> None:
    for name, addr, kind, owner in facts_kallsyms(facts):
        if kind == "u":  # a livepatch's resolved reference to another module
            continue
        sym = target.symbolize(addr)
        assert sym is not None, name
        assert (sym.name, sym.address, sym.owner) == (name, addr, owner)
    assert target.symbolize(0) is None


def test_parked_task(target: DrgnTarget, readme: str) -> None:
    stack = readme_value(readme, r"Its stack \(`task->stack`\) is at `(0x[0-9a-f]+)`")
    lp_sp = readme_value(readme, r"`thread_info\.livepatch_sp` = `(0x[0-9a-f]+)`")
    tasks = list(target.tasks())
    (task,) = [t for t in tasks if t.pid == 130]
    assert (task.comm, task.stack, task.livepatch_sp) == ("rk_target", stack, lp_sp)
    assert task.thread_info_in_task and task.stack_size == 16384
    assert task.ksp is not None and stack < task.ksp < stack + task.stack_size
    # only that task has anything on its livepatch stack (README)
    assert [t.pid for t in tasks if t.livepatch_sp != t.stack + 8] == [130]


def test_stack_trace_matches_proc_stack(target: DrgnTarget, facts: str) -> None:
    proc = re.findall(r"^RK-FACT stack \[<0>\] (\S+(?: \[\w+\])?)$", facts, re.M)
    # name+offset [owner] without /size: drgn's sizes are the ELF ones
    want = [re.sub(r"/0x[0-9a-f]+", "", line) for line in proc if "+" in line]
    frames = target.stack_trace(130)
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
    # /proc/130/stack starts at the saved LR in __switch_to; drgn at its pc
    assert want[0].startswith("__switch_to+") and got[0].startswith("__switch_to+")
    it = iter(got[1:])
    assert all(line in it for line in want[1:]), (want, got)
    with pytest.raises(KlpError, match="no task with pid 99999"):
        target.stack_trace(99999)
