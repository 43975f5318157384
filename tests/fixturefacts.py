"""What a livepatch fixture's own records say, parsed (never retyped, never klpinspect's output).

Each fixture directory in ``../shared/fixtures`` (``ppc64le-6.1-lp``,
``ppc64le-7.2-lp``) carries three independent records of its one boot:

* ``facts.txt``: the ``RK-FACT`` lines the guest printed before the dump
  (``/proc/kallsyms``, ``/sys/kernel/livepatch``, ``/proc/PID/stack``, the
  parked task);
* ``README.md``: the module table (``/sys/module/*/sections`` next to the
  slot counts drgn's ``drgn_inspect.py`` read), the paca TOC, the livepatch
  frame table, drgn's ``stack_trace``;
* ``vmcoreinfo.txt``: the guest's VMCOREINFO; and the kernel's own
  ``.config`` (``CONFIG_IKCONFIG``, gzip between ``IKCFG_ST`` and
  ``IKCFG_ED`` in ``vmlinux``, as ``scripts/extract-ikconfig`` finds it).

The tests check klpinspect against these, for both kernels.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Facts", "Kallsym", "LpFrame", "ModuleRow", "load_facts"]


@dataclass(frozen=True)
class Kallsym:
    """One ``RK-FACT kallsyms NAME ADDR TYPE [OWNER]`` line (``/proc/kallsyms``)."""

    name: str
    address: int
    type: str
    owner: str  # "vmlinux" or the module name


@dataclass(frozen=True)
class ModuleRow:
    """One row of the README's module table (sysfs sections + drgn's slot counts)."""

    name: str
    text: int | None  # None: "-" (empty .text, sysfs lists none)
    toc_section: int
    stubs: int
    used: int  # 6.1 "used" (slots up to the zero sentinel), 7.x "stub_count"
    normal: int
    ftrace: int
    tramp: int
    tramp_regs: int
    toc: int  # the module's r2


@dataclass(frozen=True)
class LpFrame:
    """One row of the README's livepatch frame table (``struct`` of 3 u64s)."""

    at: int
    r2: int
    lr: int
    lr_symbol: str  # "rk_target_thread+0x30": name+offset, no size, no owner
    marker: int


@dataclass(frozen=True)
class Facts:
    """Everything the tests need from one fixture, from its own records."""

    path: Path
    release: str
    kallsyms: list[Kallsym]
    modules: list[ModuleRow]  # /proc/modules order
    kernel_toc: int
    totals: tuple[int, int, int]  # README: used slots, normal, ftrace
    pid: int
    comm: str
    task_stack: int
    livepatch_sp: int
    frames: list[LpFrame]
    proc_stack: list[str]  # /proc/PID/stack lines, as printed
    livepatches: dict[str, list[tuple[str, str, int]]]  # patch -> (object, function, sympos)
    drgn_stack_trace: list[str]
    has_stub_count: bool = False  # README column "stub_count": mod->arch.stub_count exists
    vmcoreinfo: dict[str, str] = field(default_factory=dict)
    config: dict[str, str] = field(default_factory=dict)

    def sym(self, name: str, owner: str = "vmlinux") -> int:
        """Address of a defined ``/proc/kallsyms`` symbol."""
        for k in self.kallsyms:
            if k.name == name and k.owner == owner and k.type != "u":
                return k.address
        raise KeyError(f"{name} [{owner}] not in facts.txt")

    def module(self, name: str) -> ModuleRow:
        (row,) = (r for r in self.modules if r.name == name)
        return row

    @property
    def kernel_offset(self) -> int:
        return int(self.vmcoreinfo["KERNELOFFSET"], 16)

    @property
    def page_size(self) -> int:
        return int(self.vmcoreinfo["PAGESIZE"])


def ikconfig(vmlinux: Path) -> dict[str, str]:
    """``CONFIG_X`` -> value from the kernel image's embedded ``.config``."""
    data = vmlinux.read_bytes()
    start = data.find(b"IKCFG_ST")
    end = data.find(b"IKCFG_ED", start)
    assert 0 <= start < end, f"{vmlinux}: no IKCONFIG"
    text = zlib.decompress(data[start + 8 : end], 31).decode()
    return dict(line.split("=", 1) for line in text.splitlines() if line.startswith("CONFIG_"))


def _hex(cell: str) -> int | None:
    cell = cell.strip().strip("`")
    return None if cell == "-" else int(cell, 16)


