"""Check out-of-line ftrace stubs (6.13+) the way the kernel builds and patches them.

With ``CONFIG_PPC_FTRACE_OUT_OF_LINE`` (commit eec37961a56a, "powerpc64/ftrace:
Move ftrace sequence out of line", v6.13) every traced function has a single
patchable word at its ftrace site (``rec->ip``) and a ``struct ftrace_ool_stub``
of its own (24 bytes: ``struct ftrace_ops *ftrace_op; u32 insn[4]``), in a
module's ``.stubs`` from ``mod->arch.ool_stubs`` on.
``arch/powerpc/kernel/trace/ftrace.c`` (Debian ``linux-source-7.2``):

* ``ftrace_init_ool_stub()`` writes ``{mflr r0; bl mod->arch.tramp; mtlr r0;
  b rec->ip + 4}`` into the next stub (``ool_stub_index``) and sets
  ``rec->arch.ool_stub = &ool_stub->insn[0]``; records are initialised in
  ``ip`` order, so stub *i* serves the module's *i*-th site;
* ``ftrace_replace_code()`` / ``ftrace_make_call()`` retarget ``insn[1]``
  with ``ftrace_get_call_inst()``: ``bl`` ``ftrace_caller`` or
  ``ftrace_regs_caller`` when in branch range, otherwise the module's own
  trampoline stub for it (``ftrace_lookup_module_stub()``: ``arch.tramp`` or
  ``arch.tramp_regs``); direct calls go through ``FTRACE_ADDR`` too;
* the site word itself toggles between ``nop`` (disabled) and
  ``b &ool_stub->insn[0]`` (enabled); ``ftrace_rec_set_ops()`` stores the
  owning ``ftrace_ops`` (``&ftrace_nop_ops`` while disabled,
  ``&ftrace_list_ops`` when several ops share the site) in ``ftrace_op``.

Pure functions over decoded :class:`~klpinspect.ppc64.stubs.Stub` values and
the instruction words read at the sites; no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .insn import NOP, branch_target, is_b
from .stubs import Stub, StubKind

__all__ = (
    "OOL_CODES",
    "OolCheck",
    "OolCode",
    "OolProblem",
    "SiteState",
    "check_ool_stubs",
    "ool_insn0",
    "site_state",
)


class OolCode(StrEnum):
    """What failed; each value is a :class:`klpinspect.report.FindingCode` (all errors)."""

    TRAMP_MISMATCH = "OOL_STUB_TRAMP_MISMATCH"  # insn[1] misses the module's ftrace trampoline
    RETURN_MISMATCH = "OOL_STUB_RETURN_MISMATCH"  # insn[3] does not return to site + 4
    SITE_NOT_PATCHED = "OOL_SITE_NOT_PATCHED"  # the site is neither "b this stub" nor a nop
    SITE_CLAIMED_TWICE = "OOL_SITE_CLAIMED_TWICE"  # two stubs return to one site


OOL_CODES = tuple(OolCode)

_INSN0 = 8  # offsetof(struct ftrace_ool_stub, insn): after the ftrace_op pointer


class SiteState(StrEnum):
    """What the word at the ftrace site (``rec->ip``) says about this stub."""

    ENABLED = "enabled"  # b &ool_stub->insn[0]
    DISABLED = "disabled"  # nop
    OTHER = "other"  # anything else: a finding
    UNREADABLE = "unreadable"  # the site could not be read


@dataclass(frozen=True)
class OolProblem:
    """One check that failed: a finding code, the stub's address, a one-line message."""

    code: OolCode
    stub: int
    message: str
    site: int | None = None


@dataclass(frozen=True, slots=True)
class OolCheck:
    """One OOL stub with its site and what the site says.

    :param stub: the decoded ``struct ftrace_ool_stub``
    :param site: the ftrace site (``rec->ip``): from the ftrace record when the
        caller knows it, else from the stub's closing ``b`` (target - 4)
    :param state: the site word's state
    :param site_word: the instruction word read at ``site``
    :param ftrace_op: ``ool_stub->ftrace_op`` (``struct ftrace_ops *``)
    """

    stub: Stub
    site: int | None
    state: SiteState
    site_word: int | None
    ftrace_op: int | None


class _CheckBuilder:
    """A slot bag with :class:`OolCheck`'s layout: one record per stub built with plain
    slot stores and one class switch, several times cheaper than the frozen
    ``__init__`` (as ``stubs._StubBuilder``); every slot must be set."""

    __slots__ = OolCheck.__slots__


def ool_insn0(stub: Stub) -> int:
    """``&ool_stub->insn[0]``: what ``rec->arch.ool_stub`` and an enabled site point at."""
    return stub.address + _INSN0


