"""The layout layer's type questions answered from the kernel's BTF.

The gdb back end asks gdb for types (``gdb.lookup_type``), and gdb expands
the DWARF compilation unit that defines each one: on the fixtures the first
expansion alone costs ~35 ms (the compressed ``.debug_loclists`` and
``.debug_rnglists`` are inflated whole), ``struct rq`` 12-43 ms (the
scheduler's units), ``struct dyn_ftrace`` 18 ms on Debian's 7.2: most of
``klp-audit``'s cost over gdb's own load.  A kernel built with
``CONFIG_DEBUG_INFO_BTF`` keeps the same types in BTF (pahole writes it from
that DWARF), in memory between ``__start_BTF`` and ``__stop_BTF``: read once
(2-5 MB) and scanned by :class:`klpinspect.btf.Btf` it answers the same
questions for a fraction of that.

:class:`BtfTypes` answers by name (``struct module``, ``func_desc_t``,
``unsigned long``), :class:`BtfTypeInfo` is one type with what the gdb back
end's struct view (:class:`klpinspect.backends.gdb.types.GdbView`) asks of
it, and :data:`KNOWN_GLOBALS` types the globals BTF does not describe.  A
name BTF does not answer for certain (absent, or two different types of that
name) is ``None``: the caller asks its debug info as before.  Pure: no drgn,
no gdb.
"""

from __future__ import annotations

import re

from klpinspect.btf import Btf, BtfError, BtfKind

__all__ = ("KNOWN_GLOBALS", "BtfTypeInfo", "BtfTypes")

# C types of kernel globals that BTF (pahole < 1.27 without global_var)
# does not describe but that klpinspect and drgn's helpers read.  The address
# comes from the symbol table; the type names are resolved through BTF.
KNOWN_GLOBALS: dict[str, str] = {
    "modules": "struct list_head",
    "init_task": "struct task_struct",
    "init_pid_ns": "struct pid_namespace",
    "init_uts_ns": "struct uts_namespace",
    "init_mm": "struct mm_struct",
    "paca_ptrs": "struct paca_struct **",
    "memblock": "struct memblock",
    "mod_tree": "struct mod_tree_root",
    "klp_patches": "struct list_head",
    "nr_cpu_ids": "unsigned int",
    "__cpu_online_mask": "struct cpumask",
    "__cpu_possible_mask": "struct cpumask",
    "__cpu_present_mask": "struct cpumask",
    "__cpu_active_mask": "struct cpumask",
    "jiffies_64": "u64",
    "jiffies": "unsigned long",
    "prb": "struct printk_ringbuffer *",
    "panic_cpu": "atomic_t",
    "crashing_cpu": "int",
    "slab_caches": "struct list_head",
    "vmap_area_list": "struct list_head",
    "mem_section": "struct mem_section **",
    "root_task_group": "struct task_group",
    "avenrun": "unsigned long [3]",
    "system_state": "enum system_states",
    "init_thread_union": "union thread_union",
    "linux_banner": "const char []",
    # read by libdrgn itself: ppc64 MMU type (radix or hash) for page-table
    # walks, per-CPU offsets, the crashed CPU
    "cur_cpu_spec": "struct cpu_spec *",
    "__per_cpu_offset": "unsigned long []",
    "contig_page_data": "struct pglist_data",
    "swapper_pg_dir": "pgd_t []",
}

# C spellings of base types -> the names DWARF (and so BTF) gives them
_BASE_NAMES = {
    "long": "long int",
    "unsigned long": "long unsigned int",
    "long long": "long long int",
    "unsigned long long": "long long unsigned int",
    "short": "short int",
    "unsigned short": "short unsigned int",
    "unsigned": "unsigned int",
}
_TAGS = {
    "struct": (BtfKind.STRUCT,),
    "union": (BtfKind.UNION,),
    "enum": (BtfKind.ENUM, BtfKind.ENUM64),
}
# "const char []", "struct paca_struct **", "unsigned long [3]"
_DECLARATOR = re.compile(r"(?:const |volatile )*(.*?)\s*(\**)\s*(?:\[(\d*)\])?")
_STRIPPED = (BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST, BtfKind.RESTRICT,
             BtfKind.TYPE_TAG)