def _module_table(readme: str) -> list[ModuleRow]:
    rows: list[ModuleRow] = []
    lines = iter(readme.splitlines())
    for line in lines:
        if not line.startswith("| module | .text | .toc | .stubs |"):
            continue
        header = [c.strip() for c in line.strip("|").split("|")]
        next(lines)  # | --- |
        for row in lines:
            if not row.startswith("|"):
                break
            c = dict(zip(header, (x.strip() for x in row.strip("|").split("|")), strict=True))
            toc_section, stubs = _hex(c[".toc"]), _hex(c[".stubs"])
            tramp, tramp_regs, toc = _hex(c["arch.tramp"]), _hex(c["arch.tramp_regs"]), _hex(
                c["TOC (r2)"]
            )
            assert None not in (toc_section, stubs, tramp, tramp_regs, toc), row
            rows.append(
                ModuleRow(
                    name=c["module"],
                    text=_hex(c[".text"]),
                    toc_section=toc_section or 0,
                    stubs=stubs or 0,
                    used=int(c.get("used") or c["stub_count"]),
                    normal=int(c["normal"]),
                    ftrace=int(c["ftrace"]),
                    tramp=tramp or 0,
                    tramp_regs=tramp_regs or 0,
                    toc=toc or 0,
                )
            )
        break
    return rows


def _one(pattern: str, text: str, flags: int = re.S) -> re.Match[str]:
    m = re.search(pattern, text, flags)
    if m is None:
        raise AssertionError(f"fixture record has no match for {pattern!r}")
    return m


def _num(s: str) -> int:
    return int(s.replace(",", ""))


def load_facts(path: Path) -> Facts:
    """Parse ``facts.txt``, ``README.md`` and ``vmcoreinfo.txt`` of the fixture at *path*."""
    facts = (path / "facts.txt").read_text()
    readme = (path / "README.md").read_text()
    vmcoreinfo = dict(
        line.split("=", 1) for line in (path / "vmcoreinfo.txt").read_text().splitlines()
        if "=" in line
    )
    kallsyms = [
        Kallsym(m[1], int(m[2], 16), m[3], m[4] or "vmlinux")
        for m in re.finditer(r"^RK-FACT kallsyms (\S+) ([0-9a-f]+) (\w)(?: \[(\w+)\])?$", facts,
                             re.M)
    ]
    livepatches = {}
    for m in re.finditer(r"^RK-FACT livepatch (\S+) enabled=1 transition=0 funcs=(.*)$", facts,
                         re.M):
        funcs = []
        for f in m[2].split():
            obj, rest = f.split(":")
            func, sympos = rest.split(",")
            funcs.append((obj, func, int(sympos)))
        livepatches[m[1]] = funcs
    task = _one(r"^RK-FACT task pid=(\d+) comm=(\S+) ", facts, re.M)
    frames = [
        LpFrame(int(m[1], 16), int(m[2], 16), int(m[3], 16), m[4], int(m[5], 16))
        for m in re.finditer(
            r"^  \| \d+(?: \(first pushed\))? \| `(0x[0-9a-f]+)` \| `(0x[0-9a-f]+)` \(\w+'s TOC\)"
            r" \| `(0x[0-9a-f]+)` `(\S+)` \| `(0x[0-9a-f]+)` \|$",
            readme,
            re.M,
        )
    ]
    totals = _one(r"([\d,]+) used (?:stub )?slots = ([\d,]+)\s+normal \+ ([\d,]+) ftrace", readme)
    trace = _one(r"drgn's own `stack_trace\((\d+)\)`: `([^`]*)`", readme)
    assert int(trace[1]) == int(task[1])
    return Facts(
        path=path,
        release=_one(r"^RK-FACT kernel (\S+) ", facts, re.M)[1],
        kallsyms=kallsyms,
        modules=_module_table(readme),
        kernel_toc=int(_one(r"`paca_ptrs\[0\]->kernel_toc` = `(0x[0-9a-f]+)`", readme)[1], 16),
        totals=(_num(totals[1]), _num(totals[2]), _num(totals[3])),
        pid=int(task[1]),
        comm=task[2],
        task_stack=int(_one(r"Its stack \(`task->stack`\) is at `(0x[0-9a-f]+)`", readme)[1], 16),
        livepatch_sp=int(_one(r"`thread_info\.livepatch_sp` = `(0x[0-9a-f]+)`", readme)[1], 16),
        frames=frames,
        proc_stack=re.findall(r"^RK-FACT stack \[<0>\] (.*)$", facts, re.M),
        livepatches=livepatches,
        drgn_stack_trace=[s.strip() for s in trace[2].split("<-")],
        has_stub_count="| stub_count |" in readme,
        vmcoreinfo=vmcoreinfo,
        config=ikconfig(path / "vmlinux"),
    )
