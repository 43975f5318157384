"""Call sites that branch into a module's ``.stubs``, and what follows them.

Every cross-TOC call from a module goes ``bl <stub>`` and the stub saves the
caller's r2 at ``R2_STACK_OFFSET(r1)`` (``std r2,24(r1)``; 40 on ELFv1).
``apply_relocate_add()`` then has ``restore_r2()`` turn the ``nop`` after the
``bl`` into ``ld r2,24(r1)`` (docs/kernel-facts.md §3).  This module finds every I-form
``bl``/``b`` whose target is a stub slot and says what follows it:

* ``toc-restore``: ``ld r2,24(r1)`` (``ld r2,40(r1)`` on ELFv1), correct;
* ``nop``: never patched, so r2 keeps the callee's TOC after the return;
* ``other``: anything else, same problem;
* ``sibling``: a ``b`` (no link), i.e. a tail call through a stub.  The stub's
  ``std r2,24(r1)`` then overwrites the TOC save slot of the *caller's
  caller*, which restores the wrong r2;
* ``ftrace``: the ``-mprofile-kernel`` ``mflr r0; bl <tramp>`` at a function's
  local entry (or a ``bl`` to ``mod->arch.tramp``/``tramp_regs``).  The ftrace
  stubs load the kernel TOC themselves and never touch the saved r2, so no
  restore is needed: ``restore_r2()`` skips these calls
  (``is_mprofile_ftrace_call()``, and ``is_early_mcount_callsite()`` before
  that).

Pure: bytes and integers in, frozen dataclasses out.  The scan looks only at
the words whose primary-opcode byte says "I-form branch" (found with a C-speed
byte search over a strided view of the text), so a 5 MB text takes a few
tens of milliseconds.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from .insn import MFLR_R0, NOP, STD_R0_16_R1, toc_restore

__all__ = ("CallFollow", "CallSite", "find_stub_calls")

# Byte holding the primary opcode in memory: the last byte of a word on LE,
# the first on BE.  Opcode 18 (I-form branch) is 0x48-0x4b in that byte.
_BRANCH_BYTE = re.compile(rb"[\x48-\x4b]")


class CallFollow(StrEnum):
    """What a branch into a stub is followed by (see the module docstring)."""

    TOC_RESTORE = "toc-restore"
    NOP = "nop"
    OTHER = "other"
    SIBLING = "sibling"
    FTRACE = "ftrace"


@dataclass(frozen=True)
class CallSite:
    """One ``bl``/``b`` into a stub.

    :param address: address of the branch instruction
    :param target: the stub slot it branches to
    :param link: ``bl`` (True) or ``b`` (False)
    :param next_word: the instruction word after the branch (``None`` at the
        end of the text)
    :param follow: classification of the site
    """

    address: int
    target: int
    link: bool
    next_word: int | None
    follow: CallFollow

    @property
    def ok(self) -> bool:
        """Whether the kernel's TOC rules are met at this site."""
        return self.follow in (CallFollow.TOC_RESTORE, CallFollow.FTRACE)


def _is_mprofile_site(prev: int | None, prev2: int | None) -> bool:
    # -mprofile-kernel: "mflr r0; bl _mcount", gcc 5 puts "std r0,16(r1)"
    # between them (docs/kernel-facts.md §3).  r0 is volatile in the ABI, so a compiler never
    # leaves "mflr r0" right before an ordinary call.
    return prev == MFLR_R0 or (prev == STD_R0_16_R1 and prev2 == MFLR_R0)


def find_stub_calls(
    text: bytes,
    address: int,
    stubs: Collection[int],
    *,
    tramps: Collection[int] = (),
    byteorder: str = "little",
    abi: int = 2,
) -> list[CallSite]:
    """Every relative ``bl``/``b`` in ``text`` whose target is a stub slot.

    :param text: the bytes of an executable region (a module's ``.text``,
        ``.text.unlikely``, init text, or the whole ``mod->mem[MOD_TEXT]``)
    :param address: the load address of ``text[0]`` (word aligned)
    :param stubs: the start addresses of the module's used ``.stubs`` slots
        (``struct ppc64_stub_entry *``), a set for O(1) look-ups; the
        out-of-line ftrace area (``mod->arch.ool_stubs``) must not be in it
    :param tramps: ``mod->arch.tramp`` and ``mod->arch.tramp_regs`` (and any
        other ftrace stub): a ``bl`` to one of them never needs a TOC restore
    :param byteorder: ``"little"`` or ``"big"``
    :param abi: 2 (ELFv2, restore is ``ld r2,24(r1)``) or 1 (ELFv1, ``ld r2,40(r1)``)
    :returns: the call sites in address order
    """
    if not stubs:
        return []
    stubset = stubs if isinstance(stubs, (set, frozenset)) else frozenset(stubs)
    tramps_set = frozenset(tramps)
    lo = min(stubset)
    hi = max(stubset)
    restore = toc_restore(abi)
    nwords = len(text) // 4
    little = byteorder == "little"
    word_at = struct.Struct("<I" if little else ">I").unpack_from
    # The opcode byte of word i is text[4*i+3] (LE) or text[4*i] (BE).
    opbytes = text[3 : nwords * 4 : 4] if little else text[0 : nwords * 4 : 4]
    out: list[CallSite] = []
    for m in _BRANCH_BYTE.finditer(opbytes):
        i = m.start()
        (w,) = word_at(text, 4 * i)
        if w & 2:  # absolute (ba/bla): never a module call
            continue
        disp = ((w & 0x03FFFFFC) ^ 0x02000000) - 0x02000000
        site = address + 4 * i
        tgt = (site + disp) & 0xFFFFFFFFFFFFFFFF
        if tgt < lo or tgt > hi or tgt not in stubset:
            continue
        link = bool(w & 1)
        nxt: int | None = word_at(text, 4 * i + 4)[0] if i + 1 < nwords else None
        if not link:
            follow = CallFollow.SIBLING
        elif nxt == restore:
            follow = CallFollow.TOC_RESTORE
        elif tgt in tramps_set or _is_mprofile_site(
            word_at(text, 4 * i - 4)[0] if i >= 1 else None,
            word_at(text, 4 * i - 8)[0] if i >= 2 else None,
        ):
            follow = CallFollow.FTRACE
        elif nxt == NOP:
            follow = CallFollow.NOP
        else:
            follow = CallFollow.OTHER
        out.append(CallSite(site, tgt, link, nxt, follow))
    return out
