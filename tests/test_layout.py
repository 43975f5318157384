"""The layout layer over a synthetic kernel: every era's struct shapes, damage.

The fixture dumps (tests/test_golden.py, test_gdb.py, test_drgn_target.py)
cover the 6.1 and 7.2 layouts through both back ends; the older and newer
shapes are built here as plain objects, member names as the kernel's headers
spell them (docs/kernel-facts.md), so each era's rule is exercised alone.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

import pytest

from klpinspect.backends import layout
from klpinspect.errors import MemoryReadError
from klpinspect.ppc64.toc import KernelTocSource


class View:
    """A :class:`~klpinspect.backends.layout.StructView` over Python values.

    ``value`` is a dict (struct: member -> value), a list (array), an int
    (integer or pointer), a str (char array) or a :class:`Ptr` (pointer to a
    struct, with the pointee).  Reading ``Unreadable`` raises MemoryReadError.
    """

    def __init__(self, value: Any, address: int = 0) -> None:
        self.value = value
        self._address = address

    def _target(self) -> Any:
        v = self.value
        if isinstance(v, Unreadable):
            raise MemoryReadError(v.address, 8, "not in the dump")
        return v.pointee if isinstance(v, Ptr) else v

    def member(self, name: str) -> View | None:
        v = self._target()
        if not isinstance(v, dict) or name not in v:
            return None
        return View(v[name])

    def integer(self) -> int:
        v = self.value
        if isinstance(v, Unreadable):
            raise MemoryReadError(v.address, 8, "not in the dump")
        return v.address if isinstance(v, Ptr) else int(v)

    def string(self) -> str:
        return str(self._target())

    def address(self) -> int:
        return self.value.address if isinstance(self.value, Ptr) else self._address

    def element(self, index: int) -> View:
        return View(self._target()[index])


@dataclass
class Ptr:
    address: int
    pointee: Any = None


@dataclass
class Unreadable:
    address: int


@dataclass
class Kernel:
    """A :class:`~klpinspect.backends.layout.KernelAccess` over dicts."""

    byteorder: str = "little"
    variables: dict[str, Any] = field(default_factory=dict)
    objects: dict[tuple[str, int], Any] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    offsets: dict[tuple[str, str], int] = field(default_factory=dict)
    constants: dict[str, int] = field(default_factory=dict)
    symbols: dict[str, int] = field(default_factory=dict)
    memory: dict[int, bytes] = field(default_factory=dict)

    def variable(self, name: str) -> View | None:
        return View(self.variables[name]) if name in self.variables else None

    def object(self, type_name: str, address: int) -> View:
        value = self.objects.get((type_name, address), Unreadable(address))
        if isinstance(value, Unreadable):
            raise MemoryReadError(address, 8, "not in the dump")
        return View(value, address)

    def type_size(self, type_name: str) -> int | None:
        return self.sizes.get(type_name)

    def offsetof(self, type_name: str, member: str) -> int | None:
        return self.offsets.get((type_name, member))

    def constant(self, name: str) -> int | None:
        return self.constants.get(name)

    def symbol_address(self, name: str) -> int | None:
        return self.symbols.get(name)

    def read(self, address: int, size: int) -> bytes:
        for base, data in self.memory.items():
            if base <= address and address + size <= base + len(data):
                return data[address - base : address - base + size]
        raise MemoryReadError(address, size, "not in the dump")

    def u64s(self, address: int, *values: int) -> None:
        self.memory[address] = struct.pack(f"<{len(values)}Q", *values)


# -- the kernel TOC and function entries ------------------------------------------------


KTOC = 0xC000000001C0B100
TEXT = (0xC000000000000000, 0xC000000000C00000)


def _text_symbols() -> dict[str, int]:
    return {"_stext": TEXT[0], "_etext": TEXT[1], ".TOC.": 0xC000000000BE8000}


def test_kernel_toc_from_paca_ptrs() -> None:
    k = Kernel(variables={"paca_ptrs": [Ptr(0xC000000003000000, {"kernel_toc": KTOC})]},
               symbols=_text_symbols())
    assert layout.kernel_toc(k) == (KTOC, KernelTocSource.PACA)


def test_kernel_toc_from_the_pre_4_17_paca_array() -> None:
    """Before v4.17 ``paca`` was one array of ``struct paca_struct``."""
    k = Kernel(variables={"paca": [{"kernel_toc": KTOC}, {"kernel_toc": KTOC}]},
               symbols=_text_symbols())
    assert layout.kernel_toc(k) == (KTOC, KernelTocSource.PACA)


def test_kernel_toc_falls_back_to_the_symbol() -> None:
    unreadable = Kernel(variables={"paca_ptrs": [Unreadable(0xC000000003000000)]},
                        symbols=_text_symbols())
    assert layout.kernel_toc(unreadable) == (0xC000000000BE8000, KernelTocSource.TOC_SYMBOL)
    pcrel = Kernel(variables={"paca_ptrs": [Ptr(0xC000000003000000, {"kernelbase": 1})]})
    assert layout.kernel_toc(pcrel) == (None, KernelTocSource.NONE)


def test_elfv1_function_entry() -> None:
    """``.name`` if the symbol table has it, else the ``.opd`` descriptor's entry."""
    k = Kernel(symbols={**_text_symbols(), ".ftrace_caller": 0xC000000000089B00,
                        "_mcount": 0xC000000001000000, "ftrace_regs_caller": 0xC000000001000018,
                        "livepatch_handler": 0xC000000000089C00})
    k.u64s(0xC000000001000000, 0xC000000000089A00, KTOC, 0)  # _mcount's descriptor
    k.u64s(0xC000000001000018, 0x7C0802A6F8010010)  # not a descriptor: code words
    assert layout.function_entry(k, "ftrace_caller", 1) == 0xC000000000089B00
    assert layout.function_entry(k, "_mcount", 1) == 0xC000000000089A00
    assert layout.function_entry(k, "ftrace_regs_caller", 1) == 0xC000000001000018
    # ELFv2: the plain symbol is the code
    assert layout.function_entry(k, "_mcount", 2) == 0xC000000001000000


