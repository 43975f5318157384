"""Offline lint of ppc64 kernel modules (``.ko``): calls that go through stubs.

No kernel needed: the ELF file is read with pyelftools and every branch
relocation is judged exactly as the kernel's ``apply_relocate_add()`` and
``restore_r2()`` will judge it at load time (docs/kernel-facts.md §3), for ELFv2 (ppc64le)
and ELFv1 (big-endian) objects:

* An ``R_PPC64_REL24`` against an undefined (``SHN_UNDEF``) or a livepatch
  (``SHN_LIVEPATCH``, ``.klp.sym.*``, or in a ``.klp.rela.*`` section) symbol
  is routed through a ``.stubs`` stub, which saves r2 at ``24(r1)`` (40 on
  ELFv1).  The word after the ``bl`` must then be a ``nop`` for
  ``restore_r2()`` to turn into ``ld r2,24(r1)``; already ``ld r2,24(r1)`` is
  accepted (6.12+ does; it is what a reloaded livepatch target leaves).
  Anything else: ``KO_CALL_NEEDS_NOP`` (the load fails with "Expected nop after
  call" / "Expect noop after relocate").
* The same relocation on a ``b`` (no link) is a sibling call through a stub:
  ``restore_r2()`` lets it pass, but at run time the stub's ``std r2,24(r1)``
  overwrites the TOC saved by the caller's caller: ``KO_SIBLING_CALL``.
* Calls the kernel exempts are skipped the way it does: ``_mcount``,
  ``ftrace_caller`` and ``ftrace_regs_caller`` on ELFv2
  (``is_mprofile_ftrace_call()``; those ``-mprofile-kernel`` sites are
  ``mflr r0; bl _mcount`` with no nop), and ``R_PPC64_REL24_NOTOC`` (PCREL
  code has no TOC to restore and its stubs do not save r2).
* ``KO_LOCAL_CALL_BECOMES_GLOBAL``: a livepatch relocation whose target was
  local (``static``) in the patched object.  In the original object the call
  was a direct ``bl`` to the callee's local entry in the same TOC; in the
  livepatch module it crosses TOCs through a stub.  The ``.ko`` alone cannot
  show the patched object's symbol table, so "local" is decided from what
  the livepatch module itself proves, any of:

  1. the ``.klp.sym`` symbol is ``STB_LOCAL`` (kpatch's create-klp-module and
     klp-convert keep the original binding when they rename a symbol);
  2. its ``sympos`` (``.klp.sym.<obj>.<name>,<sympos>``) is above 0: only
     duplicate names need a position, and a name can only repeat among an
     object's ``static`` functions;
  3. the name is a compiler-made local clone (``.constprop.N``, ``.isra.N``,
     ``.part.N``, ``.cold``, ``.localalias``);
  4. the call site itself: a ``bl`` with no nop after it, or a ``b``.  The
     compiler only emits those for a callee it knew to bind locally.

  A unique ``static`` name called with a nop after it (rules 1-4 all false)
  cannot be told apart from a non-exported global; that call is correct
  either way.  The seed case, ``meminfo_proc_show`` livepatched and calling
  the ``static`` ``show_val_kb()`` of ``fs/proc/meminfo.c`` with no nop, gives
  ``KO_CALL_NEEDS_NOP`` and this warning.

Bad input (not an ELF file, not ppc64, not relocatable, truncated) gives one
``KO_UNREADABLE`` finding for that file; a module without relocations gives
``KO_NO_RELOCATIONS`` (info).  The other files are still linted.
"""

from __future__ import annotations

import io
import lzma
import struct
import zlib
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from elftools.common.exceptions import ELFError, ELFParseError
from elftools.construct import ConstructError
from elftools.elf.elffile import ELFFile