def site_state(word: int | None, site: int, stub: Stub) -> SiteState:
    """Classify the word at ``site``: ``b`` to this stub's ``insn[0]``, ``nop``, or other."""
    if word is None:
        return SiteState.UNREADABLE
    if word == NOP:
        return SiteState.DISABLED
    if is_b(word) and branch_target(word, site) == ool_insn0(stub):
        return SiteState.ENABLED
    return SiteState.OTHER


def _describe(word: int, site: int) -> str:
    if is_b(word):
        return f"b {branch_target(word, site):#x}"
    return f"{word:08x}"


def _in(ranges: Sequence[tuple[int, int]], address: int) -> bool:
    for start, end in ranges:
        if start <= address < end:
            return True
    return False


def check_ool_stubs(
    stubs: Iterable[Stub],
    *,
    tramps: Collection[int],
    site_words: Mapping[int, int],
    recorded_sites: Mapping[int, int] | None = None,
    text_ranges: Sequence[tuple[int, int]] = (),
) -> tuple[list[OolCheck], list[OolProblem]]:
    """Check a module's used OOL stubs against the kernel's construction.

    :param stubs: the module's OOL stubs (``for_each_ool_stub``); zero (unused)
        entries are skipped, unrecognised ones are the caller's ``STUB_UNKNOWN``
    :param tramps: where ``insn[1]`` may branch: the module's ``arch.tramp`` and
        ``arch.tramp_regs`` (and ``ftrace_caller``/``ftrace_regs_caller``, which a
        ``bl`` can only name when in range, as ``ftrace_get_call_inst()`` does)
    :param site_words: site address -> instruction word read there (a site
        missing from it is unreadable)
    :param recorded_sites: ``&insn[0]`` -> ``rec->ip`` from the ftrace records
        (``dyn_ftrace.arch.ool_stub``), when the caller could read them
    :param text_ranges: the module's text; without ftrace records, a closing
        ``b`` that lands outside it cannot return to any site of this module
    """
    checks: list[OolCheck] = []
    problems: list[OolProblem] = []
    claimed: dict[int, Stub] = {}
    tramp_set = frozenset(tramps)
    ranges = tuple(text_ranges)
    kind, disabled, unreadable = StubKind.OOL_FTRACE, SiteState.DISABLED, SiteState.UNREADABLE
    for stub in stubs:
        if stub.kind is not kind:
            continue
        returns_to = stub.site  # b target - 4
        site = returns_to
        if recorded_sites is not None:
            site = recorded_sites.get(stub.address + _INSN0, returns_to)
        if stub.target not in tramp_set:
            want = " or ".join(f"{t:#x}" for t in sorted(tramp_set)) or "none known"
            problems.append(
                OolProblem(
                    OolCode.TRAMP_MISMATCH,
                    stub.address,
                    f"insn[1] is bl {stub.target:#x}, not this module's ftrace trampoline "
                    f"({want})",
                    site,
                )
            )
        if returns_to is not None and site is not None and returns_to != site:
            problems.append(
                OolProblem(
                    OolCode.RETURN_MISMATCH,
                    stub.address,
                    f"insn[3] returns to {returns_to + 4:#x}, not to the ftrace record's "
                    f"site {site:#x} + 4",
                    site,
                )
            )
        elif returns_to is not None and ranges and not _in(ranges, returns_to):
            problems.append(
                OolProblem(
                    OolCode.RETURN_MISMATCH,
                    stub.address,
                    f"insn[3] returns to {returns_to + 4:#x}, outside the module's text: "
                    "no ftrace site of this module",
                    site,
                )
            )
        if site is None:
            word, state = None, unreadable
        else:
            word = site_words.get(site)
            state = disabled if word == NOP else site_state(word, site, stub)
            if state is SiteState.OTHER and word is not None:
                problems.append(
                    OolProblem(
                        OolCode.SITE_NOT_PATCHED,
                        stub.address,
                        f"site {site:#x} holds {_describe(word, site)}: neither b "
                        f"{ool_insn0(stub):#x} (this stub, enabled) nor nop (disabled)",
                        site,
                    )
                )
            other = claimed.setdefault(site, stub)
            if other is not stub:
                problems.append(
                    OolProblem(
                        OolCode.SITE_CLAIMED_TWICE,
                        stub.address,
                        f"site {site:#x} is also claimed by the stub at {other.address:#x}",
                        site,
                    )
                )
        check: Any = _CheckBuilder()
        check.stub = stub
        check.site = site
        check.state = state
        check.site_word = word
        check.ftrace_op = stub.funcdata
        check.__class__ = OolCheck
        checks.append(check)
    return checks, problems