def test_kernel_info_abi_from_func_desc_t() -> None:
    base = {"init_uts_ns": {"name": {"release": "4.4.0"}}}
    v1 = Kernel(byteorder="big", variables=base, sizes={"func_desc_t": 24},
                symbols=_text_symbols())
    assert (layout.kernel_info(v1).abi, layout.kernel_info(v1).func_desc_size) == (1, 24)
    # no func_desc_t in the debug info: the ABI decides, and the era's descriptor struct
    be = Kernel(byteorder="big", variables=base, symbols=_text_symbols())
    le = Kernel(variables=base, symbols=_text_symbols())
    assert (layout.kernel_info(be).abi, layout.kernel_info(be).func_desc_size) == (1, 24)
    assert (layout.kernel_info(le).abi, layout.kernel_info(le).func_desc_size) == (2, 8)
    opd_510 = Kernel(byteorder="big", variables=base, sizes={"struct ppc64_opd_entry": 16},
                     symbols={**_text_symbols(), "__start_opd": 0xC000000001000000})
    assert layout.func_desc(opd_510) == (16, 1)
    dotted_le = Kernel(variables=base, symbols={**_text_symbols(), ".schedule": TEXT[0]})
    assert layout.func_desc(dotted_le) == (24, 1)  # ELFv1 by its symbols, whatever the order
    info = layout.kernel_info(le)
    assert info.release == "4.4.0" and info.text_ranges == (TEXT,)
    assert info.has_livepatch_sp is False and info.paca_toc_offset is None


# -- modules ---------------------------------------------------------------------------


MOD = 0xC008000000FB0480


def _module(**members: Any) -> dict[str, Any]:
    return {"name": "rk_lib", "arch": {"tramp": 0xC008000000EF0090, "tramp_regs": 0,
                                       "toc_section": 7}, **members}


