"""Reports: findings, per-module and per-task records, and their rendering.

The JSON form is the design's schema ``klpinspect/1``: addresses are
lower-case ``"0x…"`` strings and fields that do not apply are omitted or
``null``.  The table form uses tabulate.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from .errors import EXIT_UNUSABLE
from .ppc64.toc import TocSource

if TYPE_CHECKING:  # annotations only: bt and lpstack decode no stubs
    from .ppc64.stubs import Stub
    from .target import KernelInfo, Target

__all__ = (
    "BacktraceEntry",
    "CODES",
    "EXIT_ERROR_FINDING",
    "EXIT_OK",
    "EXIT_UNUSABLE",
    "Finding",
    "FindingCode",
    "FrameRecord",
    "ModuleRecord",
    "OolStubRecord",
    "Report",
    "Severity",
    "StubRecord",
    "TaskRecord",
    "hexaddr",
    "damage_findings",
    "new_report",
    "render",
    "render_json",
    "render_table",
)

_P = ParamSpec("_P")
_R = TypeVar("_R")

EXIT_OK = 0
EXIT_ERROR_FINDING = 1

SCHEMA = "klpinspect/1"


class Severity(StrEnum):
    """How bad a finding is; ``error`` findings make the exit status 1."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class FindingCode(StrEnum):
    """Stable finding codes (design.md): add new ones, never rename.

    Each carries its default :attr:`severity`; the value is the code as JSON
    and the table print it, so a typo is a mypy error, not a ``KeyError``
    when a report is rendered.
    """

    severity: Severity

    def __new__(cls, code: str, severity: Severity) -> FindingCode:
        member = str.__new__(cls, code)
        member._value_ = code
        member.severity = severity
        return member

    TRAMP_NOT_FTRACE_STUB = ("TRAMP_NOT_FTRACE_STUB", Severity.ERROR)
    TRAMP_TARGET_MISMATCH = ("TRAMP_TARGET_MISMATCH", Severity.ERROR)
    STUB_TOC_MISMATCH = ("STUB_TOC_MISMATCH", Severity.ERROR)
    STUB_UNKNOWN = ("STUB_UNKNOWN", Severity.WARNING)
    STUB_BAD_MAGIC = ("STUB_BAD_MAGIC", Severity.WARNING)
    STUB_TARGET_DANGLING = ("STUB_TARGET_DANGLING", Severity.ERROR)
    CALLSITE_NO_TOC_RESTORE = ("CALLSITE_NO_TOC_RESTORE", Severity.ERROR)
    LPSTACK_BAD_MAGIC = ("LPSTACK_BAD_MAGIC", Severity.ERROR)
    LPSTACK_OUT_OF_BOUNDS = ("LPSTACK_OUT_OF_BOUNDS", Severity.ERROR)
    LPSTACK_R2_UNKNOWN = ("LPSTACK_R2_UNKNOWN", Severity.WARNING)
    # restore_r2() accepts sibling calls on purpose ("Sibling calls aren't 'link'
    # branches and they don't return"): a risk to name, not a load failure.
    CALLSITE_SIBLING_VIA_STUB = ("CALLSITE_SIBLING_VIA_STUB", Severity.WARNING)
    KO_CALL_NEEDS_NOP = ("KO_CALL_NEEDS_NOP", Severity.ERROR)
    KO_LOCAL_CALL_BECOMES_GLOBAL = ("KO_LOCAL_CALL_BECOMES_GLOBAL", Severity.WARNING)
    KO_SIBLING_CALL = ("KO_SIBLING_CALL", Severity.WARNING)
    # Added by klpinspect beyond the design's first list.
    MEMORY_UNREADABLE = ("MEMORY_UNREADABLE", Severity.WARNING)
    LIVEPATCH_UNSUPPORTED = ("LIVEPATCH_UNSUPPORTED", Severity.INFO)
    KO_UNREADABLE = ("KO_UNREADABLE", Severity.WARNING)
    KO_NO_RELOCATIONS = ("KO_NO_RELOCATIONS", Severity.INFO)
    FTRACE_STUB_PACA_OFFSET = ("FTRACE_STUB_PACA_OFFSET", Severity.ERROR)
    # Out-of-line ftrace stubs (6.13+), klpinspect.ppc64.ool
    OOL_STUB_TRAMP_MISMATCH = ("OOL_STUB_TRAMP_MISMATCH", Severity.ERROR)
    OOL_STUB_RETURN_MISMATCH = ("OOL_STUB_RETURN_MISMATCH", Severity.ERROR)
    OOL_SITE_NOT_PATCHED = ("OOL_SITE_NOT_PATCHED", Severity.ERROR)
    OOL_SITE_CLAIMED_TWICE = ("OOL_SITE_CLAIMED_TWICE", Severity.ERROR)
    OOL_STUB_PAST_INDEX = ("OOL_STUB_PAST_INDEX", Severity.WARNING)
    # The ftrace view (klpinspect.ftrace_view)
    FTRACE_PATCHED_SITE_NOP = ("FTRACE_PATCHED_SITE_NOP", Severity.ERROR)
    FTRACE_REDIRECT_NO_PATCH = ("FTRACE_REDIRECT_NO_PATCH", Severity.ERROR)
    FTRACE_REDIRECT_NO_OPS = ("FTRACE_REDIRECT_NO_OPS", Severity.WARNING)
    # The kernel's own checks (issue 14), klpinspect.stackcheck
    TASK_STACK_CORRUPT = ("TASK_STACK_CORRUPT", Severity.ERROR)
    LPSTACK_OVERFLOW = ("LPSTACK_OVERFLOW", Severity.ERROR)
    LIST_CORRUPT = ("LIST_CORRUPT", Severity.ERROR)


