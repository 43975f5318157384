"""The kernel's struct layouts, every era once, for both back ends.

What ``struct module``, ``struct task_struct``, the paca and the section
attributes look like differs between kernel releases; this module knows
each era once and reads them through a small read-only interface that the
drgn back end implements over ``drgn.Object`` and the gdb back end over
``gdb.Value``\\ s built from bulk reads:

* :class:`StructView`: one C object: a member (or ``None`` where this kernel
  has no such member), its value as an integer or a string, its address, an
  array element;
* :class:`KernelAccess`: the program: globals, types, enumerators, symbols
  and raw reads.

Kernel differences are found by feature detection (does the member, type or
enumerator exist?), never by version number; each era cites the kernel
commit that changed it.  Damage (a broken list, an unreadable structure) is
recorded in a :class:`Damage` list with back-end-neutral messages, so that
both back ends report the same findings on the same dump.  Nothing here
imports drgn or gdb.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from klpinspect.elf64 import ELF64_SHDR_SIZE, ELF64_SYM_SIZE, shdr_struct, sym_words
from klpinspect.errors import MemoryReadError, TargetError
from klpinspect.ppc64.toc import KernelTocSource
from klpinspect.report import FindingCode
from klpinspect.stackcheck import ListBroken, ListCorruption, walk_list
from klpinspect.symtab import ElfSymbols, parse_elf_columns_within
from klpinspect.target import KernelInfo, ModuleInfo, SymbolInfo, TaskInfo, make_module_info

__all__ = (
    "IRQ_STACK_PID",
    "Damage",
    "KernelAccess",
    "LayoutQueries",
    "ListDamaged",
    "ModuleDamaged",
    "ModuleOwners",
    "StructView",
    "func_desc",
    "function_entry",
    "idle_task_structs",
    "irq_stacks",
    "kernel_info",
    "kernel_toc",
    "klp_sechdrs",
    "list_nodes",
    "module_info",
    "module_kallsyms",
    "name_from_module_kallsyms",
    "module_regions",
    "module_section_addresses",
    "module_section_sizes",
    "module_structs",
    "module_text_ranges",
    "modules",
    "online_cpus",
    "read_c_string",
    "sect_attrs_sections",
    "task_info",
    "task_structs",
    "tasks",
    "thread_size",
)

# Refuse absurd counts read from a damaged dump.
MAX_LIST = 1 << 20
MAX_SECTIONS = 4096
# SHF_ALLOC (include/uapi/linux/elf.h)
_SHF_ALLOC = 2
# THREAD_SIZE when the debug info has no union thread_union (16 KiB, the ppc64 default)
_DEFAULT_THREAD_SIZE = 16384


class StructView(Protocol):
    """A read-only view of one C object in target memory.

    Reads raise :class:`~klpinspect.errors.MemoryReadError`; a missing member is
    ``None``, never an exception, so that feature detection reads plainly.
    """

    def member(self, name: str) -> StructView | None:
        """Member ``name`` (through a pointer too), or ``None`` if the type has none."""
        ...

    def integer(self) -> int:
        """The value of an integer, enum or pointer."""
        ...

    def string(self) -> str:
        """The text of a ``char[]`` or ``char *`` (up to the first NUL)."""
        ...

    def address(self) -> int:
        """Where the object is (for a pointer: where it points)."""
        ...

    def element(self, index: int) -> StructView:
        """Element ``index`` of an array, or ``pointer[index]``."""
        ...


class KernelAccess(Protocol):
    """The program: what the layout rules need beyond one object."""

    byteorder: str

    def variable(self, name: str) -> StructView | None:
        """The global ``name``, or ``None`` if the kernel has none."""
        ...

    def object(self, type_name: str, address: int) -> StructView:
        """The object of type ``type_name`` at ``address``."""
        ...

    def type_size(self, type_name: str) -> int | None:
        """``sizeof(type_name)``, or ``None`` if the debug info has no such type."""
        ...

    def offsetof(self, type_name: str, member: str) -> int | None:
        """``offsetof(type_name, member)``, or ``None`` if there is no such member."""
        ...

    def constant(self, name: str) -> int | None:
        """The value of enumerator ``name``, or ``None``."""
        ...

    def symbol_address(self, name: str) -> int | None:
        """The address of ELF symbol ``name`` in vmlinux, or ``None``."""
        ...

    def read(self, address: int, size: int) -> bytes:
        """Raw memory; raises :class:`~klpinspect.errors.MemoryReadError`."""
        ...


class LayoutQueries:
    """The layout queries :class:`klpinspect.ftrace_view.LayoutSource` asks of a
    Target, answered by the back end's :class:`KernelAccess` (``self._k``): one
    definition for both back ends."""

    _k: KernelAccess

    def type_size(self, type_name: str) -> int | None:
        """``sizeof(type_name)`` from the debug info, ``None`` if there is no such type."""
        return self._k.type_size(type_name)

    def member_offset(self, type_name: str, member: str) -> int | None:
        """``offsetof(type_name, member)`` (``member`` may be ``a.b``), ``None`` if absent."""
        return self._k.offsetof(type_name, member)

    def symbol_address(self, name: str) -> int | None:
        """Address of kernel symbol ``name`` (ELF symbol, else a debug-info variable)."""
        return self._k.symbol_address(name)

    def constant(self, name: str) -> int | None:
        """The enumerator ``name``'s value, ``None`` if the debug info has none."""
        return self._k.constant(name)


