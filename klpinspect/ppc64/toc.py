"""Module TOC (r2) values: from section addresses, from stubs, and whether they agree.

``my_r2()`` in ``arch/powerpc/kernel/module_64.c`` is the r2 a module runs
with and the base its normal stubs are built against:

* <= 4.9: ``sechdrs[toc_section].sh_addr + 0x8000``;
* 5.x+ (5.10 on; docs/kernel-facts.md §2): ``(sh_addr & ~0xff) + 0x8000``
  (the round-down covers r2 set up without a ``.toc``).

Without ``.toc`` the kernel uses ``.stubs`` as the TOC section.  Rather than
guess the era from a version number, :func:`resolve_module_toc` takes both
rules and lets the module's own normal stubs (which imply ``my_r2()`` exactly)
say which one the kernel used.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .stubs import Stub, StubKind

__all__ = (
    "KernelTocSource",
    "ModuleToc",
    "TOC_BIAS",
    "check_stub_tocs",
    "implied_tocs",
    "module_toc",
    "resolve_module_toc",
    "TocSource",
)

TOC_BIAS = 0x8000


class TocSource(StrEnum):
    """Where a module's TOC came from (``modules[].toc_source`` in the JSON)."""

    TOC = ".toc"  # the .toc section, with my_r2()'s rule
    STUBS_SECTION = ".stubs"  # no .toc: the kernel uses .stubs then
    ARCH_TOC = "arch.toc"  # <= 4.x mod->arch.toc
    STUBS = "stubs"  # only the stubs' implied value
    NONE = "none"  # PCREL modules have no TOC


class KernelTocSource(StrEnum):
    """Where the kernel TOC came from (``kernel.toc_source`` in the JSON)."""

    PACA = "paca"  # paca_ptrs[0]->kernel_toc, what ftrace stubs load
    TOC_SYMBOL = ".TOC."  # the link-time vmlinux symbol
    NONE = "none"  # PCREL kernels have no TOC
_PCREL_KINDS = frozenset({StubKind.PCREL, StubKind.PCREL_FTRACE})


def module_toc(section_address: int, *, rounded: bool = True) -> int:
    """``my_r2()`` for a TOC section at ``section_address``.

    :param section_address: address of ``.toc`` (or ``.stubs`` when there is no ``.toc``)
    :param rounded: the 5.x+ rule (round down to 256 bytes); ``False`` for <= 4.9
    """
    base = section_address & ~0xFF if rounded else section_address
    return base + TOC_BIAS


def implied_tocs(stubs: Iterable[Stub]) -> Counter[int]:
    """How many r2-relative stubs imply each TOC value."""
    return Counter(s.implied_toc for s in stubs if s.implied_toc is not None)


@dataclass(frozen=True)
class ModuleToc:
    """A module's TOC and where it came from.

    :param toc: the r2 value, or ``None`` when nothing tells it
    :param source: ``".toc"``, ``".stubs"`` (no ``.toc`` section), ``"arch.toc"`` (<= 4.x
        ``mod->arch.toc``), ``"stubs"`` (only the stubs' implied value), or ``"none"``
    :param rule: ``"rounded"`` (5.x+), ``"plain"`` (<= 4.9) or ``None``
    """

    toc: int | None
    source: TocSource
    rule: str | None = None


def resolve_module_toc(
    toc_section: int | None,
    stubs_section: int | None,
    stubs: Iterable[Stub] = (),
    *,
    arch_toc: int | None = None,
) -> ModuleToc:
    """The module's TOC from its sections, with the era's rule chosen by its stubs.

    :param toc_section: address of ``.toc`` (``None`` if the module has none)
    :param stubs_section: address of ``.stubs``
    :param stubs: the module's decoded stubs (their implied TOCs pick the rule)
    :param arch_toc: ``mod->arch.toc`` on kernels that have it (<= 4.x)
    """
    if arch_toc:
        return ModuleToc(arch_toc, TocSource.ARCH_TOC)
    stubs = list(stubs)
    if toc_section is None and any(s.kind in _PCREL_KINDS for s in stubs):
        if not any(s.kind.r2_relative for s in stubs):
            # CONFIG_PPC_KERNEL_PCREL: my_r2() is -1, the module has no TOC at all.
            return ModuleToc(None, TocSource.NONE)
    section, source = (
        (toc_section, TocSource.TOC)
        if toc_section is not None
        else (stubs_section, TocSource.STUBS_SECTION)
    )
    if section is None:
        seen = implied_tocs(stubs)
        if seen:
            return ModuleToc(seen.most_common(1)[0][0], TocSource.STUBS)
        return ModuleToc(None, TocSource.NONE)
    rounded = module_toc(section, rounded=True)
    plain = module_toc(section, rounded=False)
    if rounded != plain:
        implied = {s.implied_toc for s in stubs}  # one pass, no counting: millions of slots
        if plain in implied and rounded not in implied:
            return ModuleToc(plain, source, "plain")
    return ModuleToc(rounded, source, "rounded")


def check_stub_tocs(stubs: Iterable[Stub], toc: int) -> list[Stub]:
    """The r2-relative stubs whose implied TOC is not ``toc``."""
    return [s for s in stubs if s.implied_toc is not None and s.implied_toc != toc]
