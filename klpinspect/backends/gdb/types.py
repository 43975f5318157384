"""gdb's types, and the layout layer's struct view over them.

Types are looked up lazily and cached; every object is read in one bulk read
(through :class:`~klpinspect.backends.gdb.memory.GdbMemory`) and its members
are sliced out of those bytes, so gdb never chases pointers on its own.
:class:`GdbView` and :class:`GdbKernel` implement the
:class:`~klpinspect.backends.layout.StructView` and
:class:`~klpinspect.backends.layout.KernelAccess` protocols.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, Literal

from klpinspect.backends.btflayout import KNOWN_GLOBALS, BtfTypeInfo, BtfTypes
from klpinspect.backends.layout import read_c_string
from klpinspect.errors import TargetError

# gdb's own module, only inside gdb.  Imported by name so that type checkers
# do not mistake the checkout's gdb/ directory for it.
try:
    gdb: Any = importlib.import_module("gdb")
except ImportError:
    gdb = None

__all__ = ("GdbKernel", "GdbTypes", "GdbView", "TypeInfo", "find_field")


FieldCache = dict[tuple[int, str, int, str], "tuple[int, Any] | None"]


def find_field(t: Any, name: str, cache: FieldCache | None = None) -> tuple[int, Any] | None:
    """``(byte offset, type)`` of member ``name``, looking into anonymous members.

    :param cache: answers for named structs and unions (:attr:`GdbTypes.fields`):
        ``Type.fields()`` builds every field object on each call and an audit
        asks ~5,000 times.  Keyed by (code, tag, size, member): gdb.Type is
        not hashable.
    """
    tag = t.tag
    if cache is None or not tag:
        return _find_field(t, name)
    key = (t.code, tag, t.sizeof, name)
    try:
        return cache[key]
    except KeyError:
        found = cache[key] = _find_field(t, name)
        return found


def _find_field(t: Any, name: str) -> tuple[int, Any] | None:
    for f in t.fields():
        if f.name == name:
            return f.bitpos // 8, f.type
        if not f.name and f.type.strip_typedefs().code in (gdb.TYPE_CODE_STRUCT,
                                                           gdb.TYPE_CODE_UNION):
            inner = find_field(f.type.strip_typedefs(), name)
            if inner is not None:
                return f.bitpos // 8 + inner[0], inner[1]
    return None


class GdbTypes:
    """Type look-ups, cached per target."""

    def __init__(self) -> None:
        self._types: dict[str, Any] = {}
        self._infos: dict[str, TypeInfo] = {}
        #: :func:`find_field` answers for this target's types
        self.fields: FieldCache = {}

    def type(self, name: str) -> Any:
        """The ``gdb.Type`` called ``name``.

        :raises TargetError: if the debug info has none
        """
        try:
            return self._types[name]
        except KeyError:
            pass
        try:
            t = gdb.lookup_type(name)
        except gdb.error:
            if name.startswith("struct ") or name.startswith("union "):
                raise TargetError(f"no type '{name}' in the kernel debug info") from None
            raise TargetError(f"no type '{name}'") from None
        self._types[name] = t
        return t

    def info(self, name: str) -> TypeInfo:
        """:class:`TypeInfo` of the type called ``name``, kept (members' types with it).

        :raises TargetError: if the debug info has none
        """
        try:
            return self._infos[name]
        except KeyError:
            info = self._infos[name] = TypeInfo(self, self.type(name))
            return info

    def complete(self, t: Any) -> Any:
        """``t`` without typedefs; a struct only declared where it is used is looked
        up by name (``struct module_sect_attrs`` is defined in one .c file)."""
        t = t.strip_typedefs()
        # A declaration has no size: only then ask for the fields (Type.fields()
        # builds every field object, ~8 us for struct module_sect_attr, and the
        # section table asks ~1,000 times an audit).
        if (
            t.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION)
            and not t.sizeof
            and not t.fields()
            and t.tag
        ):
            kind = "struct" if t.code == gdb.TYPE_CODE_STRUCT else "union"
            try:
                return self.type(f"{kind} {t.tag}").strip_typedefs()
            except TargetError:
                return t
        return t

    def offsetof(self, type_: Any, path: str) -> int:
        """Byte offset of member ``path`` (``a.b``) in ``type_``.

        :raises TargetError: if there is no such member
        """
        t = self.type(type_) if isinstance(type_, str) else type_
        off = 0
        for name in path.split("."):
            t = t.strip_typedefs()
            found = find_field(t, name, self.fields)
            if found is None:
                raise TargetError(f"no member '{name}' in {t}")
            field_off, t = found
            off += field_off
        return off


class TypeInfo:
    """A ``gdb.Type`` without typedefs, and what :class:`GdbView` asks of it, asked once.

    Each ``gdb.Type`` attribute or method (``code``, ``sizeof``, ``target()``,
    ``strip_typedefs()``) is a call into gdb that builds a new Python object;
    an audit walks ~5,000 members.  A member's or pointee's :class:`TypeInfo`
    is kept by its parent, so the same walk asks gdb once per path.
    """

    __slots__ = ("type", "code", "size", "pointer", "aggregate", "signed", "_types",
                 "_fields", "_target")

    def __init__(self, types: GdbTypes, t: Any) -> None:
        t = t.strip_typedefs()
        self.type = t
        self.code: int = t.code
        self.size: int = t.sizeof
        self.pointer = self.code == gdb.TYPE_CODE_PTR
        self.aggregate = self.code in (gdb.TYPE_CODE_STRUCT, gdb.TYPE_CODE_UNION)
        #: whether a scalar is signed, ``None`` where gdb's own conversion decides
        self.signed: bool | None = None
        if self.code in (gdb.TYPE_CODE_INT, gdb.TYPE_CODE_CHAR, gdb.TYPE_CODE_BOOL,
                         gdb.TYPE_CODE_ENUM):
            try:
                self.signed = bool(t.is_signed)  # gdb 12+
            except (AttributeError, ValueError, gdb.error):
                self.signed = None
        self._types = types
        self._fields: dict[str, tuple[int, TypeInfo] | None] = {}
        self._target: TypeInfo | None = None

    def field(self, name: str) -> tuple[int, TypeInfo] | None:
        """``(byte offset, type)`` of member ``name`` (:func:`find_field`)."""
        try:
            return self._fields[name]
        except KeyError:
            pass
        found = find_field(self.type, name, self._types.fields)
        out = None if found is None else (found[0], TypeInfo(self._types, found[1]))
        self._fields[name] = out
        return out

    def target(self) -> TypeInfo:
        """What a pointer points to, or an array's element type, completed
        (:meth:`GdbTypes.complete`)."""
        if self._target is None:
            self._target = TypeInfo(self._types, self._types.complete(self.type.target()))
        return self._target


class GdbView:
    """One object of type ``info`` at ``address``, its bytes read in one go.

    ``info`` is a :class:`TypeInfo` (gdb's types) or a
    :class:`~klpinspect.backends.btflayout.BtfTypeInfo` (the kernel's BTF:
    :attr:`GdbKernel.btf`); both answer the same questions alike.

    :param data: the object's bytes (``info.size`` of them; fewer for a
        flexible array, whose elements are read when asked for)
    """

    __slots__ = ("_k", "_info", "_address", "_data")

    def __init__(
        self, k: GdbKernel, info: TypeInfo | BtfTypeInfo, address: int, data: bytes
    ) -> None:
        self._k = k
        self._info = info
        self._address = address
        self._data = data

    def member(self, name: str) -> GdbView | None:
        info = self._info
        if info.pointer:
            target = info.target()
            if target.field(name) is None:
                return None
            return self._k.view_of(target, self.integer()).member(name)
        if not info.aggregate:
            return None
        found = info.field(name)
        if found is None:
            return None
        off, ft = found
        return GdbView(self._k, ft, self._address + off, self._data[off : off + ft.size])

    def integer(self) -> int:
        info = self._info
        if info.pointer:
            return self._k.to_int(self._data[:8])
        if info.signed is not None and len(self._data) == info.size:
            return int.from_bytes(self._data, self._k.int_order, signed=info.signed)
        return int(gdb.Value(self._data, info.type))

    def string(self) -> str:
        if self._info.pointer:
            return self._k.string(self.integer())
        return self._data.split(b"\0", 1)[0].decode("utf-8", "replace")

    def address(self) -> int:
        return self.integer() if self._info.pointer else self._address

    def element(self, index: int) -> GdbView:
        et = self._info.target()
        size = et.size
        if self._info.pointer:
            return self._k.view_of(et, self.integer() + index * size)
        off = index * size
        if off + size <= len(self._data):
            return GdbView(self._k, et, self._address + off, self._data[off : off + size])
        # a flexible array member: its elements follow the object
        return self._k.view_of(et, self._address + off)


class GdbKernel:
    """The layout layer's view of the kernel gdb has loaded.

    :param read: kernel virtual memory (:meth:`GdbMemory.read`)
    :param symbol_address: an ELF symbol's address in vmlinux
    :param before_object: see :attr:`before_object`
    :param btf: loads the kernel's BTF types (``None`` where there is none or
        it is not worth reading), asked on the first type question
    """

    def __init__(
        self,
        types: GdbTypes,
        read: Callable[[int, int], bytes],
        symbol_address: Callable[[str], int | None],
        byteorder: str,
        before_object: Callable[[str, int], None] | None = None,
        btf: Callable[[], BtfTypes | None] | None = None,
    ) -> None:
        self.types = types
        self._load_btf = btf
        self._btf: tuple[BtfTypes | None] | None = None
        self.read = read
        self.symbol_address = symbol_address
        self.byteorder = byteorder
        #: called with ``(type name, address)`` before :meth:`object` reads one
        #: (the back end's chance to read the memory around it in one go)
        self.before_object = before_object
        self._constants: dict[str, int | None] = {}
        #: ``int.from_bytes`` byte order of the target
        self.int_order: Literal["little", "big"] = "little" if byteorder == "little" else "big"

    def object_of(self, t: Any, address: int) -> GdbView:
        """The object of ``gdb.Type`` ``t`` at ``address`` (one read)."""
        return self.view_of(TypeInfo(self.types, t), address)

    def view_of(self, info: TypeInfo | BtfTypeInfo, address: int) -> GdbView:
        """The object of type ``info`` at ``address`` (one read)."""
        return GdbView(self, info, address, self.read(address, info.size) if info.size else b"")

    @property
    def btf(self) -> BtfTypes | None:
        """The kernel's BTF types, loaded on first use; ``None`` without.

        Types are asked of it first: gdb's own look-ups expand the DWARF unit
        defining each type (:mod:`klpinspect.backends.btflayout`).  A name
        it has no certain answer for is asked of gdb.
        """
        if self._btf is None:
            self._btf = (self._load_btf() if self._load_btf is not None else None,)
        return self._btf[0]

    def _info(self, type_name: str) -> TypeInfo | BtfTypeInfo:
        btf = self.btf
        found = btf.info(type_name) if btf is not None else None
        return found if found is not None else self.types.info(type_name)

    def object(self, type_name: str, address: int) -> GdbView:
        if self.before_object is not None:
            self.before_object(type_name, address)
        return self.view_of(self._info(type_name), address)

    def variable(self, name: str) -> GdbView | None:
        address = self.symbol_address(name)
        if address is None:
            return None
        btf = self.btf
        if btf is not None and name in KNOWN_GLOBALS:
            info = btf.declared(KNOWN_GLOBALS[name])
            if info is not None:
                return self.view_of(info, address)
        try:
            sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
        except gdb.error:
            sym = None
        if sym is None:
            return None
        return self.object_of(self.types.complete(sym.type), address)

    def type_size(self, type_name: str) -> int | None:
        btf = self.btf
        info = btf.info(type_name) if btf is not None else None
        if info is not None:
            return info.size or None
        try:
            return int(self.types.type(type_name).sizeof) or None
        except TargetError:
            return None

    def offsetof(self, type_name: str, member: str) -> int | None:
        btf = self.btf
        if btf is not None:
            try:
                return btf.offsetof(type_name, member)
            except KeyError:
                pass  # not a type BTF answers for: gdb's
        try:
            return self.types.offsetof(type_name, member)
        except TargetError:
            return None

    def constant(self, name: str) -> int | None:
        """An enumerator only: a variable of that name is not read behind the memory layer."""
        if name not in self._constants:
            btf = self.btf
            value = btf.constant(name) if btf is not None else None
            if value is not None:
                self._constants[name] = value
                return value
            try:
                # gdb's symbol index answers a miss at once; parse_and_eval takes
                # 10-100 ms to find nothing (FTRACE_FL_CALL_OPS before 6.6).
                # Without a debug-info symbol of that name parse_and_eval could
                # only find a minimal symbol, never an enumerator.
                if gdb.lookup_global_symbol(name) is None and (
                    gdb.lookup_static_symbol(name) is None
                ):
                    self._constants[name] = None
                    return None
                value = gdb.parse_and_eval(name)
                if value.type.strip_typedefs().code == gdb.TYPE_CODE_ENUM:
                    self._constants[name] = int(value)
                else:
                    self._constants[name] = None
            except (gdb.error, RuntimeError):
                self._constants[name] = None
        return self._constants[name]

    def to_int(self, data: bytes) -> int:
        """An unsigned integer in the target's byte order."""
        return int.from_bytes(data, self.int_order)

    def u64(self, address: int) -> int:
        return self.to_int(self.read(address, 8))

    def u32(self, address: int) -> int:
        return self.to_int(self.read(address, 4))

    def string(self, address: int, limit: int = 256) -> str:
        """A NUL-terminated string in target memory
        (:func:`~klpinspect.backends.layout.read_c_string`)."""
        return read_c_string(self.read, address, limit)
