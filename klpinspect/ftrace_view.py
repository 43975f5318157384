"""``klpinspect ftrace``: every function ftrace currently redirects, by which ops, for which patch.

Read from the kernel's own bookkeeping, through the Target protocol plus four
layout queries (:class:`LayoutSource`) the back ends answer from the debug
info, so the walk itself is shared by drgn and gdb:

* the ftrace records: ``ftrace_pages_start`` -> ``struct ftrace_page``
  (``next``, ``records``, ``index``) -> ``struct dyn_ftrace`` (``ip``, ``flags``,
  ``arch.ool_stub`` with ``PPC_FTRACE_OUT_OF_LINE``); a record is redirected
  while ``FTRACE_FL_ENABLED`` is set (``kernel/trace/ftrace.c``);
* the registered ops: ``ftrace_ops_list`` -> ``struct ftrace_ops`` (``next``
  up to ``&ftrace_list_end``, ``func``, ``flags``, ``func_hash->filter_hash``:
  ``struct ftrace_hash`` buckets of ``struct ftrace_func_entry``; an empty
  filter means every function);
* the livepatches: ``klp_patches`` -> ``struct klp_patch`` (``obj_list`` ->
  ``struct klp_object`` ``func_list`` -> ``struct klp_func``; before 5.1 the
  patch module's static ``objs``/``funcs`` arrays) and
  ``klp_ops`` (``kernel/livepatch/patch.c``): ``struct klp_ops`` {``node``,
  ``func_stack``, ``fops``}; the first ``klp_func`` on ``func_stack`` is the
  one that runs.

Each redirected site's instruction is read too: ``bl`` (the ftrace call,
``-mprofile-kernel`` or ``-fpatchable-function-entry``), ``b`` to the
function's OOL stub (6.13+), or ``nop``.  Findings: a patched ``klp_func``
whose ftrace site is not redirected (``FTRACE_PATCHED_SITE_NOP``); a
livepatch-style redirect (``FTRACE_FL_IPMODIFY`` or a ``klp_ops`` owner)
with no patched ``klp_func`` behind it (``FTRACE_REDIRECT_NO_PATCH``); a
redirect no registered ops asks for (``FTRACE_REDIRECT_NO_OPS``).
"""

from __future__ import annotations

import array
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from .checks.symbols import Symbolizer
from .errors import KlpError, MemoryReadError
from .ppc64.insn import NOP, branch_target, is_b, is_bl
from .report import Finding, FindingCode, Report, damage_findings, hexaddr, new_report
from .stackcheck import ListBroken, ListCorruption, walk_list
from .target import Target, try_symbolize

__all__ = (
    "FtraceOps",
    "FtraceRecord",
    "FtraceReport",
    "FtraceUnsupported",
    "KlpFuncInfo",
    "LayoutSource",
    "Redirect",
    "ftrace_report",
    "klp_ops_names",
    "read_ftrace_ops",
    "read_ftrace_columns",
    "read_ftrace_ool_sites",
    "read_ftrace_records",
    "read_klp_funcs",
)

_MAX_LIST = 1 << 20  # a list longer than this is damaged (or a loop)
_FL_NAMES = (
    "ENABLED", "REGS", "REGS_EN", "TRAMP", "TRAMP_EN", "IPMODIFY", "DISABLED", "DIRECT",
    "DIRECT_EN", "CALL_OPS", "CALL_OPS_EN", "TOUCHED", "MODIFIED",
)


class FtraceUnsupported(KlpError):
    """The kernel's debug info lacks what the ftrace view reads (no DYNAMIC_FTRACE...)."""


@runtime_checkable
class LayoutSource(Protocol):
    """The layout queries a back end answers from the kernel's debug info."""

    def type_size(self, type_name: str) -> int | None:
        """``sizeof(type_name)`` (``"struct dyn_ftrace"``), ``None`` if unknown."""
        ...

    def member_offset(self, type_name: str, member: str) -> int | None:
        """``offsetof(type_name, member)`` (``member`` may be ``a.b``), ``None`` if absent."""
        ...

    def symbol_address(self, name: str) -> int | None:
        """Address of the kernel symbol ``name`` (a variable or function), if any."""
        ...

    def constant(self, name: str) -> int | None:
        """Value of the enumerator ``name`` (``FTRACE_FL_ENABLED``), if the debug info has it."""
        ...