from .elf64 import (
    ELF64_RELA_SIZE,
    ELF64_SHDR_SIZE,
    ELF64_SYM_SIZE,
    iter_syms,
    rela_struct,
    shdr_struct,
    sym_struct,
)
from .errors import KlpError
from .kofile import elf_image, module_name
from .ppc64.insn import NOP, toc_restore
from .report import EXIT_ERROR_FINDING, EXIT_OK, EXIT_UNUSABLE, Finding, FindingCode, Report

__all__ = ("KlpSym", "lint_files", "lint_ko", "parse_klp_sym")

EM_PPC64 = 21
SHN_UNDEF = 0
SHN_LIVEPATCH = 0xFF20  # include/uapi/linux/elf.h
SHF_EXECINSTR = 0x4
SHF_RELA_LIVEPATCH = 0x00100000
SHT_RELA = 4
SHT_SYMTAB = 2
SHT_NOBITS = 8
STB_LOCAL = 0
STT_FUNC = 2
R_PPC64_REL24 = 10
R_PPC64_REL24_NOTOC = 116
KLP_SYM_PREFIX = ".klp.sym."
KLP_RELA_PREFIX = ".klp.rela."
# is_mprofile_ftrace_call() (arch/powerpc/kernel/module_64.c, since the 2020
# -mprofile-kernel stub series; docs/kernel-facts.md §1).
_MPROFILE_NAMES = frozenset({"_mcount", "ftrace_caller", "ftrace_regs_caller"})
_CLONE_MARKS = (".constprop.", ".isra.", ".part.", ".cold", ".localalias")
# Errors pyelftools and the decompressors raise on damaged input.
_BAD_INPUT = (
    ELFError,
    ELFParseError,
    ConstructError,
    struct.error,
    EOFError,
    ValueError,
    IndexError,
    lzma.LZMAError,
    zlib.error,
    OSError,
)


@dataclass(frozen=True)
class KlpSym:
    """A parsed ``.klp.sym.<objname>.<name>,<sympos>`` symbol name."""

    objname: str
    name: str
    sympos: int


def parse_klp_sym(name: str) -> KlpSym | None:
    """Split a livepatch symbol name; ``None`` if it is not one.

    :param name: e.g. ``.klp.sym.vmlinux.show_val_kb,0``
    """
    if not name.startswith(KLP_SYM_PREFIX):
        return None
    rest = name[len(KLP_SYM_PREFIX) :]
    obj, dot, sym = rest.partition(".")  # module names contain no dots
    sym, comma, pos = sym.rpartition(",")
    if not dot or not comma or not pos.isdigit():
        return None
    return KlpSym(obj, sym, int(pos))




def _cstr(table: bytes, offset: int) -> str:
    end = table.find(b"\0", offset)
    return table[offset : end if end >= 0 else len(table)].decode("utf-8", "replace")


class _Shdr(NamedTuple):
    """One ``Elf64_Shdr`` with its name resolved."""

    name: str
    type: int
    flags: int
    offset: int
    size: int
    link: int
    info: int


