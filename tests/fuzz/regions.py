"""Where klpinspect reads a real dump: byte ranges by region, with their file offsets.

:func:`region_map` opens the clean fixture dump with drgn and lists, per
region, the ``(name, file offset, size)`` ranges that klpinspect reads:
``struct module`` fields (list links, name, arch, section attributes, text
layout, klp_info), ``.stubs`` slots, ``arch.tramp``/``tramp_regs``,
out-of-line stubs when the kernel has them, the ``modules`` list head, the
``task_struct``/``thread_info`` fields used, each task's ``end_of_stack``
word and its livepatch frames.  Virtual addresses are translated with drgn's
page-table walker (vmalloc, modules) or the linear map, then to ELF file
offsets through the ``PT_LOAD`` headers.  A range that crosses a page is split.

The map is cached as JSON beside the decompressed dump (``<dump>.regions.json``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ("REGIONS", "region_map")

PAGE_OFFSET = 0xC000000000000000
PAGE = 1 << 16  # ppc64 radix with 64 KiB pages: translations hold within a page

REGIONS = (
    "module.list", "module.name", "module.arch", "module.sect_attrs", "module.layout",
    "module.klp_info", "stubs", "tramp", "ool_stubs", "modules_head", "task.fields",
    "task.stack_end", "task.lpframes",
)  # fmt: skip


def _loads(dump: Path) -> list[tuple[int, int, int]]:
    from elftools.elf.elffile import ELFFile

    out = []
    with open(dump, "rb") as f:
        for seg in ELFFile(f).iter_segments():
            if seg["p_type"] == "PT_LOAD":
                out.append((seg["p_paddr"], seg["p_filesz"], seg["p_offset"]))
    return out


class _Translator:
    def __init__(self, prog: Any, dump: Path) -> None:
        from drgn.helpers.linux.mm import follow_phys

        self.prog = prog
        self.follow_phys = follow_phys
        self.mm = prog["init_mm"].address_of_()
        self.loads = _loads(dump)

    def phys(self, vaddr: int) -> int | None:
        if PAGE_OFFSET <= vaddr < 0xC008000000000000:
            return vaddr - PAGE_OFFSET
        try:
            return int(self.follow_phys(self.mm, vaddr))
        except Exception:  # FaultError: not mapped
            return None

    def offset(self, phys: int) -> int | None:
        for paddr, size, off in self.loads:
            if paddr <= phys < paddr + size:
                return off + phys - paddr
        return None

    def ranges(self, vaddr: int, size: int) -> list[tuple[int, int]]:
        """(file offset, size) pieces of ``[vaddr, vaddr + size)``, split at pages."""
        out = []
        while size > 0:
            n = min(size, PAGE - vaddr % PAGE)
            p = self.phys(vaddr)
            off = None if p is None else self.offset(p)
            if off is not None:
                out.append((off, n))
            vaddr += n
            size -= n
        return out


def _field(obj: Any, name: str) -> tuple[int, int] | None:
    from drgn import offsetof, sizeof

    try:
        t = obj.type_
        return obj.address_ + offsetof(t, name), sizeof(obj.member_(name))
    except (LookupError, ValueError, AttributeError):
        return None


def _build(dump: Path, symbols: Path) -> dict[str, list[tuple[str, int, int]]]:
    import drgn
    from drgn.helpers.linux.module import for_each_module
    from drgn.helpers.linux.pid import for_each_task

    prog = drgn.program_from_core_dump(str(dump))
    prog.load_debug_info([str(symbols)])
    tr = _Translator(prog, dump)
    regions: dict[str, list[tuple[str, int, int]]] = {r: [] for r in REGIONS}

    def add(region: str, label: str, vaddr: int, size: int) -> None:
        for off, n in tr.ranges(vaddr, size):
            regions[region].append((label, off, n))

    head = prog["modules"]
    add("modules_head", "modules", head.address_, 16)
    for mod in for_each_module(prog):
        name = mod.name.string_().decode()
        m = mod[0]
        for region, fields in (
            ("module.list", ["list"]),
            ("module.name", ["name"]),
            ("module.arch", ["arch"]),
            ("module.sect_attrs", ["sect_attrs"]),
            ("module.layout", ["core_layout", "init_layout", "mem"]),
            ("module.klp_info", ["klp", "klp_info"]),
        ):
            for fld in fields:
                got = _field(m, fld)
                if got is not None:
                    add(region, f"{name}.{fld}", *got)
        attrs = m.sect_attrs
        if attrs:
            from drgn import sizeof

            n = int(attrs.nsections)
            add("module.sect_attrs", f"{name}.sect_attrs[]", int(attrs.value_()),
                sizeof(attrs[0].type_) + n * sizeof(attrs.attrs[0].type_))  # fmt: skip
            for i in range(n):
                a = attrs.attrs[i]
                if a.battr.attr.name.string_() == b".stubs":
                    stubs = int(a.address)
                    # used slots: up to the all-zero sentinel (32-byte ppc64_stub_entry)
                    k = 0
                    while k < 4096 and any(prog.read(stubs + 32 * k, 32)):
                        k += 1
                    add("stubs", f"{name}.stubs", stubs, 32 * (k + 1))
        for t in ("tramp", "tramp_regs"):
            try:
                addr = int(m.arch.member_(t))
            except (LookupError, AttributeError):
                continue
            if addr:
                add("tramp", f"{name}.{t}", addr, 32)
        try:
            ool, cnt = int(m.arch.ool_stubs), int(m.arch.ool_stub_count)
            if ool and cnt:
                add("ool_stubs", f"{name}.ool_stubs", ool, 32 * cnt)
        except (LookupError, AttributeError):
            pass
    for task in for_each_task(prog):
        t = task[0]
        pid = int(t.pid)
        for fld in ("pid", "comm", "stack", "tasks", "thread_node", "signal", "thread_info",
                    "thread_group"):  # fmt: skip
            got = _field(t, fld)
            if got is not None:
                add("task.fields", f"{pid}.{fld}", *got)
        ksp = _field(t.thread, "ksp")
        if ksp is not None:
            add("task.fields", f"{pid}.thread.ksp", *ksp)
        stack = int(t.stack.value_())
        if not stack:
            continue
        add("task.stack_end", f"{pid}.end_of_stack", stack, 8)
        try:
            lp_sp = int(t.thread_info.livepatch_sp.value_())
        except (LookupError, AttributeError):
            continue
        if stack + 8 < lp_sp <= stack + 16384:
            add("task.lpframes", f"{pid}.lpframes", stack + 8, lp_sp - stack - 8)
    return {k: v for k, v in regions.items() if v}


def region_map(dump: Path, symbols: Path) -> dict[str, list[tuple[str, int, int]]]:
    """Region -> ``[(label, file offset, size)]`` for the clean ``dump`` (cached)."""
    cache = dump.with_name(dump.name + ".regions.json")
    key = f"{dump.stat().st_size}:{dump.stat().st_mtime_ns}:{symbols}"
    if cache.exists():
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return {k: [tuple(x) for x in v] for k, v in data["regions"].items()}  # type: ignore[misc]
    regions = _build(dump, symbols)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
    tmp.write_text(json.dumps({"key": key, "regions": regions}))
    tmp.replace(cache)
    return regions