#: code -> default severity (the table the codes were first kept in)
CODES: dict[str, Severity] = {code.value: code.severity for code in FindingCode}


def hexaddr(value: int | None) -> str | None:
    """``0x…`` lower-case, or ``None``."""
    return None if value is None else f"{value:#x}"


@dataclass(frozen=True)
class Finding:
    """One problem found.  ``severity`` defaults to the code's registered one."""

    code: FindingCode
    message: str
    severity: Severity | None = None
    module: str | None = None
    pid: int | None = None
    address: int | None = None
    section: str | None = None
    symbol: str | None = None
    file: str | None = None
    context: tuple[str, ...] = ()

    @property
    def level(self) -> Severity:
        return self.severity if self.severity is not None else self.code.severity

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.level.value,
            "code": self.code,
            "module": self.module,
            "pid": self.pid,
            "address": hexaddr(self.address),
            "message": self.message,
        }
        for key in ("section", "symbol", "file"):
            val = getattr(self, key)
            if val is not None:
                out[key] = val
        if self.context:
            out["context"] = list(self.context)
        return out


@dataclass(frozen=True, slots=True)
class StubRecord:
    """A decoded stub slot with its target named (``index`` is ``None`` for tramps).

    It holds the :class:`~klpinspect.ppc64.stubs.Stub` rather than copies of its
    fields: an audit makes one record per slot, millions on a big kernel.
    """

    stub: Stub
    index: int | None = None
    target_symbol: str | None = None
    target_owner: str | None = None

    @property
    def address(self) -> int:
        return self.stub.address

    @property
    def kind(self) -> str:
        return self.stub.kind  # a StrEnum: its own value

    @property
    def target(self) -> int | None:
        return self.stub.target

    @property
    def implied_toc(self) -> int | None:
        return self.stub.implied_toc

    @property
    def magic_ok(self) -> bool | None:
        return self.stub.magic_ok

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.index is not None:
            out["index"] = self.index
        out.update(
            address=hexaddr(self.address),
            kind=self.kind,
            target=hexaddr(self.target),
            target_symbol=self.target_symbol,
            target_owner=self.target_owner,
        )
        if self.implied_toc is not None:
            out["implied_toc"] = hexaddr(self.implied_toc)
        out["magic_ok"] = self.magic_ok
        return out