@dataclass
class _Object:
    """What one ``.ko`` lint needs, read once."""

    path: str
    raw: bytes
    byteorder: str
    abi: int
    sections: list[_Shdr]
    module: str = ""
    symtab: bytes = b""
    strtab: bytes = b""
    _syms: dict[int, tuple[str, int, int]] = field(default_factory=dict)
    _funcs: dict[int, tuple[list[int], list[tuple[str, int]]]] = field(default_factory=dict)

    @property
    def _symfmt(self) -> struct.Struct:
        return sym_struct(self.byteorder)

    def section_data(self, index: int) -> bytes:
        sec = self.sections[index]
        if sec.type == SHT_NOBITS:
            return b""
        if sec.offset + sec.size > len(self.raw):
            raise KlpError(f"truncated: section {sec.name or index} ends past the end of the file")
        return self.raw[sec.offset : sec.offset + sec.size]

    def section_index(self, name: str) -> int | None:
        for i, sec in enumerate(self.sections):
            if sec.name == name:
                return i
        return None

    def symbol(self, index: int) -> tuple[str, int, int]:
        """``(name, binding, shndx)`` of symbol ``index`` (cached: calls repeat callees)."""
        hit = self._syms.get(index)
        if hit is not None:
            return hit
        off = index * ELF64_SYM_SIZE
        if off + ELF64_SYM_SIZE > len(self.symtab):
            raise KlpError(f"relocation against symbol {index}, past the symbol table")
        st_name, info, _other, shndx, _value, _size = self._symfmt.unpack_from(self.symtab, off)
        hit = (_cstr(self.strtab, st_name), info >> 4, shndx)
        self._syms[index] = hit
        return hit

    def _functions(self, shndx: int) -> tuple[list[int], list[tuple[str, int]]]:
        """Sorted function starts in section ``shndx`` (``.opd`` entries on ELFv1)."""
        if shndx in self._funcs:
            return self._funcs[shndx]
        found: dict[int, str] = {}
        for st_name, info, _other, sh, value, _size in iter_syms(self.symtab, self.byteorder):
            if sh == shndx and info & 0xF == STT_FUNC:
                found.setdefault(value, _cstr(self.strtab, st_name))
        if not found and self.abi == 1:
            found = self._opd_entries(shndx)
        starts = sorted(found)
        self._funcs[shndx] = (starts, [(found[s], s) for s in starts])
        return self._funcs[shndx]

    def _opd_entries(self, shndx: int) -> dict[int, str]:
        """ELFv1: function symbols live in ``.opd``; its relocations give the code."""
        opd = self.section_index(".opd")
        if opd is None:
            return {}
        names: dict[int, str] = {}
        syms = list(iter_syms(self.symtab, self.byteorder))
        for st_name, info, _other, sh, value, _size in syms:
            if sh == opd and info & 0xF == STT_FUNC:
                names[value] = _cstr(self.strtab, st_name)
        out: dict[int, str] = {}
        rfmt = rela_struct(self.byteorder)
        for index, sec in enumerate(self.sections):
            if sec.type != SHT_RELA or sec.info != opd:
                continue
            for r_offset, r_info, addend in rfmt.iter_unpack(self.section_data(index)):
                sym = r_info >> 32
                if r_offset in names and sym < len(syms) and syms[sym][3] == shndx:
                    out[syms[sym][4] + addend] = names[r_offset]
        return out

    def symbolize(self, shndx: int, offset: int) -> str | None:
        """``function+0xoff`` for ``offset`` in section ``shndx``."""
        starts, entries = self._functions(shndx)
        i = bisect_right(starts, offset) - 1
        if i < 0:
            return None
        name, start = entries[i]
        return f"{name}+{offset - start:#x}"


def _section_headers(elf: ELFFile, raw: bytes, byteorder: str) -> list[_Shdr]:
    """All section headers, unpacked in bulk (pyelftools parses one at a time)."""
    shoff = elf.header["e_shoff"]
    count = elf.num_sections()
    size = ELF64_SHDR_SIZE
    if elf.header["e_shentsize"] != size or shoff + size * count > len(raw):
        raise KlpError("truncated or damaged section header table")
    heads = list(shdr_struct(byteorder).iter_unpack(raw[shoff : shoff + size * count]))
    strndx = elf.get_shstrndx()
    if not 0 <= strndx < count:
        raise KlpError("damaged ELF file: no section name table")
    _n, _t, _f, _a, stroff, strsize, *_rest = heads[strndx]
    names = raw[stroff : stroff + strsize]
    if len(names) != strsize:
        raise KlpError("truncated: the section name table ends past the end of the file")
    return [
        _Shdr(_cstr(names, n), t, f, off, size, link, info)
        for n, t, f, _addr, off, size, link, info, _align, _ent in heads
    ]