class Damage(list[tuple[int | None, str]]):
    """``(address or None, message)`` of structures a back end could not walk.

    Each becomes a ``MEMORY_UNREADABLE`` finding (``Target.damage``), or the
    code :attr:`codes` names for it (``LIST_CORRUPT``: a list that loops or
    leaves kernel memory).  Messages name the structure and the address the
    layout rules tried to read, not the back end's own error text, so both
    back ends agree.
    """

    def __init__(self, entries: Iterable[tuple[int | None, str]] = ()) -> None:
        super().__init__(entries)
        #: ``(address, message)`` -> its finding code, where not ``MEMORY_UNREADABLE``
        self.codes: dict[tuple[int | None, str], FindingCode] = {}

    def add(
        self,
        address: int | None,
        message: str,
        code: FindingCode = FindingCode.MEMORY_UNREADABLE,
    ) -> None:
        if (address, message) not in self:
            self.append((address, message))
            if code is not FindingCode.MEMORY_UNREADABLE:
                self.codes[(address, message)] = code


def _u64(k: KernelAccess, address: int) -> int:
    return int.from_bytes(k.read(address, 8), "little" if k.byteorder == "little" else "big")


def _opt_int(view: StructView | None, member: str) -> int | None:
    m = view.member(member) if view is not None else None
    return None if m is None else m.integer()


# -- kernel ------------------------------------------------------------------------


def kernel_toc(k: KernelAccess) -> tuple[int | None, KernelTocSource]:
    """The kernel TOC (r2) and where it came from.

    ``paca_ptrs[0]->kernel_toc`` is what module ftrace stubs load at run time
    (right for a relocated kernel too); the vmlinux ``.TOC.`` symbol is the
    link-time value.  PCREL kernels (``CONFIG_PPC_KERNEL_PCREL``, absent in 6.1,
    present in 6.12; docs/kernel-facts.md) have no TOC at all.

    :returns: ``(toc, "paca")``, ``(toc, ".TOC.")`` or ``(None, "none")``
    """
    toc = _paca0_member(k, "kernel_toc")
    if toc:
        return toc, KernelTocSource.PACA
    sym = k.symbol_address(".TOC.")
    if sym is not None:
        return sym, KernelTocSource.TOC_SYMBOL
    return None, KernelTocSource.NONE


def _paca0_member(k: KernelAccess, member: str) -> int | None:
    """``paca_ptrs[0]->member``; ``None`` where unreadable or absent.

    ``paca_ptrs`` since v4.17 ("powerpc/64: Use array of paca pointers and
    allocate pacas individually"); before, ``paca`` was one array of
    ``struct paca_struct`` (docs/kernel-facts.md).
    """
    try:
        ptrs = k.variable("paca_ptrs")
        if ptrs is not None:
            paca = ptrs.element(0)
        else:
            array = k.variable("paca")
            if array is None:
                return None
            paca = array.element(0)
        return _opt_int(paca, member)
    except MemoryReadError:
        return None


def function_entry(k: KernelAccess, name: str, abi: int) -> int | None:
    """Where function ``name``'s code starts (what a stub branches to).

    On ELFv1 the plain symbol is the function descriptor in ``.opd`` and the
    code is ``.name``; without a dot symbol (binutils no longer emits them),
    the descriptor's first doubleword, if it points into kernel text.
    """
    if abi == 1:
        dotted = k.symbol_address("." + name)
        if dotted is not None:
            return dotted
        desc = k.symbol_address(name)
        if desc is not None:
            try:
                entry = _u64(k, desc)
            except MemoryReadError:
                entry = None
            if entry is not None and any(a <= entry < b for a, b in _text_ranges(k)):
                return entry
    return k.symbol_address(name)


def _text_ranges(k: KernelAccess) -> list[tuple[int, int]]:
    text = []
    for start, end in (("_stext", "_etext"), ("_sinittext", "_einittext")):
        a, b = k.symbol_address(start), k.symbol_address(end)
        if a is not None and b is not None and a < b:
            text.append((a, b))
    return text


def func_desc(k: KernelAccess) -> tuple[int, int]:
    """``(sizeof(func_desc_t), ABI)``: ELFv1 has function descriptors, ELFv2 just the address.

    ``func_desc_t`` when the debug info has it.  Else the ABI decides, from the
    kernel's own symbols: an ELFv1 vmlinux links an ``.opd`` section
    (``__start_opd``) or carries dot symbols (``.schedule``); every
    little-endian kernel is ELFv2; a big-endian one with neither sign is taken
    as ELFv1, as big-endian kernels were before ELFv2 became a choice for them.
    An ELFv1 descriptor is the era's struct (``struct func_desc {addr, toc,
    env}``, 24 bytes, by 6.1; ``struct ppc64_opd_entry {funcaddr, r2}``, 16
    bytes, in 5.10), 24 if neither is known; ELFv2 has none (8: the address).
    """
    size = k.type_size("func_desc_t")
    if size:
        return size, 2 if size == 8 else 1
    elfv1 = (
        k.symbol_address("__start_opd") is not None
        or k.symbol_address(".schedule") is not None
        or k.byteorder == "big"
    )
    if not elfv1:
        return 8, 2
    return k.type_size("struct func_desc") or k.type_size("struct ppc64_opd_entry") or 24, 1