class BtfTypeInfo:
    """One BTF type without typedefs and qualifiers, and what the gdb back
    end's struct view asks of it (the attributes of
    :class:`klpinspect.backends.gdb.types.TypeInfo`), answered as gdb answers
    them for the same DWARF type: ``sizeof(void)`` and a function's size are
    1, an enum is signed when one of its values is negative.

    :param type: always ``None`` (there is no ``gdb.Type``): every integer,
        enum and pointer has :attr:`signed` or :attr:`pointer` set
    """

    __slots__ = ("type", "size", "pointer", "aggregate", "signed", "_types", "_id",
                 "_fields", "_target")

    def __init__(
        self,
        types: BtfTypes,
        type_id: int | None,
        size: int = 0,
        pointer: bool = False,
        target: BtfTypeInfo | None = None,
    ) -> None:
        self.type = None
        self._types = types
        self._fields: dict[str, tuple[int, BtfTypeInfo] | None] = {}
        self._target = target
        self.aggregate = False
        self.signed: bool | None = None
        self.pointer = pointer
        self.size = size
        self._id = type_id
        if type_id is None:  # a pointer or an array made from a declarator
            return
        btf = types.btf
        kind = btf.kind(type_id)
        if kind in (BtfKind.UNKN, BtfKind.FUNC_PROTO, BtfKind.FUNC):
            self.size = 1
            return
        t = btf.type(type_id)
        if kind == BtfKind.PTR:
            self.pointer = True
            self.size = btf.sizeof(type_id)
        elif kind == BtfKind.ARRAY:
            try:
                self.size = btf.sizeof(type_id)
            except BtfError:  # of an incomplete type: gdb's size is 0 too
                self.size = 0
        elif kind in (BtfKind.STRUCT, BtfKind.UNION):
            self.aggregate = True
            self.size = t.size or 0
        elif kind == BtfKind.INT:
            self.size = t.size or 0
            assert t.int_info is not None
            self.signed = t.int_info.signed and not t.int_info.bool
        elif kind in (BtfKind.ENUM, BtfKind.ENUM64):
            self.size = t.size or 0
            self.signed = any(e.value < 0 for e in t.enumerators)
        elif t.size is not None:
            self.size = t.size

    def field(self, name: str) -> tuple[int, BtfTypeInfo] | None:
        """``(byte offset, type)`` of member ``name``, looking into anonymous
        members (a C member name is unique there: the gdb back end's
        ``find_field`` finds the same one)."""
        try:
            return self._fields[name]
        except KeyError:
            pass
        found = None
        if self.aggregate and self._id is not None:
            bits = self._types.member_bits(self._id, name)
            if bits is not None:
                found = (bits[0] // 8, self._types.info_of(bits[1]))
        self._fields[name] = found
        return found

    def target(self) -> BtfTypeInfo:
        """What a pointer points to (a declared struct completed by its tag), or an
        array's element type."""
        if self._target is None:
            assert self._id is not None
            btf = self._types.btf
            t = btf.type(self._id)
            inner = t.array.type if t.array is not None else t.type
            self._target = self._types.info_of(self._types.complete(inner or 0))
        return self._target


class BtfTypes:
    """Type questions by name over a kernel's BTF (see the module's text).

    :param btf: vmlinux's BTF (:class:`klpinspect.btf.Btf`)
    """

    def __init__(self, btf: Btf) -> None:
        self.btf = btf
        self._infos: dict[int, BtfTypeInfo] = {}
        self._named: dict[str, BtfTypeInfo | None] = {}
        self._members: dict[tuple[int, str], tuple[int, int] | None] = {}

    # --- names -------------------------------------------------------------------

    def _id_of(self, name: str) -> int | None:
        """The one type called ``name`` (``struct x``, a typedef or a base type);
        ``None`` where BTF has none, or several that differ."""
        tag, _sp, rest = name.partition(" ")
        btf = self.btf
        if tag in _TAGS:
            ids = btf.find(rest, _TAGS[tag])
            # a definition wins over declarations (FWD is another kind: not found)
            ids = [i for i in ids if btf.type(i).size or btf.type(i).vlen]
        else:
            base = _BASE_NAMES.get(name, name)
            ids = btf.find(base, [BtfKind.INT]) or btf.find(name, [BtfKind.TYPEDEF])
        if not ids:
            return None
        if len(ids) > 1:
            # the same type written twice (pahole's dedup missed it) is one answer;
            # two different layouts of one name are not: gdb decides
            shapes = {self._shape(i) for i in ids}
            if len(shapes) > 1:
                return None
        return ids[0]

    def _shape(self, type_id: int) -> tuple[object, ...]:
        """What :class:`BtfTypeInfo` reads of a type, for comparing two of a name."""
        t = self.btf.type(self.btf.resolve(type_id))
        return (t.kind, t.size, tuple((m.name, m.bit_offset, self.btf.resolve(m.type))
                                      for m in t.members), t.int_info, t.type)

    def info(self, name: str) -> BtfTypeInfo | None:
        """The type called ``name``, or ``None`` (see :meth:`_id_of`)."""
        try:
            return self._named[name]
        except KeyError:
            pass
        try:
            type_id = self._id_of(name)
            found = None if type_id is None else self.info_of(type_id)
        except BtfError:
            found = None
        self._named[name] = found
        return found

    def declared(self, c_type: str) -> BtfTypeInfo | None:
        """The type a declaration spells (``struct paca_struct **``, ``unsigned long
        []``, ``const char [3]``), or ``None`` where BTF does not know its base."""
        m = _DECLARATOR.fullmatch(c_type.strip())
        if m is None:
            return None
        base, stars, count = m.group(1), m.group(2), m.group(3)
        info = self.info(base)
        if info is None:
            return None
        for _ in stars:
            info = BtfTypeInfo(self, None, 8, pointer=True, target=info)
        if count is not None:
            info = BtfTypeInfo(self, None, int(count or 0) * info.size, target=info)
        return info

    def constant(self, name: str) -> int | None:
        """The value of enumerator ``name``; ``None`` where BTF has none, or
        several enumerators of that name with different values."""
        try:
            values = {v for _t, v in self.btf.find_enumerator(name)}
        except BtfError:
            return None
        return values.pop() if len(values) == 1 else None

    # --- ids -----------------------------------------------------------------------

    def info_of(self, type_id: int) -> BtfTypeInfo:
        """:class:`BtfTypeInfo` of ``type_id`` without typedefs and qualifiers, kept."""
        type_id = self.btf.resolve(type_id)
        try:
            return self._infos[type_id]
        except KeyError:
            info = self._infos[type_id] = BtfTypeInfo(self, type_id)
            return info

    def complete(self, type_id: int) -> int:
        """``type_id`` resolved; a declaration (``struct x;``) replaced by the one
        definition of that tag, where there is one."""
        btf = self.btf
        type_id = btf.resolve(type_id)
        if type_id and btf.kind(type_id) == BtfKind.FWD:
            t = btf.type(type_id)
            found = self._id_of(("union " if t.kind_flag else "struct ") + t.name)
            if found is not None:
                return found
        return type_id

    def member_bits(self, type_id: int, name: str) -> tuple[int, int] | None:
        """``(bit offset, type ID)`` of member ``name`` of struct/union ``type_id``,
        through anonymous members (:meth:`Btf.member`); ``None`` also where
        damaged BTF nests them without end."""
        key = (type_id, name)
        try:
            return self._members[key]
        except KeyError:
            pass
        try:
            found = self.btf.member(type_id, name)
        except BtfError:
            found = None
        self._members[key] = found
        return found

    def offsetof(self, type_name: str, path: str) -> int | None:
        """Byte offset of member ``path`` (``a.b``) in ``type_name``; ``None`` if the
        type has no such member.

        :raises KeyError: if BTF does not know ``type_name`` (ask the debug info)
        """
        info = self.info(type_name)
        if info is None:
            raise KeyError(type_name)
        off = 0
        for name in path.split("."):
            found = info.field(name)
            if found is None:
                return None
            field_off, info = found
            off += field_off
        return off