@dataclass(frozen=True, slots=True)
class OolStubRecord(StubRecord):
    """An out-of-line ftrace stub (``struct ftrace_ool_stub``, 6.13+) with its site.

    :param site: the ftrace site (``rec->ip``) whose call this stub carries
    :param site_state: ``enabled`` (``b`` this stub), ``disabled`` (``nop``),
        ``other`` or ``unreadable``
    :param ftrace_op: ``ool_stub->ftrace_op``, the ``struct ftrace_ops *`` that owns it
    """

    site: int | None = None
    site_symbol: str | None = None
    site_state: str | None = None
    ftrace_op: int | None = None
    ftrace_op_symbol: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = StubRecord.to_json(self)
        out.update(
            site=hexaddr(self.site),
            site_symbol=self.site_symbol,
            site_state=self.site_state,
            ftrace_op=hexaddr(self.ftrace_op),
            ftrace_op_symbol=self.ftrace_op_symbol,
        )
        return out


@dataclass
class ModuleRecord:
    name: str
    toc: int | None = None
    toc_source: TocSource = TocSource.NONE
    stubs_section: int | None = None
    stubs: list[StubRecord] = field(default_factory=list)
    tramp: StubRecord | None = None
    tramp_regs: StubRecord | None = None
    ool_stubs: list[StubRecord] = field(default_factory=list)  # 6.13+

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "toc": hexaddr(self.toc),
            "toc_source": self.toc_source,
            "stubs_section": hexaddr(self.stubs_section),
            "stubs": [s.to_json() for s in self.stubs],
            "tramp": None if self.tramp is None else self.tramp.to_json(),
            "tramp_regs": None if self.tramp_regs is None else self.tramp_regs.to_json(),
            **({"ool_stubs": [s.to_json() for s in self.ool_stubs]} if self.ool_stubs else {}),
        }


@dataclass(frozen=True)
class FrameRecord:
    """One livepatch stack frame."""

    address: int
    r2: int
    lr: int
    magic_ok: bool
    r2_owner: str | None = None
    lr_symbol: str | None = None
    kind: str = "livepatch"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "address": hexaddr(self.address),
            "r2": hexaddr(self.r2),
            "r2_owner": self.r2_owner,
            "lr": hexaddr(self.lr),
            "lr_symbol": self.lr_symbol,
            "magic_ok": self.magic_ok,
        }
        if self.kind != "livepatch":
            out["kind"] = self.kind
        return out


@dataclass(frozen=True)
class BacktraceEntry:
    """One frame of ``klp-bt``'s corrected backtrace.

    :param index: position in the back end's unwind (innermost 0)
    :param symbol: ``%pS`` of ``pc``; ``"f (inlined in g+0x…)"`` for an inlined call
    :param corrected: ``pc`` was a ``livepatch_handler`` return, replaced by the
        return address saved in livepatch frame ``frame_index`` (at ``from_frame``)
    :param original_pc: the unwound ``pc`` before the correction
    """

    index: int
    pc: int
    symbol: str | None
    corrected: bool = False
    from_frame: int | None = None
    frame_index: int | None = None
    original_pc: int | None = None
    original_symbol: str | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "index": self.index,
            "pc": hexaddr(self.pc),
            "symbol": self.symbol,
            "corrected": self.corrected,
            "from_frame": hexaddr(self.from_frame),
        }
        if self.frame_index is not None:
            out["frame_index"] = self.frame_index
        if self.corrected:
            out["original_pc"] = hexaddr(self.original_pc)
            out["original_symbol"] = self.original_symbol
        if self.note:
            out["note"] = self.note
        return out


@dataclass
class TaskRecord:
    pid: int
    comm: str
    livepatch_sp: int | None = None
    frames: list[FrameRecord] = field(default_factory=list)
    backtrace: list[BacktraceEntry] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "pid": self.pid,
            "comm": self.comm,
            "livepatch_sp": hexaddr(self.livepatch_sp),
            "frames": [f.to_json() for f in self.frames],
        }
        if self.backtrace is not None:
            out["backtrace"] = [e.to_json() for e in self.backtrace]
        return out