def thread_size(k: KernelAccess) -> int:
    """``THREAD_SIZE``: the size of ``union thread_union`` (16 KiB if unknown)."""
    return k.type_size("union thread_union") or _DEFAULT_THREAD_SIZE


def kernel_info(k: KernelAccess) -> KernelInfo:
    """Kernel-wide facts.

    :raises MemoryReadError: if ``init_uts_ns`` cannot be read
    :raises TargetError: if the kernel has no ``init_uts_ns``
    """
    little = k.byteorder == "little"
    uts = k.variable("init_uts_ns")
    name = uts.member("name") if uts is not None else None
    release_view = name.member("release") if name is not None else None
    if release_view is None:
        raise TargetError("no symbol 'init_uts_ns' in the kernel")
    release = release_view.string()
    toc, toc_source = kernel_toc(k)
    func_desc_size, abi = func_desc(k)
    return KernelInfo(
        release=release,
        arch="ppc64le" if little else "ppc64",
        byteorder="little" if little else "big",
        abi=abi,
        toc=toc,
        toc_source=toc_source,
        kernelbase=_paca0_member(k, "kernelbase"),
        ftrace_caller=function_entry(k, "ftrace_caller", abi),
        ftrace_regs_caller=function_entry(k, "ftrace_regs_caller", abi),
        mcount=function_entry(k, "_mcount", abi),
        livepatch_handler=k.symbol_address("livepatch_handler"),
        text_ranges=tuple(_text_ranges(k)),
        func_desc_size=func_desc_size,
        has_livepatch_sp=k.offsetof("struct thread_info", "livepatch_sp") is not None,
        paca_toc_offset=k.offsetof("struct paca_struct", "kernel_toc"),
    )


# -- lists ---------------------------------------------------------------------------


class ListDamaged(TargetError):
    """A ``list_head`` chain with a NULL link or no end."""


class ModuleDamaged(TargetError):
    """A ``struct module`` whose fields are implausible (a damaged dump):
    :func:`modules` leaves the module out and records it, as an unreadable one."""


def list_nodes(k: KernelAccess, head: int, what: str) -> Iterator[int]:
    """The ``list_head`` nodes after ``head`` (``list_for_each``):
    :func:`klpinspect.stackcheck.walk_list` over ``k``.

    :raises MemoryReadError: at an unreadable link
    :raises ListDamaged: at a NULL link or an endless list
    :raises ListCorruption: at a link back to an earlier node (not the head)
        or below :data:`~klpinspect.stackcheck.KERNEL_SPACE` (``LIST_CORRUPT``)
    """
    try:
        yield from walk_list(lambda a: _u64(k, a), head, what, MAX_LIST)
    except ListBroken as err:
        raise ListDamaged(str(err)) from None


def _walk(k: KernelAccess, head: int, what: str, damage: Damage) -> Iterator[int]:
    """:func:`list_nodes`, ending at a broken link and recording it in ``damage``."""
    it = list_nodes(k, head, what)
    prev = head
    while True:
        try:
            node = next(it)
        except StopIteration:
            return
        except MemoryReadError:
            damage.add(prev, f"{what} list broken: cannot read the link at {prev:#x}")
            return
        except ListDamaged as err:
            damage.add(prev, str(err))
            return
        except ListCorruption as err:
            damage.add(err.address, str(err), FindingCode.LIST_CORRUPT)
            return
        prev = node
        yield node


# -- modules ---------------------------------------------------------------------------


def module_structs(k: KernelAccess, damage: Damage) -> Iterator[tuple[int, StructView]]:
    """``(address, struct module)`` of every module, in ``modules`` list order."""
    head = k.symbol_address("modules")
    off = k.offsetof("struct module", "list")
    if head is None or off is None:
        raise TargetError("no 'modules' list in the kernel debug info")
    for node in _walk(k, head, "modules", damage):
        address = node - off
        try:
            view = k.object("struct module", address)
        except MemoryReadError:  # a back end that reads the whole struct at once
            damage.add(address, f"struct module at {address:#x} unreadable")
            continue
        yield address, view