def _open(path: str) -> _Object:
    """Read and check ``path``; raise :class:`KlpError` with a one-line reason."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise KlpError(f"cannot read: {e.strerror or e}") from e
    raw = elf_image(raw)
    try:
        elf = ELFFile(io.BytesIO(raw))
        machine = elf.header["e_machine"]
        etype = elf.header["e_type"]
        flags = elf.header["e_flags"]
        byteorder = "little" if elf.little_endian else "big"
        if machine != "EM_PPC64":
            raise KlpError(f"not a ppc64 object (e_machine {machine})")
        if etype != "ET_REL":
            raise KlpError(f"not a relocatable object (.ko): e_type {etype}")
        sections = _section_headers(elf, raw, byteorder)
    except _BAD_INPUT as e:
        raise KlpError(f"damaged ELF file: {e}") from e
    # EF_PPC64_ABI: 1 = ELFv1, 2 = ELFv2, 0 = unspecified (ELFv1 on BE, ELFv2 on LE).
    abi = flags & 3 or (2 if byteorder == "little" else 1)
    obj = _Object(path, raw, byteorder, abi, sections)
    mi = obj.section_index(".modinfo")
    obj.module = module_name(path, None if mi is None else obj.section_data(mi))
    return obj


def _lint(path: str) -> list[Finding]:
    """The findings for one file; :class:`KlpError` when it cannot be used."""
    obj = _open(path)
    try:
        return _lint_object(obj)
    except _BAD_INPUT as e:
        raise KlpError(f"damaged ELF file: {e}") from e


def _lint_object(obj: _Object) -> list[Finding]:
    sections = obj.sections
    relas = [(i, s) for i, s in enumerate(sections) if s.type == SHT_RELA and s.size]
    if not relas:
        return [
            Finding(
                code=FindingCode.KO_NO_RELOCATIONS,
                message="no relocations: no call site to check",
                file=obj.path,
                module=obj.module,
            )
        ]
    symtabs = [i for i, s in enumerate(sections) if s.type == SHT_SYMTAB]
    if not symtabs:
        raise KlpError("relocations but no symbol table")
    obj.symtab = obj.section_data(symtabs[0])
    link = sections[symtabs[0]].link
    if not 0 < link < len(sections):
        raise KlpError("damaged ELF file: the symbol table has no string table")
    obj.strtab = obj.section_data(link)

    little = obj.byteorder == "little"
    rfmt = rela_struct(obj.byteorder)
    word = struct.Struct("<I" if little else ">I").unpack_from
    restore = toc_restore(obj.abi)
    findings: list[Finding] = []
    for ridx, rela in relas:
        tidx = rela.info
        if not 0 < tidx < len(sections):
            continue
        tsec = sections[tidx]
        if not tsec.flags & SHF_EXECINSTR:
            continue  # branches only live in code; skips the big .rela.debug_*
        klp_sec = rela.name.startswith(KLP_RELA_PREFIX) or bool(rela.flags & SHF_RELA_LIVEPATCH)
        rdata = obj.section_data(ridx)
        if len(rdata) % ELF64_RELA_SIZE:
            raise KlpError(
                f"{rela.name}: size {len(rdata)} is not a multiple of {ELF64_RELA_SIZE}"
            )
        text: bytes | None = None
        for r_offset, r_info, _addend in rfmt.iter_unpack(rdata):
            if r_info & 0xFFFFFFFF != R_PPC64_REL24:
                continue  # REL24_NOTOC: PCREL, nothing to restore
            name, bind, shndx = obj.symbol(r_info >> 32)
            klp = klp_sec or shndx == SHN_LIVEPATCH or name.startswith(KLP_SYM_PREFIX)
            if not klp and shndx != SHN_UNDEF:
                continue  # a direct branch to a local entry, no stub
            callee = name[1:] if obj.abi == 1 and name.startswith(".") else name
            if obj.abi == 2 and callee in _MPROFILE_NAMES:
                continue
            if text is None:
                text = obj.section_data(tidx)
            if r_offset + 4 > len(text):
                continue  # NOBITS or a bogus offset: nothing the kernel would patch
            (insn,) = word(text, r_offset)
            if insn >> 26 != 18 or insn & 2:
                continue  # restore_r2() only acts after a relative link branch
            is_link = bool(insn & 1)
            nxt = word(text, r_offset + 4)[0] if r_offset + 8 <= len(text) else None
            bad_shape = not is_link or nxt not in (NOP, restore)
            why = _local_evidence(name, bind, bad_shape) if klp else None
            if not bad_shape and why is None:
                continue
            site = Finding(
                code=FindingCode.KO_CALL_NEEDS_NOP,
                message="",
                file=obj.path,
                module=obj.module,
                address=r_offset,
                section=tsec.name,
                symbol=obj.symbolize(tidx, r_offset),
            )
            shown = _shown_name(name)
            if not is_link:
                findings.append(
                    replace(
                        site,
                        code=FindingCode.KO_SIBLING_CALL,
                        message=(
                            f"sibling call (b) to {shown} goes through a stub whose "
                            f"std r2,{24 if obj.abi == 2 else 40}(r1) overwrites the TOC "
                            "saved by the caller's caller (restore_r2() accepts it; the "
                            "caller's caller may reload a wrong r2); fix: "
                            '__attribute__((optimize("-fno-optimize-sibling-calls"))) '
                            "on the caller"
                        ),
                    )
                )
            elif bad_shape:
                after = "nothing (end of section)" if nxt is None else f"{nxt:08x}"
                findings.append(
                    replace(
                        site,
                        message=(
                            f"bl {shown} goes through a stub but is followed by {after}, "
                            'not a nop: loading fails with "Expected nop after call"'
                        ),
                    )
                )
            if why:
                findings.append(
                    replace(
                        site,
                        code=FindingCode.KO_LOCAL_CALL_BECOMES_GLOBAL,
                        message=(
                            f"livepatch call to {shown}, local to its object ({why}), "
                            "now crosses TOCs through a stub"
                        ),
                    )
                )
    return findings


def _shown_name(name: str) -> str:
    k = parse_klp_sym(name)
    return f"{k.objname}:{k.name},{k.sympos}" if k else name


def _local_evidence(name: str, bind: int, bad_shape: bool) -> str | None:
    """Why a livepatch relocation's target was local (rules 1-4 above), or ``None``."""
    if bind == STB_LOCAL:
        return "STB_LOCAL symbol"
    k = parse_klp_sym(name)
    if k is not None and k.sympos > 0:
        return f"sympos {k.sympos}: a duplicated, so static, name"
    base = k.name if k is not None else name
    if any(mark in base for mark in _CLONE_MARKS):
        return "a compiler-made local clone"
    if bad_shape:
        return "the compiler called it as a local function"
    return None