@dataclass
class Report:
    """Everything one command found.  ``sections`` says what the table shows."""

    target: dict[str, Any] = field(default_factory=dict)
    kernel: dict[str, Any] = field(default_factory=dict)
    modules: list[ModuleRecord] = field(default_factory=list)
    tasks: list[TaskRecord] | None = None
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: tuple[str, ...] = ("modules", "findings")

    def add(self, finding: Finding) -> None:
        self.findings.append(finding)

    def extend(self, findings: Iterable[Finding]) -> None:
        self.findings.extend(findings)

    @property
    def exit_status(self) -> int:
        """0 without error findings, 1 with at least one."""
        if any(f.level is Severity.ERROR for f in self.findings):
            return EXIT_ERROR_FINDING
        return EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return self._json(lazy_modules=False)

    def _json(self, *, lazy_modules: bool) -> dict[str, Any]:
        out: dict[str, Any] = {"schema": SCHEMA, "target": self.target, "kernel": self.kernel}
        if "modules" in self.sections or "stubs" in self.sections:  # not for lpstack/bt
            out["modules"] = (_LazyModules(self.modules) if lazy_modules
                              else [m.to_json() for m in self.modules])
        if self.tasks is not None:
            out["tasks"] = [t.to_json() for t in self.tasks]
        out["findings"] = [f.to_json() for f in self.findings]
        return out

    def render(self, fmt: str = "table") -> str:
        """The report as text: ``"table"`` (what the commands print) or ``"json"``."""
        return render(self, fmt)


def _column_aligns(rows: Sequence[Sequence[Any]], ncols: int) -> list[str] | None:
    """Each column's alignment as tabulate decides it (numbers right, the rest
    left), with tabulate's own cell typing but stopping at a column's first
    text cell (tabulate types all of them, several regular expressions a cell:
    most of a 6,000-slot table's time).  ``None`` when tabulate has no ``_type``."""
    import tabulate as tab

    cell_type = getattr(tab, "_type", None)
    if cell_type is None or any(len(r) != ncols for r in rows):
        return None
    # tabulate's order of generality: the column's type is the most general cell's
    rank = {type(None): 0, bool: 1, int: 2, float: 3, bytes: 4, str: 5}
    aligns = []
    for c in range(ncols):
        most = 0
        for r in rows:
            most = max(most, rank.get(cell_type(r[c], False, True), 5))
            if most >= 4:
                break
        if most == 3:
            return None  # tabulate formats floats ("g"): its own way, then
        aligns.append("right" if most == 2 else "left")
    return aligns


def tabulate(rows: Iterable[Sequence[Any]], headers: Sequence[str]) -> str:
    """tabulate's plain table; imported on first use (it costs ~40 ms at start-up,
    and JSON output never needs it)."""
    from tabulate import tabulate as _tabulate

    rows = rows if isinstance(rows, list) else list(rows)
    aligns = None
    if rows and not any(isinstance(v, str) and "\x1b" in v
                        for v in itertools.chain(headers, *rows)):
        aligns = _column_aligns(rows, len(headers))
    if aligns is not None:
        # the same table without tabulate's number parsing of every cell: the
        # alignments it would choose, given (plain text: no ANSI codes, which
        # tabulate strips before typing)
        text: str = _tabulate(rows, headers=headers, disable_numparse=True, colalign=aligns)
        return text
    # explicit alignment: tabulate's defaults differ between versions (gdb's
    # Python may have Debian's older one)
    text = _tabulate(rows, headers=headers, numalign="right", stralign="left")
    return text


def render_json(report: Report) -> str:
    """The report as ``klpinspect/1`` JSON text.

    Indented by two spaces down to the innermost objects and arrays, which
    are written one to a line (a stub slot, a frame): the same document as
    ``json.dumps(indent=2)`` in fewer lines.  The innermost values go through
    the json module's C encoder (``indent`` makes json use its pure-Python
    one: 0.3 s for the 11,000 slots of a distribution kernel), and the module
    records, most of the text, are written straight from their fields
    (:func:`_module_text`: 22 ms for the 16,400 slots of Debian's 7.2, where
    their ``to_json()`` dicts took 100 ms).
    """
    return _render_json(report)