def module_regions(k: KernelAccess, mod: StructView) -> list[tuple[int, int]]:
    """``[start, end)`` of all of a module's memory (drgn's ``module_address_regions``)."""
    mems = mod.member("mem")
    if mems is not None:
        # Since 6.4, ac3b43283923 ("module: replace module_layout with module_memory")
        n = k.constant("MOD_MEM_NUM_TYPES") or 0
        pairs = [(_member_int(mems.element(i), "base"), _member_int(mems.element(i), "size"))
                 for i in range(n)]
    else:
        core, init = mod.member("core_layout"), mod.member("init_layout")
        if core is not None and init is not None:
            pairs = [(_member_int(x, "base"), _member_int(x, "size")) for x in (core, init)]
        else:
            # Before 4.5, 7523e4dc5057 ("module: use a structure to encapsulate
            # layout."): module_core/core_size in struct module.
            pairs = [(_member_int(mod, f"module_{x}"), _member_int(mod, f"{x}_size"))
                     for x in ("core", "init")]
    return [(b, b + s) for b, s in pairs if b and s]


def module_text_ranges(k: KernelAccess, mod: StructView) -> list[tuple[int, int]]:
    """``[start, end)`` of the module's executable memory (core and init text)."""
    ranges = []
    mems = mod.member("mem")
    if mems is not None:
        # Since 6.4, ac3b43283923 ("module: replace module_layout with
        # module_memory"): mod->mem[MOD_TEXT], mod->mem[MOD_INIT_TEXT].
        for kind in ("MOD_TEXT", "MOD_INIT_TEXT"):
            index = k.constant(kind)
            if index is None:
                continue
            mem = mems.element(index)
            base, size = _member_int(mem, "base"), _member_int(mem, "size")
            if base and size:
                ranges.append((base, base + size))
        return ranges
    core, init = mod.member("core_layout"), mod.member("init_layout")
    if core is not None and init is not None:
        pairs = [(_member_int(x, "base"), _member_int(x, "text_size")) for x in (core, init)]
    else:
        # Before 4.5, 7523e4dc5057 ("module: use a structure to encapsulate
        # layout."): module_core/core_text_size in struct module.
        pairs = [(_member_int(mod, f"module_{x}"), _member_int(mod, f"{x}_text_size"))
                 for x in ("core", "init")]
    return [(b, b + s) for b, s in pairs if b and s]


def _member_int(view: StructView, name: str) -> int:
    m = view.member(name)
    if m is None:
        raise TargetError(f"no member '{name}' where the kernel layout needs one")
    return m.integer()


def sect_attrs_sections(k: KernelAccess, mod: StructView) -> dict[str, int]:
    """Section addresses from ``mod->sect_attrs`` (``/sys/module/<m>/sections``)."""
    attrs = mod.member("sect_attrs")  # None: !CONFIG_KALLSYMS || !CONFIG_SYSFS
    if attrs is None or not attrs.integer():
        return {}
    out: dict[str, int] = {}
    nsections = attrs.member("nsections")
    if nsections is None:
        # 7.x ("module: sysfs: use bin_attribute::private for section
        # addresses"; not in 6.12, docs/kernel-facts.md): attrs[] are
        # bin_attributes, the address is in ->private and grp.bin_attrs is
        # NULL-terminated.
        grp = attrs.member("grp")
        battrs = None if grp is None else (grp.member("bin_attrs_new") or grp.member("bin_attrs"))
        if battrs is None:
            return {}
        bulk = _bin_attrs_bulk(k, battrs)
        if bulk is not None:
            return bulk
        for i in range(MAX_SECTIONS):
            battr = battrs.element(i)
            if not battr.integer():
                break
            out[_attr_name(battr)] = _member_int(battr, "private")
        return out
    # 5.8 ... 6.x: struct module_sect_attr { struct bin_attribute battr; unsigned long address; }
    n = nsections.integer()
    if not 0 <= n <= MAX_SECTIONS:
        raise ModuleDamaged(f"mod->sect_attrs->nsections is {n}")
    array = attrs.member("attrs")
    if array is None:
        return {}
    bulk = _sect_attrs_bulk(k, array.address(), n)
    if bulk is not None:
        return bulk
    for i in range(n):
        a = array.element(i)
        inner = a.member("battr")
        if inner is not None:
            out[_attr_name(inner)] = _member_int(a, "address")
            continue
        # Before 5.8, ed66f991bb19 ("module: Refactor section attr into bin
        # attribute"): struct module_sect_attr { struct module_attribute mattr;
        # char *name; unsigned long address; }.
        name = a.member("name")
        if name is None:
            return out
        out[name.string()] = _member_int(a, "address")
    return out


# The section tables in few reads: the attribute array (or the pointer array
# and each bin_attribute) whole, and each name up to its page's end, instead of
# a read per member (~15 us each with drgn: ~1,200 sections on a distribution
# kernel).  Where a layout is not known, the member-wise walk below answers.


def _words(k: KernelAccess, raw: bytes, offsets: Iterable[int]) -> list[int]:
    order: Literal["little", "big"] = "little" if k.byteorder == "little" else "big"
    return [int.from_bytes(raw[o : o + 8], order) for o in offsets]


def read_c_string(read: Callable[[int, int], bytes], address: int, limit: int = 4096) -> str:
    """The NUL-terminated string at ``address`` (at most ``limit`` bytes of it),
    read up to a (4 KiB) page end at a time, so that a string at the end of a
    page reads where the next page is not in the dump; what a ``char *``
    member reads as (``StructView.string``).

    :param read: ``read(address, size) -> bytes`` (``KernelAccess.read``)
    """
    data = b""
    while len(data) < limit:
        at = address + len(data)
        chunk = read(at, min(4096 - at % 4096, limit - len(data)))
        nul = chunk.find(b"\0")
        if nul >= 0:
            return (data + chunk[:nul]).decode("utf-8", "replace")
        data += chunk
    return data.decode("utf-8", "replace")