def lint_ko(path: str) -> list[Finding]:
    """Lint one ``.ko`` (or ``.ko.xz``/``.ko.gz``) file.

    :returns: its findings; a single ``KO_UNREADABLE`` finding when the file
        cannot be used (not an ELF, not ppc64, not relocatable, truncated)
    """
    try:
        return _lint(path)
    except KlpError as e:
        return [_unreadable(path, str(e))]


def _unreadable(path: str, reason: str) -> Finding:
    return Finding(
        code=FindingCode.KO_UNREADABLE,
        message=reason,
        file=path,
        module=module_name(path, None),
    )


def lint_files(paths: Sequence[str]) -> tuple[Report, int]:
    """Lint every file; a bad file is one finding and the others go on.

    :returns: the report (``sections=("findings",)``) and the exit status:
        1 when any error finding exists, 2 when no file could be read at all,
        else 0
    """
    report = Report(target={"kind": "ko", "files": len(paths)}, sections=("findings",))
    readable = 0
    for path in paths:
        try:
            report.extend(_lint(path))
            readable += 1
        except KlpError as e:
            report.add(_unreadable(path, str(e)))
    report.notes.append(f"{readable} of {len(paths)} files linted")
    if paths and readable == 0:
        return report, EXIT_UNUSABLE
    if report.exit_status == EXIT_ERROR_FINDING:
        return report, EXIT_ERROR_FINDING
    return report, EXIT_OK