def _render_json(report: Report, end: str = "") -> str:
    if type(report).to_json is not Report.to_json:  # a report that adds to it (ftrace)
        return _dumps(report.to_json(), 0, end)
    return _dumps(report._json(lazy_modules=True), 0, end)


def _nested(values: Iterable[Any]) -> bool:
    return any(isinstance(v, (dict, list)) and v for v in values)


def _flat_encoder() -> Callable[[Any], str]:
    """``json.dumps`` of a flat value, without building an encoder each call
    (the json module's C encoder when it has one)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return json.dumps

    def unsupported(o: Any) -> Any:
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serializable")

    enc = make(None, unsupported, json.encoder.encode_basestring_ascii, None,
               ": ", ", ", False, False, True)

    def encode(obj: Any) -> str:
        if isinstance(obj, str):
            return json.encoder.encode_basestring_ascii(obj)
        return "".join(enc(obj, 0))

    return encode


_flat = _flat_encoder()


class _LazyModules(list):  # type: ignore[type-arg]
    """The report's module records, each turned into its JSON text only while
    :func:`_dumps` writes it (a distribution kernel's 16,000 slots as dicts all
    at once: ~20 MB of peak memory)."""


def _dumps(obj: Any, level: int, end: str = "") -> str:
    """``obj`` as JSON text (see :func:`render_json`) followed by ``end``,
    written as pieces and joined once (each concatenation of a 5 MB report
    is a copy)."""
    out: list[str] = []
    _write(obj, level, out)
    out.append(end)
    return "".join(out)


def _write(obj: Any, level: int, out: list[str]) -> None:
    if isinstance(obj, _LazyModules):
        if not obj:
            out.append("[]")
            return
        pad = "  " * (level + 1)
        out.append("[\n" + pad)
        sep = ",\n" + pad
        for i, mod in enumerate(obj):
            if i:
                out.append(sep)
            out.append(_module_text(mod, level + 1))
        out.append("\n" + "  " * level + "]")
    elif isinstance(obj, dict) and _nested(obj.values()):
        pad = "  " * (level + 1)
        sep = "{\n"
        for k, v in obj.items():
            out.append(f"{sep}{pad}{_flat(k)}: ")
            _write(v, level + 1, out)
            sep = ",\n"
        out.append("\n" + "  " * level + "}")
    elif isinstance(obj, list) and _nested(obj):
        _write_list(obj, level, out)
    else:
        out.append(_flat(obj))


def _write_list(values: Iterable[Any], level: int, out: list[str]) -> None:
    """A JSON array of which some element is a non-empty dict or list: one element a line."""
    pad = "  " * (level + 1)
    sep = "[\n" + pad
    for v in values:
        out.append(sep)
        _write(v, level + 1, out)
        sep = ",\n" + pad
    out.append("\n" + "  " * level + "]")


_str = json.encoder.encode_basestring_ascii  # what _flat writes a string with
_BOOL = {True: "true", False: "false", None: "null"}


def _json_str(value: Any) -> str:
    """A string or ``null`` as JSON (``_flat`` for anything else)."""
    if value is None:
        return "null"
    return _str(value) if isinstance(value, str) else _flat(value)


def _json_hex(value: int | None) -> str:
    """:func:`hexaddr` as JSON."""
    return "null" if value is None else f'"{hex(value)}"'


def _stub_lines(records: Iterable[StubRecord], level: int) -> list[str]:
    """Each record's JSON object at ``level``: for the two record types, the
    line ``_flat(r.to_json())`` gives, written straight from the fields (a
    distribution kernel has 16,000 slots: no dict, no property call and no
    encoder call per field)."""
    lines: list[str] = []
    add = lines.append
    enc = _str
    names: dict[Any, str] = {None: "null"}  # kinds, owners, states: few distinct values
    for r in records:
        cls = type(r)
        if cls is not StubRecord and cls is not OolStubRecord:
            add(_dumps(r.to_json(), level))  # a record type of its own: the generic way
            continue
        st = r.stub
        index = r.index
        target = st.target
        toc = st.implied_toc
        sym = r.target_symbol
        kind = names.get(st.kind)
        if kind is None:
            kind = names[st.kind] = _json_str(st.kind)
        owner = names.get(r.target_owner)
        if owner is None:
            owner = names[r.target_owner] = _json_str(r.target_owner)
        head = ("{" if index is None else f'{{"index": {index}, ' if type(index) is int
                else f'{{"index": {_flat(index)}, ')
        target_text = "null" if target is None else f'"{hex(target)}"'
        sym_text = "null" if sym is None else enc(sym) if type(sym) is str else _json_str(sym)
        toc_text = "" if toc is None else f', "implied_toc": "{hex(toc)}"'
        text = (
            f'{head}"address": "{hex(st.address)}", "kind": {kind}, "target": {target_text}'
            f', "target_symbol": {sym_text}, "target_owner": {owner}{toc_text}'
            f', "magic_ok": {_BOOL[st.magic_ok]}'
        )
        if cls is OolStubRecord:
            assert isinstance(r, OolStubRecord)
            site = r.site
            site_sym = r.site_symbol
            state = names.get(r.site_state)
            if state is None:
                state = names[r.site_state] = _json_str(r.site_state)
            op = r.ftrace_op
            op_sym = names.get(r.ftrace_op_symbol)
            if op_sym is None:
                op_sym = names[r.ftrace_op_symbol] = _json_str(r.ftrace_op_symbol)
            site_text = "null" if site is None else f'"{hex(site)}"'
            site_sym_text = ("null" if site_sym is None else enc(site_sym)
                             if type(site_sym) is str else _json_str(site_sym))
            op_text = "null" if op is None else f'"{hex(op)}"'
            add(f'{text}, "site": {site_text}, "site_symbol": {site_sym_text}'
                f', "site_state": {state}, "ftrace_op": {op_text}, "ftrace_op_symbol": {op_sym}}}')
            continue
        add(text + "}")
    return lines


def _module_text(mod: ModuleRecord, level: int) -> str:
    """``_dumps(mod.to_json(), level)``, the same text, without the dicts."""
    if (type(mod).to_json is not ModuleRecord.to_json
            or not (mod.stubs or mod.ool_stubs or mod.tramp or mod.tramp_regs)):
        # a record type of its own, or a flat object (no slot at all: one line)
        return _dumps(mod.to_json(), level)
    pad = "  " * (level + 1)

    def array(records: list[StubRecord]) -> str:
        if not records:
            return "[]"
        inner = pad + "  "
        lines = _stub_lines(records, level + 2)
        return "[\n" + inner + (",\n" + inner).join(lines) + "\n" + pad + "]"

    def one(record: StubRecord | None) -> str:
        return "null" if record is None else _stub_lines((record,), level + 1)[0]

    fields = [
        f'"name": {_json_str(mod.name)}',
        f'"toc": {_json_hex(mod.toc)}',
        f'"toc_source": {_json_str(mod.toc_source)}',
        f'"stubs_section": {_json_hex(mod.stubs_section)}',
        f'"stubs": {array(mod.stubs)}',
        f'"tramp": {one(mod.tramp)}',
        f'"tramp_regs": {one(mod.tramp_regs)}',
    ]
    if mod.ool_stubs:
        fields.append(f'"ool_stubs": {array(mod.ool_stubs)}')
    return "{\n" + pad + (",\n" + pad).join(fields) + "\n" + "  " * level + "}"


def _sym(name: str | None, owner: str | None) -> str:
    if not name:
        return "-"
    return name if owner in (None, "vmlinux") else f"{name} [{owner}]"


def _stub_row(mod: ModuleRecord, s: StubRecord, index: Any, label: str) -> Sequence[Any]:
    return (
        mod.name,
        index,
        hexaddr(s.address),
        s.kind,
        hexaddr(s.target) or "-",
        _sym(s.target_symbol, s.target_owner),
        hexaddr(s.implied_toc) or "-",
        {True: "ok", False: "BAD", None: "-"}[s.magic_ok],
        label,
    )


def _ool_role(s: StubRecord) -> str:
    """``ool <- site_symbol (state)`` for an OOL stub row."""
    if not isinstance(s, OolStubRecord) or s.site is None:
        return "ool"
    return f"ool <- {s.site_symbol or hexaddr(s.site)} ({s.site_state})"


def _stub_rows(mod: ModuleRecord) -> list[Sequence[Any]]:
    specials = {}
    if mod.tramp is not None:
        specials[mod.tramp.address] = "tramp"
    if mod.tramp_regs is not None:
        specials[mod.tramp_regs.address] = "tramp_regs"
    rows = [_stub_row(mod, s, s.index, specials.get(s.address, "")) for s in mod.stubs]
    listed = {s.address for s in mod.stubs}
    for label, tramp in (("tramp", mod.tramp), ("tramp_regs", mod.tramp_regs)):
        if tramp is not None and tramp.address not in listed:
            rows.append(_stub_row(mod, tramp, "-", label))
    rows.extend(_stub_row(mod, s, "-", _ool_role(s)) for s in mod.ool_stubs)
    return rows


def _render_modules(report: Report, detail: bool) -> str:
    if detail:
        rows: list[Sequence[Any]] = []
        for mod in report.modules:
            rows.extend(_stub_rows(mod))
        return tabulate(
            rows,
            headers=(
                "module", "#", "stub", "kind", "target", "symbol", "implied TOC", "magic", "role"
            ),
        )
    rows = []
    for mod in report.modules:
        kinds: dict[str, int] = {}
        for s in mod.stubs:
            kinds[s.kind] = kinds.get(s.kind, 0) + 1
        rows.append(
            (
                mod.name,
                hexaddr(mod.toc) or "-",
                mod.toc_source,
                hexaddr(mod.stubs_section) or "-",
                len(mod.stubs),
                " ".join(f"{k}={v}" for k, v in sorted(kinds.items())) or "-",
                _sym(mod.tramp.target_symbol, None) if mod.tramp else "-",
                _sym(mod.tramp_regs.target_symbol, None) if mod.tramp_regs else "-",
            )
        )
    return tabulate(
        rows,
        headers=("module", "TOC", "from", ".stubs", "slots", "kinds", "tramp ->", "tramp_regs ->"),
    )


def _render_tasks(report: Report) -> str:
    rows: list[Sequence[Any]] = []
    for t in report.tasks or []:
        if not t.frames:
            # Only asked-for or damaged tasks are recorded without frames.
            rows.append((t.pid, t.comm, hexaddr(t.livepatch_sp) or "-", "-", "(empty)"))
            continue
        for i, f in enumerate(t.frames):
            rows.append(
                (
                    t.pid if i == 0 else "",
                    t.comm if i == 0 else "",
                    hexaddr(t.livepatch_sp) if i == 0 else "",
                    i,
                    hexaddr(f.address),
                    hexaddr(f.r2),
                    f.r2_owner or "?",
                    f.lr_symbol or hexaddr(f.lr),
                    "ok" if f.magic_ok else "BAD",
                )
            )
    if not rows:
        return "no task has livepatch stack frames"
    return tabulate(
        rows,
        headers=(
            "pid", "comm", "livepatch_sp", "#", "frame", "saved r2", "r2 owner", "saved LR", "magic"
        ),
    )


def _render_backtrace(report: Report) -> str:
    """Backtraces in the style of drgn's ``str(prog.stack_trace(pid))``."""
    parts: list[str] = []
    for t in report.tasks or []:
        if t.backtrace is None:
            continue
        lines = [
            f"pid {t.pid} ({t.comm})  livepatch_sp={hexaddr(t.livepatch_sp) or '-'}  "
            f"livepatch frames: {len(t.frames)}"
        ]
        for e in t.backtrace:
            pc = hexaddr(e.pc)
            line = f"#{e.index:<2} {e.symbol or pc} ({pc})"
            if e.corrected:
                was = e.original_symbol or hexaddr(e.original_pc)
                index = "?" if e.frame_index is None else e.frame_index
                line += f"  <- livepatch frame {index} (was {was})"
            elif e.note:
                line += f"  ({e.note})"
            lines.append(line)
        parts.append("\n".join(lines))
    return "\n\n".join(parts) if parts else "no backtrace"