def _c_string(k: KernelAccess, address: int) -> str:
    return read_c_string(k.read, address)


def _sect_attrs_bulk(k: KernelAccess, array: int, n: int) -> dict[str, int] | None:
    """``struct module_sect_attr attrs[n]`` (5.8-6.x) at ``array`` in one read."""
    ty = "struct module_sect_attr"
    size = k.type_size(ty)
    name_at, addr_at = k.offsetof(ty, "battr.attr.name"), k.offsetof(ty, "address")
    if not size or name_at is None or addr_at is None:
        return None
    raw = k.read(array, n * size) if n else b""
    out: dict[str, int] = {}
    for i in range(n):
        name, address = _words(k, raw, (i * size + name_at, i * size + addr_at))
        out[_c_string(k, name)] = address
    return out


def _bin_attrs_bulk(k: KernelAccess, battrs: StructView) -> dict[str, int] | None:
    """The NULL-terminated ``struct bin_attribute *`` array ``battrs`` (7.x): the
    array, then each attribute, in one read each."""
    ty = "struct bin_attribute"
    size = k.type_size(ty)
    name_at, private_at = k.offsetof(ty, "attr.name"), k.offsetof(ty, "private")
    if not size or name_at is None or private_at is None:
        return None
    pointers = battrs.integer()
    if not pointers:
        return None
    out: dict[str, int] = {}
    # in chunks that end where its page does, as many pointers as are there
    found: list[int] = []
    while len(found) < MAX_SECTIONS:
        at = pointers + 8 * len(found)
        chunk = k.read(at, min(4096 - at % 4096, 8 * (MAX_SECTIONS - len(found))))
        words = _words(k, chunk, range(0, len(chunk) - 7, 8))
        if 0 in words:
            found.extend(words[: words.index(0)])
            break
        found.extend(words)
    for battr in found:
        name, private = _words(k, k.read(battr, size), (name_at, private_at))
        out[_c_string(k, name)] = private
    return out


def _attr_name(battr: StructView) -> str:
    attr = battr.member("attr")
    name = attr.member("name") if attr is not None else None
    if name is None:
        raise TargetError("struct bin_attribute has no attr.name")
    return name.string()


def klp_sechdrs(k: KernelAccess, mod: StructView) -> list[tuple[str, int, int, int]]:
    """``(name, sh_addr, sh_size, sh_flags)`` of every section of a livepatch module.

    ``mod->klp_info`` keeps the module's ELF section headers with their final
    addresses (``copy_module_elf()``, CONFIG_LIVEPATCH).  One read for the
    whole header table.
    """
    klp = mod.member("klp")
    if klp is None or not klp.integer():
        return []
    info = mod.member("klp_info")
    if info is None or not info.integer():
        return []
    hdr = info.member("hdr")
    shnum = _opt_int(hdr, "e_shnum") or 0
    shstrndx = _opt_int(hdr, "e_shstrndx") or 0
    sechdrs, secstrings = _opt_int(info, "sechdrs"), _opt_int(info, "secstrings")
    if not shnum or not sechdrs or not secstrings or not 0 < shstrndx < shnum:
        return []
    raw = k.read(sechdrs, shnum * ELF64_SHDR_SIZE)
    shdrs = list(shdr_struct(k.byteorder).iter_unpack(raw))
    strtab = k.read(secstrings, shdrs[shstrndx][5])
    out = []
    for sh in shdrs[1:]:
        start = sh[0]
        name = strtab[start : strtab.find(b"\0", start)]
        out.append((name.decode("ascii", "replace"), sh[3], sh[5], sh[2]))
    return out


def module_section_addresses(
    k: KernelAccess, mod: StructView, klp: Sequence[tuple[str, int, int, int]] | None = None
) -> dict[str, int]:
    """Section name -> load address of a module.

    From ``mod->sect_attrs`` (what sysfs shows: every ``SHF_ALLOC`` section
    with a size), else from ``klp_info`` for a livepatch module.
    """
    secs = sect_attrs_sections(k, mod)
    if not secs:
        if klp is None:
            klp = klp_sechdrs(k, mod)
        secs = {name: addr for name, addr, _size, flags in klp if flags & _SHF_ALLOC and addr}
    return secs


def module_section_sizes(
    k: KernelAccess, mod: StructView, klp: Sequence[tuple[str, int, int, int]] | None = None
) -> dict[str, int]:
    """Section name -> size, known only for livepatch modules (``klp_info``)."""
    if klp is None:
        klp = klp_sechdrs(k, mod)
    return {name: size for name, addr, size, flags in klp if flags & _SHF_ALLOC and addr}