def test_module_text_three_eras() -> None:
    k = Kernel(constants={"MOD_TEXT": 0, "MOD_INIT_TEXT": 3, "MOD_MEM_NUM_TYPES": 7})
    mem = [{"base": 0, "size": 0} for _ in range(7)]
    mem[0] = {"base": 0xC008000000EE0000, "size": 0x10000}
    mem[1] = {"base": 0xC008000000F00000, "size": 0x8000}  # MOD_DATA: not text
    v64 = View(_module(mem=mem))
    assert layout.module_text_ranges(k, v64) == [(0xC008000000EE0000, 0xC008000000EF0000)]
    assert layout.module_regions(k, v64) == [(0xC008000000EE0000, 0xC008000000EF0000),
                                             (0xC008000000F00000, 0xC008000000F08000)]
    # 4.5 .. 6.3: core_layout / init_layout
    v45 = View(_module(core_layout={"base": 0xC008000000EE0000, "size": 0x18000,
                                    "text_size": 0x10000},
                       init_layout={"base": 0, "size": 0, "text_size": 0}))
    assert layout.module_text_ranges(k, v45) == [(0xC008000000EE0000, 0xC008000000EF0000)]
    assert layout.module_regions(k, v45) == [(0xC008000000EE0000, 0xC008000000EF8000)]
    # before 4.5: module_core / core_text_size in struct module
    v4 = View(_module(module_core=0xD000000000100000, core_size=0x3000, core_text_size=0x2000,
                      module_init=0, init_size=0, init_text_size=0))
    assert layout.module_text_ranges(k, v4) == [(0xD000000000100000, 0xD000000000102000)]
    assert layout.module_regions(k, v4) == [(0xD000000000100000, 0xD000000000103000)]


def _battr(name: str) -> dict[str, Any]:
    return {"attr": {"name": Ptr(0xC000000005000000, name)}}


def test_sect_attrs_two_eras() -> None:
    k = Kernel()
    # 5.10 .. 6.x: attrs[i] = {battr, address}, nsections
    old = View(_module(sect_attrs=Ptr(0xC000000004000000, {
        "nsections": 2,
        "attrs": [{"battr": _battr(".toc"), "address": 0xC008000000F10100},
                  {"battr": _battr(".stubs"), "address": 0xC008000000EF0068}],
    })))
    want = {".toc": 0xC008000000F10100, ".stubs": 0xC008000000EF0068}
    assert layout.sect_attrs_sections(k, old) == want
    # 7.x: NULL-terminated grp.bin_attrs, the address in ->private
    new = View(_module(sect_attrs=Ptr(0xC000000004000000, {"grp": {"bin_attrs": [
        Ptr(0xC000000004000100, {**_battr(".toc"), "private": 0xC008000000F10100}),
        Ptr(0xC000000004000200, {**_battr(".stubs"), "private": 0xC008000000EF0068}),
        Ptr(0, None),
    ]}})))
    assert layout.sect_attrs_sections(k, new) == want
    # before 5.8 (ed66f991bb19): attrs[i] = {mattr, char *name, address}
    pre58 = View(_module(sect_attrs=Ptr(0xC000000004000000, {
        "nsections": 2,
        "attrs": [{"mattr": {}, "name": Ptr(0xC000000005000000, ".toc"),
                   "address": 0xC008000000F10100},
                  {"mattr": {}, "name": Ptr(0xC000000005000010, ".stubs"),
                   "address": 0xC008000000EF0068}],
    })))
    assert layout.sect_attrs_sections(k, pre58) == want
    # !CONFIG_SYSFS, or no attributes
    assert layout.sect_attrs_sections(k, View(_module())) == {}
    assert layout.sect_attrs_sections(k, View(_module(sect_attrs=Ptr(0)))) == {}