def _where(f: Finding) -> str:
    where = f.module or f.file or ("-" if f.pid is None else f"pid {f.pid}")
    if f.pid is not None and f.module:
        where += f" pid {f.pid}"
    return where


def _at(f: Finding) -> str:
    """The address as a reader wants it: ``section+0xoff`` for a .ko offset, plus the
    symbol when known."""
    at = hexaddr(f.address) or "-"
    if f.section is not None and f.address is not None:
        at = f"{f.section}+{f.address:#x}"
    if f.symbol:
        at += f" <{f.symbol}>"
    return at


def _render_findings(report: Report) -> str:
    if not report.findings:
        return "no findings"
    rows = [(f.level.value, f.code, _where(f), _at(f), f.message) for f in report.findings]
    text = tabulate(rows, headers=("severity", "code", "where", "at", "message"))
    for f in report.findings:
        if f.context:
            text += f"\n\n{f.code} at {_at(f)}:\n" + "\n".join(
                "    " + line for line in f.context
            )
    return text


def render_table(report: Report) -> str:
    """The report as text tables, the parts named in ``report.sections``."""
    parts: list[str] = []
    if report.target or report.kernel:
        head = []
        if report.target:
            head.append(
                "target: "
                + " ".join(f"{k}={v}" for k, v in report.target.items() if v is not None)
            )
        if report.kernel:
            head.append(
                "kernel: "
                + " ".join(f"{k}={v}" for k, v in report.kernel.items() if v is not None)
            )
        parts.append("\n".join(head))
    for note in report.notes:
        parts.append(f"note: {note}")
    for section in report.sections:
        if section == "modules":
            parts.append(_render_modules(report, detail=False))
        elif section == "stubs":
            parts.append(_render_modules(report, detail=True))
        elif section == "tasks":
            parts.append(_render_tasks(report))
        elif section == "backtrace":
            parts.append(_render_backtrace(report))
        elif section == "findings":
            parts.append(_render_findings(report))
        else:  # a section a Report subclass renders itself (klpinspect.ftrace_view)
            extra = getattr(report, "render_section", None)
            text = extra(section) if extra is not None else None
            if text is not None:
                parts.append(text)
    return "\n\n".join(parts) + "\n"