def module_info(k: KernelAccess, address: int, mod: StructView) -> ModuleInfo:
    """Plain facts about one ``struct module``."""
    arch = mod.member("arch")
    klp = klp_sechdrs(k, mod)
    livepatch_member = mod.member("klp")  # None: !CONFIG_LIVEPATCH
    name = mod.member("name")
    return make_module_info(
        name=name.string() if name is not None else "",
        text_ranges=module_text_ranges(k, mod),
        sections=module_section_addresses(k, mod, klp),
        section_sizes=module_section_sizes(k, mod, klp),
        arch=lambda member: _opt_int(arch, member),
        livepatch=bool(livepatch_member.integer()) if livepatch_member is not None else False,
        address=address,
    )


def modules(
    k: KernelAccess, damage: Damage, prefetch: Callable[[StructView], None] | None = None
) -> Iterator[ModuleInfo]:
    """Every loaded module, in list order; an unreadable one is left out and recorded.

    :param prefetch: called with each ``struct module`` before it is decoded (a
        back end that reads the module's memory into its cache in one go)
    """
    for address, mod in module_structs(k, damage):
        try:
            if prefetch is not None:
                prefetch(mod)
            yield module_info(k, address, mod)
        except MemoryReadError:
            damage.add(address, f"struct module at {address:#x} unreadable")
        except ModuleDamaged as err:
            damage.add(address, f"struct module at {address:#x} damaged: {err}")


@dataclass
class ModuleOwners:
    """Which module's memory an address is in: a bisect over every module region."""

    ranges: list[tuple[int, int, str, int]]

    def __post_init__(self) -> None:
        self.ranges.sort()
        self._starts = [r[0] for r in self.ranges]

    @classmethod
    def build(cls, k: KernelAccess, damage: Damage) -> ModuleOwners:
        ranges = []
        for address, mod in module_structs(k, damage):
            try:
                name = mod.member("name")
                text = name.string() if name is not None else ""
                for start, end in module_regions(k, mod):
                    ranges.append((start, end, text, address))
            except (MemoryReadError, TargetError):
                continue
        return cls(ranges)

    def owner(self, address: int) -> tuple[str, int | None]:
        """``(module name, struct module address)``, or ``("vmlinux", None)``."""
        i = bisect.bisect_right(self._starts, address) - 1
        if i >= 0 and self.ranges[i][0] <= address < self.ranges[i][1]:
            return self.ranges[i][2], self.ranges[i][3]
        return "vmlinux", None

    def regions(self, mod_addr: int) -> list[tuple[int, int]]:
        """The memory regions of the ``struct module`` at ``mod_addr``."""
        return [(s, e) for s, e, _n, a in self.ranges if a == mod_addr]


def module_kallsyms(k: KernelAccess, owners: ModuleOwners, mod_addr: int) -> ElfSymbols:
    """The kallsyms (``mod->kallsyms``) of the ``struct module`` at ``mod_addr``
    that name its own memory, indexed.

    Two bulk reads (its ``Elf64_Sym`` array, then its string table up to the
    last name), so naming one module's addresses costs the same however many
    modules are loaded.  A livepatch module also keeps its resolved
    undefined/klp symbols (type ``u``) pointing elsewhere: only addresses in
    its own regions count.  A module whose kallsyms cannot be read has no names.
    """
    # [start, end) of the module's regions, merged: one bisect a symbol
    spans: list[list[int]] = []
    for start, end in sorted(owners.regions(mod_addr)):
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        elif start < end:
            spans.append([start, end])
    starts, ends = [sp[0] for sp in spans], [sp[1] for sp in spans]
    try:
        tables = _kallsyms_tables(k, mod_addr)
    except (MemoryReadError, TargetError):
        tables = None
    if tables is None:
        return ElfSymbols([])
    symtab, strtab = tables
    # Aliases (zram_init / init_module): the first in table order, as the
    # kernel's find_kallsyms_symbol() and drgn's SymbolIndex over
    # module_kallsyms() pick; not the higher binding (all LOCAL).  Names stay
    # strtab offsets, decoded for the symbols an address is named by.
    columns = parse_elf_columns_within(symtab, k.byteorder, starts, ends)
    return ElfSymbols.from_columns(columns, None, (), strtab)


def name_from_module_kallsyms(
    addresses: Sequence[int],
    batches: Mapping[int, tuple[str, list[int]]],
    kallsyms: Callable[[int], ElfSymbols],
    out: list[SymbolInfo | None],
) -> None:
    """Name module addresses from their modules' kallsyms, a module at a time.

    :param batches: ``struct module *`` -> (its name, the indexes of
        ``addresses`` in it)
    :param kallsyms: the back end's cached :func:`module_kallsyms` of a module
    :param out: ``out[i]`` set for each index named (left as is otherwise)
    """
    make = SymbolInfo.make
    for mod_addr, (owner, where) in batches.items():
        if not where:
            continue
        table = kallsyms(mod_addr)
        hits = table.lookup_many([addresses[i] for i in where])
        for i, hit in zip(where, hits, strict=True):
            if hit is not None:
                start, size, name = hit
                out[i] = make(name, start, size or table.size_to_next(start), owner)