def test_sect_attrs_in_few_reads() -> None:
    """With the attribute types' layouts known, the tables are read whole (the
    names up to their page's end, one crossing into the next page)."""
    names = {0xC000000005000FF8: ".text.unlikely", 0xC000000005000010: ".stubs",
             0xC000000005000020: ".toc"}
    page = bytearray(0x2000)
    for at, name in names.items():
        off = at - 0xC000000005000000
        page[off : off + len(name) + 1] = name.encode() + b"\0"
    want = {".text.unlikely": 0xC008000000E00000, ".stubs": 0xC008000000EF0068,
            ".toc": 0xC008000000F10100}
    k = Kernel(sizes={"struct module_sect_attr": 48, "struct bin_attribute": 64},
               offsets={("struct module_sect_attr", "battr.attr.name"): 0,
                        ("struct module_sect_attr", "address"): 40,
                        ("struct bin_attribute", "attr.name"): 0,
                        ("struct bin_attribute", "private"): 56})
    k.memory[0xC000000005000000] = bytes(page)
    # 5.8 .. 6.x: attrs[] at the address of the member
    table = b"".join(struct.pack("<Q32xQ", at, want[name]) for at, name in names.items())
    k.memory[0xC000000004000040] = table
    # (a Ptr: the mock's way of giving the array member an address)
    attrs = {"nsections": 3, "attrs": Ptr(0xC000000004000040, [{"battr": {}}] * 3)}
    old = View(_module(sect_attrs=Ptr(0xC000000004000000, attrs)))
    assert layout.sect_attrs_sections(k, old) == want
    # 7.x: the NULL-terminated pointer array, each bin_attribute
    k.memory[0xC000000006000FF0] = struct.pack("<QQ", 0xC000000007000000, 0xC000000007000100)
    k.memory[0xC000000006001000] = struct.pack("<QQ", 0xC000000007000200, 0) + bytes(0xFF0)
    for i, (at, name) in enumerate(names.items()):
        k.memory[0xC000000007000000 + 0x100 * i] = struct.pack("<Q48xQ", at, want[name])
    new = View(_module(sect_attrs=Ptr(0xC000000004000000, {
        "grp": {"bin_attrs": Ptr(0xC000000006000FF0, [])}})))
    assert layout.sect_attrs_sections(k, new) == want
    assert list(layout.sect_attrs_sections(k, new)) == list(want)  # in table order


def _kallsyms_tables(text: int) -> tuple[bytes, bytes]:
    """An ``Elf64_Sym`` array and its string table: two functions in the module's text
    (``st_info`` 0x12: STB_GLOBAL | STT_FUNC, ``st_shndx`` 2) after the null symbol."""
    strtab = b"\0zram_init\0zram_exit\0"
    syms = [(0, 0, 0, 0, 0, 0), (1, 0x12, 0, 2, text + 0x100, 0x40),
            (11, 0x12, 0, 2, text + 0x200, 0x20)]
    return b"".join(struct.pack("<IBBHQQ", *s) for s in syms), strtab


@dataclass
class CountingKernel(Kernel):
    calls: list[tuple[int, int]] = field(default_factory=list)

    def read(self, address: int, size: int) -> bytes:
        self.calls.append((address, size))
        return super().read(address, size)


@pytest.mark.parametrize("back_to_back", [True, False])
def test_module_kallsyms_one_read_when_back_to_back(back_to_back: bool) -> None:
    """``core_kallsyms`` laid out symtab, strtab, typetab (``add_kallsyms()``, typetab
    since 1c7651f43777, v5.2) is read once; tables apart take two reads, same symbols."""
    text, mod = 0xC008000000EE0000, 0xC008000000F00000
    symtab, strtab = _kallsyms_tables(text)
    sym_at = mod + 0x800
    str_at = sym_at + len(symtab) if back_to_back else mod + 0x4000
    type_at = str_at + len(strtab)
    k = CountingKernel(constants={"MOD_MEM_NUM_TYPES": 1})
    k.memory[sym_at] = symtab + (strtab + b"tt" if back_to_back else b"")
    if not back_to_back:
        k.memory[str_at] = strtab + bytes(128)
    k.objects[("struct module", mod)] = _module(
        mem=[{"base": text, "size": 0x1000}],
        kallsyms=Ptr(mod + 0x700, {"num_symtab": 3, "symtab": sym_at, "strtab": str_at,
                                   "typetab": type_at}),
    )
    owners = layout.ModuleOwners([(text, text + 0x1000, "zram", mod)])
    table = layout.module_kallsyms(k, owners, mod)
    assert (len(k.calls) == 1) == back_to_back  # apart: symtab, then names (maybe more)
    assert table.lookup(text + 0x104) == (text + 0x100, 0x40, "zram_init")
    assert table.lookup(text + 0x21F) == (text + 0x200, 0x20, "zram_exit")


