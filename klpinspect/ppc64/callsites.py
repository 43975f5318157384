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
the words whose primary-opcode byte says "I-form branch" (found with
``bytes.translate`` and ``split`` over a strided view of the text) and tests
each one's ``word + 4*index`` against one set in a comprehension, with the
audit's correct ``bl``s (followed by the TOC restore) dropped there too, so
only the candidates run the loop that names the target with
:func:`~klpinspect.ppc64.insn.branch_target` and classifies the site: the
7 MB of module text of a distribution kernel take ~35 ms.
"""

from __future__ import annotations

import array
import sys
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum

from .insn import MFLR_R0, NOP, STD_R0_16_R1, branch_target, toc_restore

__all__ = ("CallFollow", "CallSite", "find_stub_calls")

# Byte holding the primary opcode in memory: the last byte of a word on LE,
# the first on BE.  Opcode 18 (I-form branch) is 0x48-0x4b in that byte.
_IS_BRANCH = bytes(1 if 0x48 <= b <= 0x4B else 0 for b in range(256))
_MASK64 = 0xFFFFFFFFFFFFFFFF
_HALF = 1 << 63


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
        return self.follow in _OK


_OK = (CallFollow.TOC_RESTORE, CallFollow.FTRACE)


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
    suspect_only: bool = False,
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
    :param suspect_only: only the sites that are not :attr:`CallSite.ok` (what an
        audit reports; a module has thousands of correct ones)
    :returns: the call sites in address order
    """
    if not stubs:
        return []
    stubset = stubs if isinstance(stubs, (set, frozenset)) else frozenset(stubs)
    tramps_set = frozenset(tramps)
    restore = toc_restore(abi)
    nwords = len(text) // 4
    little = byteorder == "little"
    # The opcode byte of word i is text[4*i+3] (LE) or text[4*i] (BE).
    opbytes = text[3 : nwords * 4 : 4] if little else text[0 : nwords * 4 : 4]
    # The branches: the gaps between them in the opcode bytes, one bytes.split.
    gaps = opbytes.translate(_IS_BRANCH).split(b"\x01")
    gaps.pop()  # the run after the last branch
    if not gaps:
        return []
    words = array.array("I")
    words.frombytes(text[: nwords * 4])
    if little != (sys.byteorder == "little"):
        words.byteswap()
    words.append(0)  # the word after the text, and words[-1] before it: never
    # the TOC restore nor mflr r0
    # A relative I-form branch w = 0x48000000 | LI | LK at word i reaches
    # address + 4*i + sext(LI); for a stub slot s at d = s - address that is
    # LI + 4*i == d, or d + 2**26 for a backward branch, so w + 4*i is one of
    # four numbers per slot (LK 1 or 0; LK is the low bit of w + 4*i).  That
    # only narrows the candidates (one set look-up a branch, in a comprehension:
    # a module's text has tens of thousands of branches); the loop below checks
    # each one with insn.branch_target, the one definition of a branch's target.
    # d as the 64-bit wrap sees it: the signed offset nearest to 0
    near = {((s - address + _HALF) & _MASK64) - _HALF + 0x48000000 + e
            for s in stubset for e in (0, 1, 0x04000000, 0x04000001)}
    i = -1
    if suspect_only:
        # Drop the correct ``bl``s here too: followed by the TOC restore, or
        # right after ``mflr r0`` (ftrace; the rarer gcc-5 form with
        # ``std r0,16(r1)`` between, and calls to the tramps, are left to the loop).
        hits = [
            i for n in map(len, gaps)
            if (k := words[(i := i + n + 1)] + 4 * i) in near
            and not (k & 1 and (words[i + 1] == restore or words[i - 1] == MFLR_R0))
        ]
    else:
        hits = [i for n in map(len, gaps) if words[(i := i + n + 1)] + 4 * i in near]
    out: list[CallSite] = []
    for i in hits:
        w = words[i]
        if w & 2:  # absolute (ba/bla): never a module call
            continue
        site = address + 4 * i
        tgt = branch_target(w, site)
        if tgt not in stubset:
            continue
        link = bool(w & 1)
        nxt: int | None = words[i + 1] if i + 1 < nwords else None
        if not link:
            follow = CallFollow.SIBLING
        elif nxt == restore:
            follow = CallFollow.TOC_RESTORE
        elif tgt in tramps_set or _is_mprofile_site(
            words[i - 1] if i >= 1 else None,
            words[i - 2] if i >= 2 else None,
        ):
            follow = CallFollow.FTRACE
        elif nxt == NOP:
            follow = CallFollow.NOP
        else:
            follow = CallFollow.OTHER
        if suspect_only and follow in _OK:
            continue
        out.append(CallSite(site, tgt, link, nxt, follow))
    return out