def _kallsyms_tables(k: KernelAccess, mod_addr: int) -> tuple[bytes, bytes] | None:
    """``(Elf64_Sym array, string table)`` of a module's kallsyms, or ``None``."""
    mod = k.object("struct module", mod_addr)
    # Before 4.5 (commit 8244062ef1e5 "modules: fix longstanding
    # /proc/kallsyms vs module insertion race.") the fields were in
    # struct module.
    ks = mod.member("kallsyms") or mod
    num = ks.member("num_symtab")
    symtab_view, strtab_view = ks.member("symtab"), ks.member("strtab")
    if num is None or symtab_view is None or strtab_view is None:
        return None
    n, symtab_addr, strtab_addr = num.integer(), symtab_view.integer(), strtab_view.integer()
    if not n or not symtab_addr or not strtab_addr or n > MAX_LIST:
        return None
    merged = _kallsyms_one_read(k, ks, n, symtab_addr, strtab_addr)
    if merged is not None:
        return merged
    symtab = k.read(symtab_addr, n * ELF64_SYM_SIZE)
    heads = sym_words(symtab, k.byteorder)[0]  # the st_name of each: the last name's end
    last = max(map((0xFFFFFFFF).__and__ if k.byteorder == "little" else (32).__rrshift__, heads))
    strtab = k.read(strtab_addr, last + 1)
    while strtab.find(b"\0", last) < 0 and len(strtab) < last + 4096:
        strtab = k.read(strtab_addr, len(strtab) + 64)
    return symtab, strtab


# Longest string table read together with its symbols (:func:`_kallsyms_one_read`).
_MAX_KALLSYMS_STRTAB = 1 << 24


def _kallsyms_one_read(
    k: KernelAccess, ks: StructView, n: int, symtab_addr: int, strtab_addr: int
) -> tuple[bytes, bytes] | None:
    """``(Elf64_Sym array, string table)`` of a module's core kallsyms in one read,
    where the tables are laid out back to back.

    ``add_kallsyms()`` puts ``core_kallsyms`` at the end of the module's data
    as ``symtab``, ``strtab``, ``typetab`` one after the other (the string
    table is ``core_typeoffs - stroffs`` bytes); ``typetab`` exists since
    1c7651f43777 ("kallsyms: store type information in its own array",
    v5.2).  ``None`` where the layout is not that (the init kallsyms of a
    module still loading, an older kernel) or the span cannot be read: the
    caller reads the two tables apart, with the same result.
    """
    typetab = ks.member("typetab")
    end = typetab.integer() if typetab is not None else 0
    span = n * ELF64_SYM_SIZE
    if strtab_addr != symtab_addr + span or not strtab_addr < end <= strtab_addr + (
        _MAX_KALLSYMS_STRTAB
    ):
        return None
    try:
        both = k.read(symtab_addr, end - symtab_addr)
    except MemoryReadError:
        return None
    symtab, strtab = both[:span], both[span:]
    heads = sym_words(symtab, k.byteorder)[0]  # the st_name of each: the last name's end
    last = max(map((0xFFFFFFFF).__and__ if k.byteorder == "little" else (32).__rrshift__, heads))
    if strtab.find(b"\0", last) < 0:
        return None  # a name running past the table: the reads apart decide
    return symtab, strtab


# -- tasks ---------------------------------------------------------------------------------


def task_structs(k: KernelAccess, damage: Damage) -> Iterator[tuple[int, StructView]]:
    """Every thread of every process (``for_each_process_thread``), not the idle tasks."""
    init_task = k.symbol_address("init_task")
    tasks_off = k.offsetof("struct task_struct", "tasks")
    if init_task is None or tasks_off is None:
        raise TargetError("no 'init_task' in the kernel debug info")
    # Since v3.14, 0c740d0afc3b ("introduce for_each_thread() to replace the buggy
    # while_each_thread()"): signal->thread_head + task->thread_node.
    node_off = k.offsetof("struct task_struct", "thread_node")
    head_off = k.offsetof("struct signal_struct", "thread_head")
    signal_off = k.offsetof("struct task_struct", "signal")
    group_off = k.offsetof("struct task_struct", "thread_group")
    for node in _walk(k, init_task + tasks_off, "task", damage):
        leader = node - tasks_off
        if node_off is not None and head_off is not None and signal_off is not None:
            try:
                signal = _u64(k, leader + signal_off)
            except MemoryReadError:
                damage.add(leader, f"task_struct at {leader:#x} unreadable")
                continue
            threads = [n - node_off for n in _walk(k, signal + head_off, "thread", damage)]
        elif group_off is not None:
            threads = [leader] + [
                n - group_off for n in _walk(k, leader + group_off, "thread_group", damage)
            ]
        else:
            threads = [leader]
        for task in threads:
            try:
                view = k.object("struct task_struct", task)
            except MemoryReadError:
                damage.add(task, f"task_struct at {task:#x} unreadable")
                continue
            yield task, view


