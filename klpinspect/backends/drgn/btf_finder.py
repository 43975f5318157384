"""drgn type, object and symbol finders from the kernel's own BTF and kallsyms.

A vmcore of a kernel built with ``CONFIG_DEBUG_INFO_BTF`` carries its types
(between ``__start_BTF`` and ``__stop_BTF``) and, since 6.0, VMCOREINFO names
its kallsyms tables.  With these drgn needs no debug file:

* symbols: vmlinux's kallsyms (found through VMCOREINFO: commit f09bddbd8661
  "vmcoreinfo: add kallsyms_num_syms symbol", 6.0) as a symbol finder,
  decoded lazily (:mod:`klpinspect.backends.drgn.kallsyms`), else by drgn's
  own ``load_vmlinux_kallsyms()``; module symbols come from each ``struct module``'s
  kallsyms (:class:`klpinspect.backends.drgn.target.DrgnTarget` adds those);
* types: :class:`KernelBtf` turns BTF types into ``drgn.Type`` on demand
  (vmlinux's, then, for names vmlinux lacks, the modules' split BTF read from
  ``mod->btf_data``/``btf_data_size``: ``CONFIG_DEBUG_INFO_BTF_MODULES``);
* objects: BTF ``VAR`` (per-CPU variables: pahole encodes only those before
  its ``global_var`` feature) and ``FUNC`` records typed, kallsyms addressed;
  enumerators as constants; and for the globals klpinspect and drgn's helpers
  use that BTF does not describe, their C type from :data:`KNOWN_GLOBALS`.

What BTF cannot give: line numbers, inlined frames (stack traces show only
real frames), local variables and parameters, and static variables that are
not per-CPU.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import drgn
from drgn import (
    Object,
    Program,
    Qualifiers,
    Type,
    TypeEnumerator,
    TypeKind,
    TypeMember,
    TypeParameter,
)

from klpinspect.backends.btflayout import KNOWN_GLOBALS
from klpinspect.btf import Btf, BtfError, BtfKind

__all__ = (
    "KNOWN_GLOBALS",
    "LAYOUT_NAMES",
    "KallsymsSymbols",
    "KernelBtf",
    "debuginfo_hint",
    "debuginfo_source",
    "disable_kallsyms_symbols",
    "enable_btf",
    "has_kernel_dwarf",
    "kallsyms_symtab",
    "kernel_btf",
    "load_vmlinux_kallsyms",
    "register_lazy_btf",
    "retire_lazy_finders",
)

# KNOWN_GLOBALS: the C types of kernel globals BTF does not describe (shared
# with the gdb back end's BTF types: klpinspect.backends.btflayout)

_CACHE_KEY = "klpinspect_btf"
_FINDER = "klpinspect_btf"
_KALLSYMS = "klpinspect_vmlinux_kallsyms"
_LAZY = "klpinspect_btf_lazy"  # the drgn plugin's finders (register_lazy_btf)

_QUALIFIERS = {
    BtfKind.CONST: Qualifiers.CONST,
    BtfKind.VOLATILE: Qualifiers.VOLATILE,
    BtfKind.RESTRICT: Qualifiers.RESTRICT,
}
# Sizes a base type can have (an enum of size 0 is a declaration)
_SIZES = {
    BtfKind.INT: (1, 2, 4, 8, 16),
    BtfKind.FLOAT: (2, 4, 8, 12, 16),
    BtfKind.ENUM: (0, 1, 2, 4, 8),
    BtfKind.ENUM64: (0, 1, 2, 4, 8),
}
_AGGREGATE_KINDS = {
    TypeKind.STRUCT: (BtfKind.STRUCT,),
    TypeKind.UNION: (BtfKind.UNION,),
    TypeKind.ENUM: (BtfKind.ENUM, BtfKind.ENUM64),
    TypeKind.TYPEDEF: (BtfKind.TYPEDEF,),
    TypeKind.INT: (BtfKind.INT,),
    TypeKind.BOOL: (BtfKind.INT,),
    TypeKind.FLOAT: (BtfKind.FLOAT,),
}


_DEBIAN_FLAVOURS = (
    r"(-rt|-cloud)?-(powerpc64le(-64k)?|powerpc64|amd64|arm64(-16k)?|s390x|riscv64|"
    r"loong64|686(-pae)?|armmp(-lpae)?|marvell|rpi|mips64r2el|octeon|loongson-3|[45]kc-malta)"
)


def debuginfo_hint(release: str) -> str:
    """Where a distribution ships the debug vmlinux of kernel ``release``, or ``""``.

    :returns: text to append to an error message (``" (Debian: ...)"``)
    """
    # Debian: 6.1.0-28-powerpc64le, 6.12.48+deb13-powerpc64le
    if re.fullmatch(r"\d+\.\d+(\.\d+)?(-\d+|\+deb\d+)" + _DEBIAN_FLAVOURS, release):
        return f" (Debian: apt install linux-image-{release}-dbg)"
    # Ubuntu: 5.15.0-91-generic
    if re.fullmatch(r"\d+\.\d+\.\d+-\d+-[a-z0-9-]+", release):
        return f" (Ubuntu: linux-image-unsigned-{release}-dbgsym from ddebs.ubuntu.com)"
    # Fedora, RHEL and derivatives: 5.14.0-362.8.1.el9_3.ppc64le
    if re.fullmatch(r"\d+\.\d+\.\d+-[\w.]+\.(el\d+\w*|fc\d+)\.\w+", release):
        return f" (Fedora/RHEL: dnf debuginfo-install kernel-{release})"
    return ""


def has_kernel_dwarf(prog: Program) -> bool:
    """Whether drgn has debug info (DWARF) for vmlinux itself."""
    try:
        main = prog.main_module()
    except LookupError:
        return False
    return bool(main.debug_file_status == drgn.ModuleFileStatus.HAVE)


def debuginfo_source(prog: Program) -> str | None:
    """Where ``prog``'s kernel types and symbols come from: ``"dwarf"``,
    ``"btf+kallsyms"``, ``"btf+symtab"`` (a vmlinux given, its DWARF not
    needed) or ``None`` (neither, yet)."""
    if has_kernel_dwarf(prog):
        return "dwarf"
    if kernel_btf(prog) is not None:
        from klpinspect.backends.drgn.symtab_finder import symtab_symbols

        if symtab_symbols(prog) is not None:
            return "btf+symtab"
    if kernel_btf(prog) is None and _LAZY in prog.registered_type_finders():
        try:  # the drgn plugin's finders load the BTF on first use
            prog.type("struct list_head")
        except LookupError:
            pass
    if kernel_btf(prog) is not None:
        return "btf+kallsyms"
    return None


def _symbol_address(prog: Program, name: str) -> int | None:
    try:
        return int(prog.symbol(name).address)
    except LookupError:
        return None


# VMCOREINFO symbols drgn's kallsyms loader takes, in its order
# (drgn.helpers.linux.kallsyms._load_builtin_kallsyms, drgn 0.0.26-0.3.0)
_KALLSYMS_TABLES = (
    "kallsyms_names",
    "kallsyms_token_table",
    "kallsyms_token_index",
    "kallsyms_num_syms",
    "kallsyms_offsets",
    "kallsyms_relative_base",
    "kallsyms_addresses",
    "_stext",
)
_SYMBOL_LINE = re.compile(r"^SYMBOL\(([^)]+)\)=([A-Fa-f0-9]+)$", re.M)


def load_vmlinux_kallsyms(prog: Program) -> Any:
    """vmlinux's kallsyms as a symbol finder: klpinspect's lazy one
    (:func:`klpinspect.backends.drgn.kallsyms.load`) or, where that cannot
    read the tables, drgn's ``load_vmlinux_kallsyms(prog)``.

    The same C loader, called without importing ``drgn.helpers.linux``,
    whose package imports every Linux helper (25-30 ms, a tenth of an
    audit without debug files); the public helper if this drgn lacks it.
    """
    try:
        from _drgn import (  # type: ignore[import-not-found,unused-ignore]
            _linux_helper_load_builtin_kallsyms,
            _linux_helper_load_proc_kallsyms,
        )
    except ImportError:  # pragma: no cover (another drgn)
        from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms as public

        return public(prog)
    live = drgn.ProgramFlags.IS_LIVE | drgn.ProgramFlags.IS_LOCAL
    if prog.flags & live == live and os.geteuid() == 0:
        return _linux_helper_load_proc_kallsyms()
    # klpinspect's own: bulk reads, names decoded as look-ups need them
    from klpinspect.backends.drgn.kallsyms import load

    lazy = load(prog)
    if lazy is not None:
        return lazy
    text = prog["VMCOREINFO"].string_().decode("ascii")
    found = {m.group(1): int(m.group(2), 16) for m in _SYMBOL_LINE.finditer(text)}
    return _linux_helper_load_builtin_kallsyms(prog, *(found.get(n, 0) for n in _KALLSYMS_TABLES))


def _enable_vmlinux_kallsyms(prog: Program) -> None:
    """Add vmlinux kallsyms (from VMCOREINFO) as a symbol finder, once.

    :raises LookupError: if the kernel's kallsyms cannot be found or read
    """
    if _KALLSYMS in prog.registered_symbol_finders():
        return
    try:
        index = prog.cache.get(_KALLSYMS) or load_vmlinux_kallsyms(prog)
    except (ValueError, drgn.FaultError, LookupError, OSError, drgn.MissingDebugInfoError) as e:
        raise LookupError(
            f"no kallsyms in its VMCOREINFO (Linux 6.0+, commit f09bddbd8661: {e})"
        ) from None
    prog.register_symbol_finder(_KALLSYMS, index, enable_index=-1)
    prog.cache[_KALLSYMS] = index


# libdrgn's ELF binding precedence: GLOBAL = UNIQUE > WEAK > LOCAL = anything else
_RANK = {drgn.SymbolBinding.GLOBAL: 3, drgn.SymbolBinding.UNIQUE: 3, drgn.SymbolBinding.WEAK: 2}


def _underscores(name: str) -> int:
    return len(name) - len(name.lstrip("_"))


class KallsymsSymbols:
    """vmlinux address -> symbol from kallsyms, named as from the ELF ``.symtab``.

    The same ``lookup``/``size_to_next`` as :class:`~klpinspect.symtab.ElfSymbols`,
    over drgn's kallsyms index (a bisect in C).  kallsyms has no sizes: drgn
    gives each symbol the distance to the next one, so of several aliases
    only the last in kallsyms order has a size and is the one found.  Its
    aliases are candidates too, ranked as libdrgn ranks ELF symbols (global
    over weak: ``crc32_le_base`` over ``crc32_le``), then by table order,
    which kallsyms does not keep: ``scripts/kallsyms.c`` (``compare_symbols()``)
    moves names with more leading underscores after their aliases, while
    the ELF table keeps definition order, where the internal name usually
    comes first (``_mcount`` before ``mcount``), so more underscores win.

    :param index: drgn's kallsyms ``SymbolIndex`` of vmlinux
    """

    def __init__(self, prog: Program, index: Any) -> None:
        self._prog = prog
        self._index = index
        self._aliases: dict[int, list[drgn.Symbol]] | None = None

    def _alias_map(self) -> dict[int, list[drgn.Symbol]]:
        if self._aliases is None:
            aliases: dict[int, list[drgn.Symbol]] = {}
            for sym in self._index(self._prog, None, None, False):
                if not sym.size:
                    aliases.setdefault(int(sym.address), []).append(sym)
            self._aliases = aliases
        return self._aliases

    def lookup(self, address: int) -> tuple[int, int, str] | None:
        """``(start, size, name)`` of the symbol containing ``address``."""
        found = self._index(self._prog, None, address, True)
        if not found:
            return None
        sym = found[0]
        start = int(sym.address)
        candidates = [*self._alias_map().get(start, ()), sym]
        best = max(candidates, key=lambda c: (_RANK.get(c.binding, 0), _underscores(c.name)))
        return start, int(sym.size), str(best.name)

    def size_to_next(self, start: int) -> int:
        """Distance from ``start`` to the next symbol (kallsyms' own sizes)."""
        found = self._index(self._prog, None, start, True)
        return int(found[0].size) if found else 0


def kallsyms_symtab(prog: Program) -> KallsymsSymbols | None:
    """vmlinux's kallsyms as a :class:`KallsymsSymbols`, if loaded for ``prog``."""
    index = prog.cache.get(_KALLSYMS)
    if index is None:
        return None
    from klpinspect.backends.drgn.kallsyms import symtab_of

    return symtab_of(prog, index) or KallsymsSymbols(prog, index)


def _read_vmlinux_btf(prog: Program) -> Btf:
    """The kernel's BTF, read from ``__start_BTF`` .. ``__stop_BTF``
    (the running kernel: ``/sys/kernel/btf/vmlinux``, the same bytes).

    :raises LookupError: if the kernel has no BTF (or it cannot be read)
    """
    live = drgn.ProgramFlags.IS_LIVE | drgn.ProgramFlags.IS_LOCAL
    if prog.flags & live == live:
        # The running kernel exports the same bytes (CONFIG_DEBUG_INFO_BTF).
        try:
            with open("/sys/kernel/btf/vmlinux", "rb") as f:
                return Btf(f.read())
        except (OSError, BtfError):
            pass
    start = _symbol_address(prog, "__start_BTF")
    stop = _symbol_address(prog, "__stop_BTF")
    if start is None or stop is None or not 0 < stop - start < 1 << 30:
        raise LookupError(
            "the kernel has no BTF (no __start_BTF/__stop_BTF in kallsyms: "
            "CONFIG_DEBUG_INFO_BTF or CONFIG_KALLSYMS_ALL off)"
        )
    try:
        data = prog.read(start, stop - start)
    except drgn.FaultError as e:
        raise LookupError(f"the kernel's BTF is not in the dump: {e}") from None
    try:
        return Btf(data)
    except BtfError as e:
        raise LookupError(f"the kernel's BTF is damaged: {e}") from None


class KernelBtf:
    """``drgn.Type`` and ``drgn.Object`` from a kernel's BTF (vmlinux, then modules).

    :param prog: the kernel program
    :param vmlinux: vmlinux's BTF
    """

    def __init__(self, prog: Program, vmlinux: Btf) -> None:
        self.prog = prog
        self.vmlinux = vmlinux
        self._types: dict[tuple[int, int], Type] = {}
        self._converting: set[tuple[int, int]] = set()
        self._modules: list[Btf] | None = None
        self._loading_modules = False
        self._vars: dict[str, int] | None = None
        # find_type's answers by (name, kinds): drgn asks the finders again for
        # every Object(prog, "struct module", ...) (150 times in an audit)
        self._named: dict[tuple[str, frozenset[TypeKind]], Type | None] = {}
        # find_object's finds by (name, flags): MOD_TEXT & co. are asked per module
        self._objects: dict[tuple[str, int], Object] = {}
        self._ptr_size = (
            8
            if prog.platform is None
            else (8 if prog.platform.flags & drgn.PlatformFlags.IS_64_BIT else 4)
        )

    # --- BTF -> drgn.Type ------------------------------------------------------------

    def _key(self, btf: Btf, type_id: int) -> tuple[int, int]:
        # IDs below vmlinux's end are vmlinux's types in every split BTF.
        return (0 if type_id < self.vmlinux.end_id else id(btf), type_id)

    def drgn_type(self, btf: Btf, type_id: int) -> Type:
        """BTF type ``type_id`` of ``btf`` as a ``drgn.Type`` (cached)."""
        if type_id == 0:
            return self.prog.void_type()
        key = self._key(btf, type_id)
        found = self._types.get(key)
        if found is None:
            if key in self._converting:
                # Only members and parameters are lazy: a loop through
                # typedefs, qualifiers, arrays or pointers is damaged BTF.
                raise LookupError(f"BTF type {type_id} refers to itself: damaged BTF")
            self._converting.add(key)
            try:
                found = self._convert(btf, type_id)
            except (BtfError, ValueError, OverflowError, TypeError) as e:
                # BtfError is a ValueError; drgn's: a value its type cannot hold
                raise LookupError(f"damaged BTF: type {type_id}: {e}") from None
            finally:
                self._converting.discard(key)
            self._types[key] = found
        return found

    def _lazy(self, btf: Btf, type_id: int, bits: int = 0) -> Callable[[], Type | Object]:
        if not bits:
            return lambda: self.drgn_type(btf, type_id)

        def bit_field() -> Object:
            member_type = self.drgn_type(btf, type_id)
            try:
                return Object(self.prog, member_type, bit_field_size=bits)
            except (ValueError, OverflowError) as e:
                raise LookupError(f"damaged BTF: bit field of type {type_id}: {e}") from None

        return bit_field

    def _convert(self, btf: Btf, type_id: int) -> Type:
        prog = self.prog
        t = btf.type(type_id)
        k = t.kind
        if t.size not in _SIZES.get(k, (t.size,)):
            raise LookupError(f"damaged BTF: type {type_id} ({k.name}) of {t.size} bytes")
        if k == BtfKind.INT:
            info = t.int_info
            assert info is not None and t.size is not None
            if info.bool:
                return prog.bool_type(t.name, t.size)
            return prog.int_type(t.name, t.size, info.signed)
        if k == BtfKind.FLOAT:
            assert t.size is not None
            return prog.float_type(t.name, t.size)
        if k == BtfKind.PTR:
            return prog.pointer_type(self.drgn_type(btf, t.type or 0), self._ptr_size)
        if k == BtfKind.ARRAY:
            assert t.array is not None
            if btf.kind(btf.resolve(t.array.type)) in (BtfKind.UNKN, BtfKind.FUNC, BtfKind.VAR):
                raise LookupError(f"damaged BTF: type {type_id} is an array of void")
            elem = self.drgn_type(btf, t.array.type)
            # BTF writes both `x[]` and `x[0]` as 0 elements; DWARF tells
            # them apart.  Incomplete is the one that can be indexed.
            return prog.array_type(elem, t.array.nelems or None)
        if k in (BtfKind.STRUCT, BtfKind.UNION):
            if any(m.bitfield_size > 64 for m in t.members):
                raise LookupError(f"damaged BTF: type {type_id} has a bit field over 64 bits")
            for m in t.members:
                if btf.kind(btf.resolve(m.type)) in (BtfKind.UNKN, BtfKind.FUNC, BtfKind.VAR):
                    raise LookupError(f"damaged BTF: member {m.name!r} of type {type_id} is void")
            members = [
                TypeMember(self._lazy(btf, m.type, m.bitfield_size), m.name or None, m.bit_offset)
                for m in t.members
            ]
            make = prog.struct_type if k == BtfKind.STRUCT else prog.union_type
            return make(t.name or None, t.size or 0, members)
        if k in (BtfKind.ENUM, BtfKind.ENUM64):
            if not t.vlen and not t.size:
                return prog.enum_type(t.name or None)
            size = t.size or 4
            signed = t.is_signed_enum
            compat_name = {1: "char", 2: "short", 4: "int", 8: "long"}.get(size, "int")
            compat = prog.int_type(
                compat_name if signed else "unsigned " + compat_name, size, signed
            )
            return prog.enum_type(
                t.name or None,
                compat,
                [TypeEnumerator(e.name, e.value) for e in t.enumerators],
            )
        if k == BtfKind.FWD:
            want = BtfKind.UNION if t.kind_flag else BtfKind.STRUCT
            for cand in self._find_ids(t.name, (want,)):
                owner, cid = cand
                if owner.type(cid).members or owner.type(cid).size:
                    return self.drgn_type(owner, cid)
            if want == BtfKind.UNION:
                return prog.union_type(t.name or None)
            return prog.struct_type(t.name or None)
        if k == BtfKind.TYPEDEF:
            return prog.typedef_type(t.name, self.drgn_type(btf, t.type or 0))
        if k in _QUALIFIERS:
            inner = self.drgn_type(btf, t.type or 0)
            return inner.qualified(inner.qualifiers | _QUALIFIERS[k])
        if k in (BtfKind.TYPE_TAG, BtfKind.VAR):
            return self.drgn_type(btf, t.type or 0)
        if k == BtfKind.FUNC:
            return self.drgn_type(btf, t.type or 0)
        if k == BtfKind.FUNC_PROTO:
            params = list(t.params)
            variadic = bool(params) and params[-1].type == 0 and not params[-1].name
            if variadic:
                params = params[:-1]
            return prog.function_type(
                self.drgn_type(btf, t.type or 0),
                [TypeParameter(self._lazy(btf, p.type), p.name or None) for p in params],
                variadic,
            )
        raise LookupError(f"BTF type {type_id} ({k.name}) is not a C type")

    # --- look-ups -------------------------------------------------------------------------

    def module_btfs(self) -> list[Btf]:
        """Split BTF of every loaded module that has it (read once, on first use)."""
        if self._modules is None:
            if self._loading_modules:
                return []
            self._loading_modules = True
            try:
                self._modules = self._read_module_btfs()
            finally:
                self._loading_modules = False
        return self._modules

    def _read_module_btfs(self) -> list[Btf]:
        """Module BTF from the BPF subsystem's copies, else from ``mod->btf_data``.

        ``do_init_module()`` sets ``mod->btf_data`` to NULL once the module is
        live (``.BTF`` is not ``SHF_ALLOC``: freed with the init sections);
        ``btf_module_notify()`` has kept a copy by then: ``struct btf_module``
        on the ``btf_modules`` list (kernel/bpf/btf.c), ``->btf->data`` of
        ``->btf->data_size`` bytes.
        """
        prog = self.prog
        blobs: list[tuple[int, int]] = []
        seen: set[int] = set()
        try:
            from drgn.helpers.linux.list import list_for_each_entry

            head = Object(prog, "struct list_head", address=int(prog.symbol("btf_modules").address))
            for bm in list_for_each_entry("struct btf_module", head.address_of_(), "list"):
                btf = bm.btf
                blobs.append((int(btf.data.value_()), int(btf.data_size)))
                seen.add(int(bm.module.value_()))
        except (LookupError, AttributeError, drgn.FaultError):
            pass  # !CONFIG_DEBUG_INFO_BTF_MODULES or no BPF BTF list: try the modules
        try:
            from drgn.helpers.linux.module import for_each_module

            for mod in for_each_module(prog):
                if int(mod.value_()) in seen:
                    continue
                try:
                    blobs.append((int(mod.btf_data.value_()), int(mod.btf_data_size)))
                except (AttributeError, LookupError):
                    break  # no btf_data member: no module BTF in this kernel
        except (LookupError, drgn.FaultError):
            pass
        mods: list[Btf] = []
        for addr, size in blobs:
            if not addr or not 0 < size < 1 << 28:
                continue
            try:
                mods.append(Btf(prog.read(addr, size), base=self.vmlinux))
            except (drgn.FaultError, BtfError):
                continue  # unreadable or damaged: that module's own types stay unknown
        return mods

    def _find_ids(self, name: str, kinds: Sequence[BtfKind]) -> list[tuple[Btf, int]]:
        return [(self.vmlinux, i) for i in self.vmlinux.find(name, kinds)]

    def find_type(self, kinds: Any, name: str) -> Type | None:
        """A named type: ``kinds`` is drgn's ``TypeKindSet``; ``name`` a tag or type name."""
        key = (name, frozenset(kinds))
        try:
            return self._named[key]
        except KeyError:
            pass
        found = self._find_type(kinds, name)
        # Not found while the modules' BTF is being read: it may be there.
        if found is not None or not self._loading_modules:
            self._named[key] = found
        return found

    def _find_type(self, kinds: Any, name: str) -> Type | None:
        wanted: list[BtfKind] = []
        for tk, bks in _AGGREGATE_KINDS.items():
            if tk in kinds:
                wanted.extend(b for b in bks if b not in wanted)
        if not wanted:
            return None
        candidates = self._find_ids(name, wanted)
        if not candidates and not ({BtfKind.INT, BtfKind.FLOAT} & set(wanted)):
            for mod in self.module_btfs():
                candidates = [(mod, i) for i in mod.find(name, wanted) if i >= mod.start_id]
                if candidates:
                    break
        for btf, type_id in candidates:
            t = btf.type(type_id)
            if t.kind == BtfKind.INT:
                is_bool = bool(t.int_info and t.int_info.bool)
                if is_bool != (TypeKind.BOOL in kinds) and (TypeKind.INT not in kinds or is_bool):
                    continue
            if t.kind in (BtfKind.STRUCT, BtfKind.UNION) and not (t.members or t.size):
                continue  # prefer a complete definition
            return self.drgn_type(btf, type_id)
        if candidates:
            return self.drgn_type(*candidates[0])
        return None

    def _var_index(self) -> dict[str, int]:
        if self._vars is None:
            self._vars = {}
            for name, var_id in self.vmlinux.datasec_var_names():
                self._vars.setdefault(name, var_id)
        return self._vars

    def find_object(self, name: str, flags: drgn.FindObjectFlags) -> Object | None:
        """A global variable, function or enumerator constant named ``name``."""
        key = (name, int(flags.value))
        found = self._objects.get(key)
        if found is None:
            # Only what is found is kept: a miss may be found later (a module's
            # symbols, BTF read after the modules were).
            found = self._find_object(name, flags)
            if found is not None:
                self._objects[key] = found
        return found

    def _find_object(self, name: str, flags: drgn.FindObjectFlags) -> Object | None:
        prog = self.prog
        # a variable or function is at its kallsyms address: without one, only an
        # enumerator can answer (no search of the BTF strings for an asm label
        # this kernel lacks, such as _mcount or livepatch_handler)
        address = _symbol_address(prog, name) if flags & _ADDRESSED else None
        if flags & drgn.FindObjectFlags.VARIABLE and address is not None:
            var_id = self._var_index().get(name)
            spelled = KNOWN_GLOBALS.get(name)
            if var_id is not None:
                return Object(prog, self.drgn_type(self.vmlinux, var_id), address=address)
            if spelled is not None:
                try:
                    return Object(prog, prog.type(spelled), address=address)
                except LookupError:
                    return None
        if flags & drgn.FindObjectFlags.FUNCTION and address is not None:
            found = self._function(self.vmlinux, name)
            if found is not None:
                return found
        if flags & drgn.FindObjectFlags.CONSTANT:
            for type_id, value in self.vmlinux.find_enumerator(name):
                return Object(prog, self.drgn_type(self.vmlinux, type_id), value)
        if flags & drgn.FindObjectFlags.FUNCTION and address is not None:
            # a module's function: its split BTF, its kallsyms (no symbol, no
            # need to read every module's BTF)
            for mod in self.module_btfs():
                found = self._function(mod, name)
                if found is not None:
                    return found
        return None

    def _function(self, btf: Btf, name: str) -> Object | None:
        """Function ``name`` of ``btf`` itself (not its base) at its kallsyms address."""
        ids = [i for i in btf.find(name, [BtfKind.FUNC]) if i >= btf.start_id]
        if not ids:
            return None
        address = _symbol_address(self.prog, name)
        if address is None:
            return None
        return Object(self.prog, self.drgn_type(btf, ids[0]), address=address)


_ADDRESSED = drgn.FindObjectFlags.VARIABLE | drgn.FindObjectFlags.FUNCTION

# The names the kernel facts, the module list and the task walk look up in
# the BTF on every kernel (or find missing: asm labels, types of other kernel
# versions), searched for in one pass when the BTF is opened
# (Btf.prefetch_strings; tests/test_btf_dump.py checks an audit asks for no other)
LAYOUT_NAMES = (
    "uts_namespace", "paca_struct", "func_desc_t", "cpu_spec", "_mcount",
    "livepatch_handler", "interrupt_base_book3e", "thread_info", "module",
    "MOD_TEXT", "MOD_INIT_TEXT", "MOD_MEM_NUM_TYPES", "thread_union", "rq", "cpumask",
    "task_struct", "signal_struct", "dyn_ftrace", "ftrace_page", "klp_patches",
    "module_sect_attr", "bin_attribute",
)


def kernel_btf(prog: Program) -> KernelBtf | None:
    """The :class:`KernelBtf` enabled on ``prog``, if any."""
    found = prog.cache.get(_CACHE_KEY)
    return found if isinstance(found, KernelBtf) else None


def _enable_whole_kallsyms(prog: Program) -> bool:
    """Add vmlinux kallsyms as the symbol finder if they are whole: readable,
    and with the data symbols the object finder addresses variables by
    (``CONFIG_KALLSYMS_ALL``: ``init_task``).  ``False`` (and no finder) if not."""
    try:
        _enable_vmlinux_kallsyms(prog)
    except LookupError:
        return False
    if _symbol_address(prog, "init_task") is not None:
        return True
    disable_kallsyms_symbols(prog)
    return False


def disable_kallsyms_symbols(prog: Program) -> None:
    """Undo :func:`_enable_vmlinux_kallsyms` (the kernel's BTF or kallsyms
    proved unusable: drgn's own symbols from the DWARF's file instead)."""
    if _KALLSYMS in prog.enabled_symbol_finders():
        prog.set_enabled_symbol_finders(
            [f for f in prog.enabled_symbol_finders() if f != _KALLSYMS])


def enable_btf(
    prog: Program, symtab: str | None = None, bias: int = 0, *, elf_sizes: bool = True
) -> KernelBtf:
    """Make ``prog`` (a kernel program with no vmlinux DWARF) use BTF and kallsyms.

    Registers vmlinux kallsyms as a symbol finder, reads the kernel's BTF and
    registers type and object finders over it (after drgn's own).

    :param symtab: a vmlinux (or ``vmlinux.debug``) file whose ``.symtab``
        gives the symbols instead of kallsyms (its DWARF is not read:
        :mod:`klpinspect.backends.drgn.symtab_finder`); ``bias``: the kernel's
        ``KERNELOFFSET``, added to its addresses
    :param elf_sizes: ``False``: with ``symtab``, take the symbols from the
        kernel's own kallsyms all the same where they are whole, and leave the
        file's ``.symtab`` unparsed (0.1-0.2 s for a distribution vmlinux).
        The same build (the caller checks the build ID), so the same names
        (:class:`KallsymsSymbols`); only sizes differ: a kallsyms symbol runs
        to the next one, padding included, as in the kernel's ``%pS``
    :raises LookupError: if the kernel has no kallsyms in VMCOREINFO or no BTF
        (the text says which)
    :raises TargetError: if ``symtab`` has no symbol table
    """
    if symtab is None:
        _enable_vmlinux_kallsyms(prog)
    elif elf_sizes or not _enable_whole_kallsyms(prog):
        from klpinspect.backends.drgn.symtab_finder import enable_symtab_symbols

        enable_symtab_symbols(prog, symtab, bias)
    kbtf = kernel_btf(prog) or KernelBtf(prog, _read_vmlinux_btf(prog))
    kbtf.vmlinux.prefetch_strings(LAYOUT_NAMES)
    prog.cache[_CACHE_KEY] = kbtf

    def find_type(p: Program, kinds: Any, name: str, filename: str | None) -> Type | None:
        if filename:
            return None  # BTF names no source files
        return kbtf.find_type(kinds, name)

    def find_object(
        p: Program, name: str, flags: drgn.FindObjectFlags, filename: str | None
    ) -> Object | None:
        return kbtf.find_object(name, flags)

    if _FINDER not in prog.registered_type_finders():
        prog.register_type_finder(_FINDER, find_type, enable_index=-1)
    if _FINDER not in prog.registered_object_finders():
        prog.register_object_finder(_FINDER, find_object, enable_index=-1)
    return kbtf


def register_lazy_btf(prog: Program) -> None:
    """Register finders that switch to BTF + kallsyms on first use if vmlinux has no DWARF.

    For the drgn plugin: when drgn opens a kernel the debug info is not loaded
    yet, so the decision is taken at the first type, object or symbol that
    drgn's own finders do not find.  With vmlinux DWARF loaded, or once
    :func:`enable_btf` registered its own finders, they answer nothing.
    """
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        return
    # busy: loading kallsyms ("symbols") or the BTF ("types"), no re-entry
    state: dict[str, Any] = {"symbols": False, "types": False, "failed": False}

    def active(what: str) -> bool:
        if state[what] or state["failed"] or _FINDER in prog.registered_type_finders():
            return False
        try:
            main = prog.main_module()
        except LookupError:
            return False  # debug info not looked for yet: DWARF may still come
        return bool(main.debug_file_status != drgn.ModuleFileStatus.HAVE)

    def get_kallsyms() -> Any:
        index = prog.cache.get(_KALLSYMS)
        if index is None:
            state["symbols"] = True
            try:
                index = load_vmlinux_kallsyms(prog)
            except (
                ValueError,
                drgn.FaultError,
                LookupError,
                OSError,
                drgn.MissingDebugInfoError,
            ):
                state["failed"] = True
                return None
            finally:
                state["symbols"] = False
            prog.cache[_KALLSYMS] = index
        return index

    def get() -> KernelBtf | None:
        if state["symbols"] or not active("types"):
            return None
        kbtf = kernel_btf(prog)
        if kbtf is None:
            if get_kallsyms() is None:
                return None
            state["types"] = True
            try:
                kbtf = KernelBtf(prog, _read_vmlinux_btf(prog))
            except LookupError:
                state["failed"] = True
                return None
            finally:
                state["types"] = False
            prog.cache[_CACHE_KEY] = kbtf
        return kbtf

    def find_type(p: Program, kinds: Any, name: str, filename: str | None) -> Type | None:
        if filename:
            return None  # BTF names no source files
        kbtf = get()
        return kbtf.find_type(kinds, name) if kbtf is not None else None

    def find_object(
        p: Program, name: str, flags: drgn.FindObjectFlags, filename: str | None
    ) -> Object | None:
        kbtf = get()
        return kbtf.find_object(name, flags) if kbtf is not None else None

    def find_symbols(
        p: Program, name: str | None, address: int | None, one: bool
    ) -> Sequence[drgn.Symbol]:
        if not active("symbols") or _KALLSYMS in prog.registered_symbol_finders():
            return []
        index = get_kallsyms()
        if index is None:
            return []
        result: Sequence[drgn.Symbol] = index(p, name, address, one)
        if result or state.get("in_modules"):
            return result
        # Then the modules' own kallsyms (read once; needs struct module,
        # which is now found through BTF).
        mods = state.get("modules")
        if mods is None:
            state["in_modules"] = True  # no re-entry while reading them
            from drgn.helpers.linux.module import for_each_module

            from klpinspect.backends.drgn.modsyms import module_symbols

            try:
                mods = drgn.SymbolIndex(
                    [sym for mod in for_each_module(prog) for sym in module_symbols(mod)]
                )
            except (ValueError, drgn.FaultError, LookupError, AttributeError):
                mods = drgn.SymbolIndex([])
            finally:
                state["in_modules"] = False
            state["modules"] = mods
        found: Sequence[drgn.Symbol] = mods(p, name, address, one)
        return found

    if _LAZY not in prog.registered_type_finders():
        prog.register_type_finder(_LAZY, find_type, enable_index=-1)
    if _LAZY not in prog.registered_object_finders():
        prog.register_object_finder(_LAZY, find_object, enable_index=-1)
    if _LAZY not in prog.registered_symbol_finders():
        prog.register_symbol_finder(_LAZY, find_symbols, enable_index=-1)


def retire_lazy_finders(prog: Program) -> None:
    """Disable the drgn plugin's lazy finders (:func:`register_lazy_btf`) on ``prog``
    once they can only answer nothing: vmlinux DWARF is loaded, or :func:`enable_btf`
    registered its own finders (both are for good, and the lazy finders' ``active()``
    then says no to every type, object and symbol).

    Until disabled, each stays a Python call for every type, object or symbol that
    drgn's own finders miss: ~2 us an address for every module address named (an
    audit of Debian sid names ~12,000 out-of-line ftrace sites).
    """
    if _FINDER not in prog.registered_type_finders() and not has_kernel_dwarf(prog):
        return  # the lazy finders may still be the ones that switch to BTF
    for enabled, set_enabled in (
        (prog.enabled_type_finders, prog.set_enabled_type_finders),
        (prog.enabled_object_finders, prog.set_enabled_object_finders),
        (prog.enabled_symbol_finders, prog.set_enabled_symbol_finders),
    ):
        names = enabled()
        if _LAZY in names:
            set_enabled([name for name in names if name != _LAZY])