@dataclass(frozen=True)
class FtraceRecord:
    """One ``struct dyn_ftrace``: ``ip``, ``flags``, ``arch.ool_stub`` (6.13+ OOL)."""

    ip: int
    flags: int
    ool_stub: int | None = None


@dataclass(frozen=True)
class FtraceOps:
    """One registered ``struct ftrace_ops``.

    :param filter_ips: ``func_hash->filter_hash`` entries; ``None``: an empty
        filter (every function)
    """

    address: int
    func: int
    flags: int
    filter_ips: frozenset[int] | None


@dataclass(frozen=True)
class KlpFuncInfo:
    """One ``struct klp_func`` of an enabled-or-not ``struct klp_patch``."""

    address: int
    patch: str
    patch_enabled: bool
    object: str  # "vmlinux" or the patched module's name
    object_loaded: bool
    old_name: str
    old_func: int
    new_func: int
    old_size: int
    sympos: int
    patched: bool
    transition: bool
    nop: bool
    ops: int | None = None  # &klp_ops->fops
    active: bool = False  # first on its klp_ops->func_stack


@dataclass
class Redirect:
    """One enabled ftrace record: the function, its site, its ops, its klp_funcs."""

    ip: int
    flags: list[str]
    refs: int
    symbol: str | None
    owner: str | None
    site: str  # "call <target>", "ool <stub>", "nop", "other <word>", "unreadable"
    site_target: int | None = None  # where the site's bl / b goes
    call_ops: int | None = None  # OOL (6.13+): ool_stub->ftrace_op, the ops the site calls
    ops: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    klp: list[KlpFuncInfo] = field(default_factory=list)

    def to_json(self, namer: Any) -> dict[str, Any]:
        return {
            "ip": hexaddr(self.ip),
            "symbol": self.symbol,
            "owner": self.owner,
            "flags": self.flags,
            "refs": self.refs,
            "site": self.site,
            "site_target": hexaddr(self.site_target),
            **({"call_ops": hexaddr(self.call_ops), "call_ops_symbol": namer(self.call_ops)}
               if self.call_ops is not None else {}),
            "ops": [
                {"address": hexaddr(a), "symbol": s, "func": f} for a, s, f in self.ops
            ],
            "klp": [_klp_json(k, namer) for k in self.klp],
        }


def _klp_json(k: KlpFuncInfo, namer: Any) -> dict[str, Any]:
    return {
        "patch": k.patch,
        "patch_enabled": k.patch_enabled,
        "object": k.object,
        "object_loaded": k.object_loaded,
        "function": k.old_name,
        "sympos": k.sympos,
        "old_func": hexaddr(k.old_func),
        "new_func": hexaddr(k.new_func),
        "new_symbol": namer(k.new_func),
        "patched": k.patched,
        "transition": k.transition,
        "active": k.active,
        "ops": hexaddr(k.ops),
    }


class _Mem:
    """Typed reads over a Target + LayoutSource, with the offsets looked up once."""

    def __init__(self, target: Any) -> None:
        self.t = target
        self.order: Literal["little", "big"] = (
            "big" if target.kernel().byteorder == "big" else "little"
        )
        self._off: dict[tuple[str, str], int | None] = {}

    def off(self, type_name: str, member: str, required: bool = True) -> int:
        key = (type_name, member)
        if key not in self._off:
            self._off[key] = self.t.member_offset(type_name, member)
        value = self._off[key]
        if value is None:
            if required:
                raise FtraceUnsupported(f"no {type_name}.{member} in the kernel debug info")
            return -1
        return value

    def size(self, type_name: str) -> int:
        value = self.t.type_size(type_name)
        if value is None:
            raise FtraceUnsupported(f"no {type_name} in the kernel debug info")
        return int(value)

    def sym(self, name: str) -> int:
        value = self.t.symbol_address(name)
        if value is None:
            raise FtraceUnsupported(f"no symbol {name} in the kernel")
        return int(value)

    def u(self, address: int, size: int = 8) -> int:
        return int.from_bytes(self.t.read(address, size), self.order)

    def string(self, address: int, limit: int = 128) -> str:
        if not address:
            return ""
        out = b""
        while len(out) < limit:
            try:
                chunk: bytes = self.t.read(address + len(out), 16)
            except MemoryReadError:
                break
            end = chunk.find(b"\0")
            if end >= 0:
                return (out + chunk[:end]).decode("utf-8", "replace")
            out += chunk
        return out.decode("utf-8", "replace")

    def list_nodes(self, head: int, what: str) -> Iterator[int]:
        """The node addresses of the ``struct list_head`` list at ``head``
        (:func:`~klpinspect.stackcheck.walk_list`: a loop is ``LIST_CORRUPT``)."""
        return walk_list(self.u, head, what, _MAX_LIST)