def render(report: Report, fmt: str) -> str:
    """Render in ``fmt`` (``"table"`` or ``"json"``)."""
    if fmt == "json":
        return _render_json(report, "\n")
    return render_table(report)


def new_report(target: Target, kernel: KernelInfo, sections: tuple[str, ...]) -> Report:
    """A report with the ``target`` and ``kernel`` headers filled in."""
    head = {"kind": target.kind, "release": kernel.release, "arch": kernel.arch}
    # Where types and symbols came from: "dwarf", "btf+kallsyms" or "btf+symtab"
    # (drgn back end).
    debuginfo = getattr(target, "debuginfo", None)
    if debuginfo:
        head["debuginfo"] = debuginfo
    return Report(
        target=head,
        kernel={
            "toc": hexaddr(kernel.toc),
            "toc_source": kernel.toc_source,
            "ftrace_caller": hexaddr(kernel.ftrace_caller),
            "ftrace_regs_caller": hexaddr(kernel.ftrace_regs_caller),
        },
        sections=sections,
    )


def damage_findings(target: Target) -> list[Finding]:
    """The back end's record of structures it could not walk (``Target.damage``),
    one ``MEMORY_UNREADABLE`` finding each, or the code the record's ``codes``
    names (``LIST_CORRUPT``, :class:`klpinspect.backends.layout.Damage`)."""
    unreadable = FindingCode.MEMORY_UNREADABLE
    codes: dict[tuple[int | None, str], FindingCode] = getattr(target.damage, "codes", {})
    return [
        Finding(codes.get((addr, msg), unreadable), msg, address=addr)
        for addr, msg in target.damage
    ]