def _list(k: Kernel, head: int, nodes: list[int]) -> None:
    """``list_head`` links: head -> nodes... -> head (``next`` at +0)."""
    chain = [head, *nodes, head]
    for here, nxt in zip(chain, chain[1:], strict=False):
        if here not in k.memory:
            k.u64s(here, nxt)


def test_module_walk_records_damage() -> None:
    """A broken link ends the walk; an unreadable struct module is left out; both are
    recorded with the address read, whatever the back end."""
    head, off = 0xC000000001500000, 8
    mods = [MOD, MOD + 0x1000, MOD + 0x2000]
    k = Kernel(symbols={"modules": head}, offsets={("struct module", "list"): off})
    k.u64s(head, mods[0] + off)
    k.u64s(mods[0] + off, mods[1] + off)
    k.u64s(mods[1] + off, mods[2] + off)  # mods[2]'s link is not in the dump
    k.objects[("struct module", mods[0])] = _module(mem=[])
    # mods[1]: struct unreadable (no object)
    k.objects[("struct module", mods[2])] = _module(name="rk_target", mem=[])
    damage = layout.Damage()
    got = list(layout.modules(k, damage))
    assert [m.name for m in got] == ["rk_lib", "rk_target"]
    assert damage == [
        (mods[1], f"struct module at {mods[1]:#x} unreadable"),
        (mods[2] + off, f"modules list broken: cannot read the link at {mods[2] + off:#x}"),
    ]


def test_module_walk_null_link() -> None:
    head = 0xC000000001500000
    k = Kernel(symbols={"modules": head}, offsets={("struct module", "list"): 8})
    k.u64s(head, 0)
    damage = layout.Damage()
    assert list(layout.modules(k, damage)) == []
    assert damage == [(head, "modules list is damaged at 0x0")]


# -- tasks ---------------------------------------------------------------------------


STACK = 0xC000000012340000


def _task(pid: int, **members: Any) -> dict[str, Any]:
    return {"pid": pid, "comm": f"t{pid}", "stack": STACK + pid * 0x10000,
            "thread": {"ksp": STACK + pid * 0x10000 + 0x3E00}, **members}


def test_task_info_two_eras() -> None:
    k = Kernel(sizes={"struct thread_info": 0x60})
    in_task = layout.task_info(k, 0xC0000000068D5A00,
                               View(_task(130, thread_info={"livepatch_sp": STACK + 32})),
                               16384)
    assert (in_task.thread_info_in_task, in_task.livepatch_sp, in_task.ksp) == (
        True, STACK + 32, STACK + 130 * 0x10000 + 0x3E00)
    # before THREAD_INFO_IN_TASK: thread_info at the base of the stack
    stack = STACK + 7 * 0x10000
    k.objects[("struct thread_info", stack)] = {"livepatch_sp": stack + 0x60 + 8}
    old = layout.task_info(k, 0xC0000000068D5B00, View(_task(7)), 16384)
    assert (old.thread_info_in_task, old.thread_info_size, old.livepatch_sp) == (
        False, 0x60, stack + 0x68)
    # !CONFIG_LIVEPATCH
    plain = layout.task_info(k, 0xC0000000068D5C00, View(_task(8, thread_info={})), 16384)
    assert plain.livepatch_sp is None