def _bool(mem: _Mem, address: int) -> bool:
    return bool(mem.u(address, 1))


def read_ftrace_columns(target: Any) -> tuple[list[int], list[int], list[int] | None]:
    """``ip``, ``flags`` and ``arch.ool_stub`` (``None``: no such member) of every
    ``struct dyn_ftrace`` from ``ftrace_pages_start``, in page order, as columns.

    A kernel has tens of thousands of records: each page's array is read at
    once and its fields taken with strided slices of a 64-bit word array
    (C speed) when the layout allows, else record by record.
    """
    mem = _Mem(target)
    rec_size = mem.size("struct dyn_ftrace")
    ip_off = mem.off("struct dyn_ftrace", "ip")
    flags_off = mem.off("struct dyn_ftrace", "flags")
    ool_off = mem.off("struct dyn_ftrace", "arch.ool_stub", required=False)
    page_next = mem.off("struct ftrace_page", "next")
    page_records = mem.off("struct ftrace_page", "records")
    page_index = mem.off("struct ftrace_page", "index")
    page = mem.u(mem.sym("ftrace_pages_start"))
    ips: list[int] = []
    flags: list[int] = []
    ools: list[int] | None = [] if ool_off >= 0 else None
    order = mem.order
    offsets = [ip_off, flags_off] + ([ool_off] if ool_off >= 0 else [])
    strided = rec_size > 0 and rec_size % 8 == 0 and all(o % 8 == 0 for o in offsets)
    pages = 0
    while page:
        pages += 1
        if pages > _MAX_LIST:
            raise MemoryReadError(page, 8, "ftrace_pages list loops")
        records = mem.u(page + page_records)
        count = mem.u(page + page_index, 4)
        data = target.read(records, count * rec_size) if count else b""
        if strided:
            words = array.array("Q")
            words.frombytes(data)
            if order != sys.byteorder:
                words.byteswap()
            step = rec_size // 8
            ips.extend(words[ip_off // 8 :: step])
            flags.extend(words[flags_off // 8 :: step])
            if ools is not None:
                ools.extend(words[ool_off // 8 :: step])
        else:
            for i in range(count):
                base = i * rec_size
                ips.append(int.from_bytes(data[base + ip_off : base + ip_off + 8], order))
                flags.append(int.from_bytes(data[base + flags_off : base + flags_off + 8], order))
                if ools is not None:
                    ools.append(int.from_bytes(data[base + ool_off : base + ool_off + 8], order))
        page = mem.u(page + page_next)
    return ips, flags, ools


def read_ftrace_records(target: Any) -> list[FtraceRecord]:
    """Every ``struct dyn_ftrace`` from ``ftrace_pages_start``, in page order."""
    ips, flags, ools = read_ftrace_columns(target)
    if ools is None:
        return list(map(FtraceRecord, ips, flags))
    return list(map(FtraceRecord, ips, flags, ools))


def read_ftrace_ool_sites(target: Any) -> dict[int, int]:
    """``rec->arch.ool_stub`` -> ``rec->ip`` of every ``struct dyn_ftrace`` with an
    out-of-line stub (6.13+), the later record winning: what the OOL checks need
    from :func:`read_ftrace_columns`, no Python object per record (a distribution
    kernel has ~40,000).  Empty for a kernel without ``dyn_arch_ftrace.ool_stub``."""
    ips, _flags, ools = read_ftrace_columns(target)
    if ools is None:
        return {}
    sites = dict(zip(ools, ips, strict=True))
    sites.pop(0, None)
    return sites


def _hash_ips(mem: _Mem, hash_addr: int) -> frozenset[int] | None:
    """The ips of a ``struct ftrace_hash``; ``None`` when it is empty (all functions)."""
    if not hash_addr:
        return None
    count = mem.u(hash_addr + mem.off("struct ftrace_hash", "count"))
    if not count:
        return None
    bits = mem.u(hash_addr + mem.off("struct ftrace_hash", "size_bits"))
    buckets = mem.u(hash_addr + mem.off("struct ftrace_hash", "buckets"))
    if bits > 20:
        raise MemoryReadError(hash_addr, 8, f"ftrace_hash size_bits {bits}")
    ip_off = mem.off("struct ftrace_func_entry", "ip")
    hlist = mem.off("struct ftrace_func_entry", "hlist")
    nbuckets = 1 << bits
    heads = mem.t.read(buckets, 8 * nbuckets)
    ips = set()
    for i in range(nbuckets):
        node = int.from_bytes(heads[8 * i : 8 * i + 8], mem.order)
        seen = 0
        while node and seen <= count:
            ips.add(mem.u(node - hlist + ip_off))
            node = mem.u(node)  # hlist_node.next
            seen += 1
    return frozenset(ips)


def read_ftrace_ops(target: Any) -> list[FtraceOps]:
    """The ``ftrace_ops_list`` (up to ``&ftrace_list_end``) with each filter hash."""
    mem = _Mem(target)
    end = mem.sym("ftrace_list_end")
    next_off = mem.off("struct ftrace_ops", "next")
    func_off = mem.off("struct ftrace_ops", "func")
    flags_off = mem.off("struct ftrace_ops", "flags")
    hash_off = mem.off("struct ftrace_ops", "func_hash")
    filter_off = mem.off("struct ftrace_ops_hash", "filter_hash")
    ops = mem.u(mem.sym("ftrace_ops_list"))
    out: list[FtraceOps] = []
    while ops and ops != end:
        if len(out) > _MAX_LIST:
            raise MemoryReadError(ops, 8, "ftrace_ops_list loops")
        func_hash = mem.u(ops + hash_off)
        filt = mem.u(func_hash + filter_off) if func_hash else 0
        out.append(FtraceOps(ops, mem.u(ops + func_off), mem.u(ops + flags_off, 8),
                             _hash_ips(mem, filt)))
        ops = mem.u(ops + next_off)
    return out


def _klp_objects(mem: _Mem, patch: int) -> Iterator[int]:
    """The ``struct klp_object`` addresses of a patch.

    5.1+ keeps them on ``patch->obj_list`` (commit 20e55025958e, "livepatch: Use
    lists to manage patches, objects and functions", v5.1); before, ``patch->objs``
    is the patch module's static array, ended by an entry with neither ``name``
    nor ``funcs`` (``klp_for_each_object_static``).
    """
    obj_t = "struct klp_object"
    list_off = mem.off("struct klp_patch", "obj_list", required=False)
    if list_off >= 0:
        node_off = mem.off(obj_t, "node")
        for node in mem.list_nodes(patch + list_off, "klp_patch.obj_list"):
            yield node - node_off
        return
    obj = mem.u(patch + mem.off("struct klp_patch", "objs"))
    size = mem.size(obj_t)
    name_off, funcs_off = mem.off(obj_t, "name"), mem.off(obj_t, "funcs")
    for _ in range(_MAX_LIST):
        if not obj or not (mem.u(obj + name_off) or mem.u(obj + funcs_off)):
            return
        yield obj
        obj += size


def _klp_funcs(mem: _Mem, obj: int) -> Iterator[int]:
    """The ``struct klp_func`` addresses of an object: ``obj->func_list`` (5.1+) or the
    static ``obj->funcs`` array, ended by an all-zero ``{old_name, new_func, old_sympos}``
    (``klp_for_each_func_static``)."""
    func_t = "struct klp_func"
    list_off = mem.off("struct klp_object", "func_list", required=False)
    if list_off >= 0:
        node_off = mem.off(func_t, "node")
        for node in mem.list_nodes(obj + list_off, "klp_object.func_list"):
            yield node - node_off
        return
    func = mem.u(obj + mem.off("struct klp_object", "funcs"))
    size = mem.size(func_t)
    keys = [mem.off(func_t, m) for m in ("old_name", "new_func")]
    sympos = mem.off(func_t, "old_sympos", required=False)  # 4.5+
    if sympos >= 0:
        keys.append(sympos)
    for _ in range(_MAX_LIST):
        if not func or not any(mem.u(func + k) for k in keys):
            return
        yield func
        func += size


def read_klp_funcs(target: Any) -> list[KlpFuncInfo]:
    """Every ``klp_func`` of every patch on ``klp_patches``, with its ``klp_ops``.

    Members that older kernels lack are feature-detected: ``old_func`` was
    ``unsigned long old_addr`` before "livepatch: Change unsigned long old_addr
    -> void *old_func in struct klp_func" (v5.1); ``transition`` (4.12+, the
    consistency model) and ``nop`` (5.1+, atomic replace) read as false when absent.
    """
    mem = _Mem(target)
    try:
        head = mem.sym("klp_patches")
    except FtraceUnsupported:
        return []  # no CONFIG_LIVEPATCH
    patch_t, obj_t, func_t = "struct klp_patch", "struct klp_object", "struct klp_func"
    # klp_ops: func address -> (fops, first on the stack)
    stacks: dict[int, tuple[int, bool]] = {}
    klp_ops_head = target.symbol_address("klp_ops")
    if klp_ops_head is not None and target.type_size("struct klp_ops") is not None:
        node_off = mem.off("struct klp_ops", "node")
        stack_off = mem.off("struct klp_ops", "func_stack")
        fops_off = mem.off("struct klp_ops", "fops")
        stack_node = mem.off(func_t, "stack_node")
        for node in mem.list_nodes(klp_ops_head, "klp_ops"):
            ops = node - node_off
            for i, fnode in enumerate(mem.list_nodes(ops + stack_off, "klp_ops.func_stack")):
                stacks[fnode - stack_node] = (ops + fops_off, i == 0)
    transition_patch = target.symbol_address("klp_transition_patch")
    in_transition = mem.u(transition_patch) if transition_patch is not None else 0
    old_func_off = mem.off(func_t, "old_func", required=False)
    if old_func_off < 0:
        old_func_off = mem.off(func_t, "old_addr")

    def opt_u(address: int, member: str, size: int = 8) -> int:
        off = mem.off(func_t, member, required=False)
        return mem.u(address + off, size) if off >= 0 else 0

    out: list[KlpFuncInfo] = []
    for pnode in mem.list_nodes(head, "klp_patches"):
        patch = pnode - mem.off(patch_t, "list")
        pmod = mem.u(patch + mem.off(patch_t, "mod"))
        name = mem.string(pmod + mem.off("struct module", "name")) if pmod else "?"
        enabled = _bool(mem, patch + mem.off(patch_t, "enabled"))
        for obj in _klp_objects(mem, patch):
            oname = mem.string(mem.u(obj + mem.off(obj_t, "name"))) or "vmlinux"
            loaded = oname == "vmlinux" or bool(mem.u(obj + mem.off(obj_t, "mod")))
            for func in _klp_funcs(mem, obj):
                fops, active = stacks.get(func, (None, False))
                out.append(
                    KlpFuncInfo(
                        address=func,
                        patch=name,
                        patch_enabled=enabled,
                        object=oname,
                        object_loaded=loaded,
                        old_name=mem.string(mem.u(func + mem.off(func_t, "old_name"))),
                        old_func=mem.u(func + old_func_off),
                        new_func=mem.u(func + mem.off(func_t, "new_func")),
                        old_size=opt_u(func, "old_size"),
                        sympos=opt_u(func, "old_sympos"),
                        patched=_bool(mem, func + mem.off(func_t, "patched")),
                        transition=bool(opt_u(func, "transition", 1))
                        or patch == in_transition,
                        nop=bool(opt_u(func, "nop", 1)),
                        ops=fops,
                        active=active,
                    )
                )
    return out


def klp_ops_names(klp: Sequence[KlpFuncInfo]) -> dict[int, str]:
    """``&klp_ops->fops`` -> ``klp_ops(object:function)``: names for kmalloc'd livepatch ops."""
    return {k.ops: f"klp_ops({k.object}:{k.old_name})" for k in klp if k.ops is not None}


def _flag_bits(target: Any) -> dict[str, int]:
    bits = {}
    for name in _FL_NAMES:
        value = target.constant(f"FTRACE_FL_{name}")
        if value is not None:
            bits[name] = int(value)
    if "ENABLED" not in bits:
        raise FtraceUnsupported("no FTRACE_FL_ENABLED in the kernel debug info")
    return bits


def _site(
    target: Target, rec: FtraceRecord, order: str, namer: Any, tramps: dict[int, str]
) -> tuple[str, int | None]:
    """The site's state as text (``call X``, ``ool STUB``, ``nop``...) and its branch target."""
    try:
        word = int.from_bytes(target.read(rec.ip, 4), "big" if order == "big" else "little")
    except MemoryReadError:
        return "unreadable", None
    if word == NOP:
        return "nop", None
    if is_bl(word):
        dest = branch_target(word, rec.ip)
        return f"call {namer(dest) or tramps.get(dest) or hexaddr(dest)}", dest
    if is_b(word) and rec.ool_stub and branch_target(word, rec.ip) == rec.ool_stub:
        return f"ool {hexaddr(rec.ool_stub)}", rec.ool_stub
    return f"other {word:08x}", None


class FtraceReport(Report):
    """A :class:`~klpinspect.report.Report` with the ``ftrace`` section."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.redirects: list[Redirect] = []
        self.ops: list[FtraceOps] = []
        self.klp: list[KlpFuncInfo] = []
        self.records = 0
        self.namer: Any = lambda a: None

    def to_json(self) -> dict[str, Any]:
        out = super().to_json()
        findings = out.pop("findings")
        out["ftrace"] = {
            "records": self.records,
            "redirects": [r.to_json(self.namer) for r in self.redirects],
            "ops": [
                {
                    "address": hexaddr(o.address),
                    "symbol": self.namer(o.address),
                    "func": hexaddr(o.func),
                    "func_symbol": self.namer(o.func),
                    "flags": hexaddr(o.flags),
                    "filter": None if o.filter_ips is None
                    else [hexaddr(ip) for ip in sorted(o.filter_ips)],
                }
                for o in self.ops
            ],
            "livepatch": [_klp_json(k, self.namer) for k in self.klp],
        }
        out["findings"] = findings
        return out

    def render_section(self, section: str) -> str | None:
        """The table of the ``ftrace`` section (``report.render_table`` calls this)."""
        if section != "ftrace":
            return None
        from .report import tabulate

        rows = []
        for r in self.redirects:
            ops = ", ".join(f"{s or hexaddr(a)} ({f or '?'})" for a, s, f in r.ops) or "-"
            klp = [
                f"{k.patch}: {k.object}:{k.old_name} -> "
                f"{self.namer(k.new_func) or hexaddr(k.new_func)}"
                f" ({'active' if k.active else 'stacked'}"
                f"{', transition' if k.transition else ''}{'' if k.patched else ', unpatched'})"
                for k in r.klp
            ] or ["-"]
            for i, text in enumerate(klp):
                rows.append(
                    (
                        (r.symbol or hexaddr(r.ip)) if i == 0 else "",
                        (r.owner or "-") if i == 0 else "",
                        ",".join(r.flags) if i == 0 else "",
                        r.site if i == 0 else "",
                        ops if i == 0 else "",
                        text,
                    )
                )
        head = f"{len(self.redirects)} of {self.records} ftrace records redirected"
        if not rows:
            return head
        return head + "\n" + tabulate(
            rows, headers=("function", "owner", "flags", "site", "ftrace_ops", "klp_func")
        )


def _covering(klp: Sequence[KlpFuncInfo], ip: int) -> list[KlpFuncInfo]:
    return [
        k for k in klp
        if k.old_func and k.old_func <= ip < k.old_func + max(k.old_size, 16)
    ]


def ftrace_report(target: Target, names: Sequence[str] | None = None) -> FtraceReport:
    """The ``ftrace`` view over a target whose back end answers :class:`LayoutSource`.

    :param names: limit the redirects listed to functions of these modules
        (``vmlinux`` for the kernel's own)
    :raises FtraceUnsupported: the back end or the kernel cannot give the records
    """
    if not isinstance(target, LayoutSource):
        raise FtraceUnsupported(f"the {target.kind} back end cannot read ftrace records")
    kernel = target.kernel()
    base = new_report(target, kernel, ("ftrace", "findings"))
    report = FtraceReport(target=base.target, kernel=base.kernel, sections=base.sections)
    symbols = Symbolizer(target)

    def namer(address: int) -> str | None:
        sym = symbols.info(address)
        if sym is None:
            return None
        return sym.name if sym.address == address else sym.format(address)

    report.namer = namer
    bits = _flag_bits(target)
    ref_mask = min(bits.values()) - 1
    try:
        records = read_ftrace_records(target)
        report.ops = read_ftrace_ops(target)
        report.klp = read_klp_funcs(target)
    except (MemoryReadError, ListBroken) as e:
        report.add(Finding(FindingCode.MEMORY_UNREADABLE, f"ftrace bookkeeping unreadable: {e}",
                           address=e.address))
        report.extend(damage_findings(target))
        return report
    except ListCorruption as e:
        report.add(Finding(FindingCode.LIST_CORRUPT, str(e), address=e.address))
        report.extend(damage_findings(target))
        return report
    report.records = len(records)
    ops_names = klp_ops_names(report.klp)
    plain_namer = namer

    def namer_with_ops(address: int) -> str | None:
        return plain_namer(address) or ops_names.get(address)

    report.namer = namer = namer_with_ops
    wanted = None if not names else {n.replace("-", "_") for n in names}
    klp_fops = {k.ops for k in report.klp if k.ops is not None}
    klp_handler = target.symbol_address("klp_ftrace_handler")
    # FTRACE_OPS_FL_ENABLED: BIT(0) in every kernel with ftrace_ops flags; the debug
    # info's value when it has the enumerator
    ops_enabled = target.constant("FTRACE_OPS_FL_ENABLED") or 1
    enabled_ops = [o for o in report.ops if o.flags & ops_enabled]
    # a module's ftrace call goes through its own trampoline stubs: name them
    tramps: dict[int, str] = {}
    mods = list(target.modules())
    for name in wanted or ():
        if name != "vmlinux" and name not in {m.name for m in mods}:
            raise KlpError(f"no module named '{name}'")
    for mod in mods:
        for label, address in (("arch.tramp", mod.tramp), ("arch.tramp_regs", mod.tramp_regs)):
            if address:
                tramps[address] = f"{mod.name}:{label}"
    redirected: dict[int, FtraceRecord] = {}
    for rec in records:
        if not rec.flags & bits["ENABLED"] or not rec.ip:
            continue
        redirected[rec.ip] = rec
        sym = try_symbolize(target, rec.ip)
        owner = None if sym is None else sym.owner
        if wanted is not None and (owner or "vmlinux") not in wanted:
            continue
        owners = [o for o in enabled_ops if o.filter_ips is None or rec.ip in o.filter_ips]
        site, site_target = _site(target, rec, kernel.byteorder, namer, tramps)
        call_ops = None
        if rec.ool_stub:
            # ftrace_rec_set_ops(): the ops pointer just before &ool_stub->insn[0]
            try:
                call_ops = int.from_bytes(target.read(rec.ool_stub - 8, 8),
                                          "big" if kernel.byteorder == "big" else "little")
            except MemoryReadError:
                call_ops = None
        r = Redirect(
            ip=rec.ip,
            flags=[n for n, b in bits.items() if rec.flags & b and n != "ENABLED"],
            refs=rec.flags & ref_mask,
            symbol=None if sym is None else sym.format(rec.ip),
            owner=owner,
            site=site,
            site_target=site_target,
            call_ops=call_ops,
            ops=[(o.address, namer(o.address), namer(o.func)) for o in owners],
            klp=[k for k in _covering(report.klp, rec.ip) if k.patched],
        )
        report.redirects.append(r)
        if r.klp and r.site == "nop":
            report.add(Finding(FindingCode.FTRACE_PATCHED_SITE_NOP, f"{r.klp[0].patch}: "
                               f"{r.klp[0].object}:{r.klp[0].old_name} is patched but its "
                               "ftrace site is a nop", module=owner, address=rec.ip,
                               symbol=r.symbol))
        if not owners:
            report.add(Finding(FindingCode.FTRACE_REDIRECT_NO_OPS, "ftrace record enabled but no "
                               "registered ftrace_ops filters this function",
                               module=owner, address=rec.ip, symbol=r.symbol))
        livepatch_style = "IPMODIFY" in r.flags or any(
            o.address in klp_fops or o.func == klp_handler for o in owners
        )
        if livepatch_style and not r.klp:
            report.add(Finding(FindingCode.FTRACE_REDIRECT_NO_PATCH, "livepatch-style ftrace "
                               "redirect (IPMODIFY / klp_ops) with no patched klp_func behind "
                               "it", module=owner, address=rec.ip, symbol=r.symbol))
    for k in report.klp:
        if not k.patched or not k.old_func:
            continue
        if wanted is not None and k.object not in wanted:
            continue
        if not any(k.old_func <= ip < k.old_func + max(k.old_size, 16) for ip in redirected):
            report.add(Finding(FindingCode.FTRACE_PATCHED_SITE_NOP, f"{k.patch}: {k.object}:"
                               f"{k.old_name} is patched but its ftrace site is not "
                               "redirected", module=None if k.object == "vmlinux" else k.object,
                               address=k.old_func,
                               symbol=k.old_name))
    report.extend(damage_findings(target))
    return report