def online_cpus(k: KernelAccess) -> list[int]:
    """The CPUs set in ``__cpu_online_mask`` (``cpu_online_mask``), below ``nr_cpu_ids``."""
    mask = k.variable("__cpu_online_mask")
    bits = mask.member("bits") if mask is not None else None
    count = k.variable("nr_cpu_ids")
    if bits is None or count is None:
        return []
    n = count.integer()
    if not 0 < n <= 1 << 16:
        return []
    cpus: list[int] = []
    for word in range((n + 63) // 64):
        value = bits.element(word).integer()
        cpus.extend(word * 64 + b for b in range(64) if value >> b & 1 and word * 64 + b < n)
    return cpus


def idle_task_structs(k: KernelAccess, damage: Damage) -> Iterator[tuple[int, StructView]]:
    """The idle task (``swapper/N``, pid 0) of each online CPU: ``per_cpu(runqueues,
    cpu).idle``.  ``livepatch_handler`` pushes onto the *current* task's livepatch
    stack, so an interrupt on an idle CPU pushes onto its idle task's (drgn's
    ``for_each_task(idle=True)`` lists them the same way)."""
    runqueues = k.symbol_address("runqueues")
    offsets = k.variable("__per_cpu_offset")
    if runqueues is None or offsets is None or k.offsetof("struct rq", "idle") is None:
        return
    try:
        cpus = online_cpus(k)
    except MemoryReadError:
        damage.add(None, "cpu_online_mask unreadable: idle tasks left out")
        return
    for cpu in cpus:
        try:
            rq = k.object("struct rq", runqueues + offsets.element(cpu).integer())
            idle = rq.member("idle")
            address = idle.integer() if idle is not None else 0
            if not address:
                continue
            view = k.object("struct task_struct", address)
        except MemoryReadError:
            damage.add(None, f"idle task of CPU {cpu} unreadable")
            continue
        yield address, view


def task_info(k: KernelAccess, address: int, task: StructView, stack_size: int) -> TaskInfo:
    """Plain facts about one ``struct task_struct``."""
    stack = _member_int(task, "stack")
    ti: StructView | None = task.member("thread_info")  # CONFIG_THREAD_INFO_IN_TASK
    in_task = ti is not None
    ti_size = 0
    if ti is None:
        # thread_info at the bottom of the stack; the livepatch stack starts above it.
        ti = k.object("struct thread_info", stack)
        ti_size = k.type_size("struct thread_info") or 0
    thread = task.member("thread")
    comm = task.member("comm")
    return TaskInfo(
        pid=_member_int(task, "pid"),
        comm=comm.string() if comm is not None else "",
        stack=stack,
        stack_size=stack_size,
        livepatch_sp=_opt_int(ti, "livepatch_sp"),
        thread_info_in_task=in_task,
        thread_info_size=ti_size,
        ksp=_opt_int(thread, "ksp"),
        address=address,
    )


#: the ``pid`` of an interrupt stack's entry in :func:`tasks` (it is no task)
IRQ_STACK_PID = -1


def irq_stacks(k: KernelAccess, stack_size: int, damage: Damage) -> list[TaskInfo]:
    """Before ``THREAD_INFO_IN_TASK``: each CPU's interrupt stacks, as task-like entries.

    There, ``livepatch_handler`` finds ``thread_info`` from r1, so a patched call
    made on an interrupt stack pushes onto that stack's own ``thread_info``
    livepatch stack (``irq_ctx_init()`` calls ``klp_init_thread_info()`` for each
    ``softirq_ctx``/``hardirq_ctx``; docs/kernel-facts.md §4).  With
    ``THREAD_INFO_IN_TASK`` interrupt stacks have none: nothing to walk.
    """
    if k.offsetof("struct task_struct", "thread_info") is not None:
        return []
    ti_size = k.type_size("struct thread_info") or 0
    out = []
    try:
        cpus = online_cpus(k)
    except MemoryReadError:
        return []
    for name in ("hardirq_ctx", "softirq_ctx"):
        array = k.variable(name)  # struct thread_info *[NR_CPUS]
        if array is None:
            continue
        for cpu in cpus:
            try:
                base = array.element(cpu).integer()
                if not base:
                    continue
                ti = k.object("struct thread_info", base)
                out.append(TaskInfo(
                    pid=IRQ_STACK_PID,
                    comm=f"{name}/{cpu}",
                    stack=base,
                    stack_size=stack_size,
                    livepatch_sp=_opt_int(ti, "livepatch_sp"),
                    thread_info_in_task=False,
                    thread_info_size=ti_size,
                ))
            except MemoryReadError:
                damage.add(None, f"{name}[{cpu}] unreadable")
    return out


def tasks(k: KernelAccess, damage: Damage) -> list[TaskInfo]:
    """Every task (threads included) and each online CPU's idle task, by pid (the idle
    tasks first, in CPU order), after the interrupt stacks of kernels before
    ``THREAD_INFO_IN_TASK`` (:func:`irq_stacks`); unreadable ones left out and recorded."""
    size = thread_size(k)
    out = []
    for address, task in itertools.chain(idle_task_structs(k, damage), task_structs(k, damage)):
        try:
            out.append(task_info(k, address, task, size))
        except MemoryReadError:
            damage.add(address, f"task_struct at {address:#x} unreadable")
    out.sort(key=lambda t: t.pid)
    return irq_stacks(k, size, damage) + out