@pytest.mark.parametrize("era", ["thread_head", "thread_group"])
def test_task_walk_by_pid(era: str) -> None:
    """Processes from ``init_task.tasks``, threads from the signal's list (3.14+) or the
    leader's ``thread_group`` (before); sorted by pid like drgn's pid walk."""
    init, tasks_off = 0xC000000001400000, 0x100
    leaders = [0xC000000006000000, 0xC000000006100000]
    thread = 0xC000000006200000
    k = Kernel(symbols={"init_task": init}, sizes={"union thread_union": 16384},
               offsets={("struct task_struct", "tasks"): tasks_off})
    _list(k, init + tasks_off, [a + tasks_off for a in leaders])
    k.objects[("struct task_struct", leaders[0])] = _task(20, thread_info={})
    k.objects[("struct task_struct", leaders[1])] = _task(10, thread_info={})
    k.objects[("struct task_struct", thread)] = _task(15, thread_info={})
    if era == "thread_head":
        node, head, sig = 0x200, 0x10, 0x300
        k.offsets.update({("struct task_struct", "thread_node"): node,
                          ("struct signal_struct", "thread_head"): head,
                          ("struct task_struct", "signal"): sig})
        signals = [0xC000000007000000, 0xC000000007100000]
        for leader, signal in zip(leaders, signals, strict=True):
            k.u64s(leader + sig, signal)
        _list(k, signals[0] + head, [leaders[0] + node, thread + node])
        _list(k, signals[1] + head, [leaders[1] + node])
    else:
        group = 0x280
        k.offsets[("struct task_struct", "thread_group")] = group
        _list(k, leaders[0] + group, [thread + group])
        _list(k, leaders[1] + group, [])
    damage = layout.Damage()
    got = layout.tasks(k, damage)
    assert [t.pid for t in got] == [10, 15, 20] and damage == []
    assert all(t.stack_size == 16384 for t in got)


def test_idle_tasks_one_per_online_cpu() -> None:
    """swapper/N of each CPU in cpu_online_mask, from per_cpu(runqueues, cpu).idle, before
    the other tasks (pid 0); an offline CPU's runqueue is not read."""
    runqueues, offsets = 0xC000000001600000, [0x100000, 0x200000, 0x300000]
    idle = [0xC000000001410000, 0xC000000006800000, 0xC000000006900000]
    k = Kernel(symbols={"runqueues": runqueues, "init_task": 0xC000000001400000},
               offsets={("struct rq", "idle"): 0x900,
                        ("struct task_struct", "tasks"): 0x100},
               variables={"__per_cpu_offset": offsets, "nr_cpu_ids": 3,
                          "__cpu_online_mask": {"bits": [0b101]}})
    _list(k, 0xC000000001400000 + 0x100, [])  # no other tasks
    for cpu in (0, 2):
        k.objects[("struct rq", runqueues + offsets[cpu])] = {"idle": idle[cpu]}
        k.objects[("struct task_struct", idle[cpu])] = _task(0, comm=f"swapper/{cpu}",
                                                            thread_info={})
    damage = layout.Damage()
    got = layout.tasks(k, damage)
    assert [(t.pid, t.comm, t.address) for t in got] == [
        (0, "swapper/0", idle[0]), (0, "swapper/2", idle[2])]
    assert damage == []
    assert layout.online_cpus(k) == [0, 2]


def test_irq_stacks_before_thread_info_in_task() -> None:
    """4.x: each CPU's hardirq/softirq stack has its own thread_info and livepatch stack;
    with THREAD_INFO_IN_TASK there is none to walk."""
    hard, soft = [0xC000000001700000, 0], [0xC000000001800000, 0xC000000001810000]
    k = Kernel(symbols={"init_task": 0xC000000001400000},
               sizes={"struct thread_info": 0x60, "union thread_union": 16384},
               offsets={("struct task_struct", "tasks"): 0x100},
               variables={"nr_cpu_ids": 2, "__cpu_online_mask": {"bits": [0b11]},
                          "hardirq_ctx": hard, "softirq_ctx": soft})
    _list(k, 0xC000000001400000 + 0x100, [])
    for base in (hard[0], *soft):
        k.objects[("struct thread_info", base)] = {"livepatch_sp": base + 0x68}
    got = layout.tasks(k, layout.Damage())
    assert [(t.pid, t.comm, t.stack, t.livepatch_sp, t.thread_info_in_task) for t in got] == [
        (layout.IRQ_STACK_PID, "hardirq_ctx/0", hard[0], hard[0] + 0x68, False),
        (layout.IRQ_STACK_PID, "softirq_ctx/0", soft[0], soft[0] + 0x68, False),
        (layout.IRQ_STACK_PID, "softirq_ctx/1", soft[1], soft[1] + 0x68, False),
    ]
    k.offsets[("struct task_struct", "thread_info")] = 0
    assert layout.tasks(k, layout.Damage()) == []
