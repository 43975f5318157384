"""Open a ppc64 kernel as a ``drgn.Program``: vmcores, QEMU dumps, /proc/kcore, QMP.

drgn 0.3.0 opens ELF vmcores and the running kernel by itself.  Two kinds of
dump need help, and get a *custom* Linux kernel program
(``Program.set_linux_kernel_custom``) whose physical memory is read by us and
whose virtual addresses drgn translates with its own ppc64 radix page-table
walker, plus a virtual segment for the linear map at ``PAGE_OFFSET``:

* kdump-compressed dumps (makedumpfile ``-c``): drgn leaves address
  translation to libkdumpfile, which cannot translate ppc64 vmalloc/module
  addresses ("No way to translate: 0xc008...").  Physical reads through
  libkdumpfile work, so a second program reads physical memory through the
  first.
* QEMU ``dump-guest-memory`` files of pseries guests: big-endian ELF headers
  for a little-endian guest, ``p_vaddr`` 0 and no VMCOREINFO note.  We read
  the program headers ourselves, map the file, and take VMCOREINFO from
  ``--vmcoreinfo FILE`` or find the kernel's own VMCOREINFO ELF note in guest
  memory.  The user's file is only read.

Debug info: ``-s`` files (vmlinux, ``vmlinux.debug``, ``.ko`` files or
directories of them) are checked against the kernel's build ID and
compressed ``.ko`` files are decompressed into a cache first
(:mod:`klpinspect.backends.drgn.debuginfo`).  Without ``-s``, drgn's default search
is used.  Kernel debug info is required; module debug info is not.
"""

from __future__ import annotations

import mmap
import os
import re
import stat
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import drgn

from klpinspect.backends.elfcore import MSR_LE
from klpinspect.backends.elfcore import ElfCore as _ElfCore
from klpinspect.backends.elfcore import ElfLoad as _Load
from klpinspect.backends.elfcore import read_elf_core as _read_elf_core
from klpinspect.backends.vmcoreinfo import (
    find_vmcoreinfo_note,
    read_vmcoreinfo_file,
    vmcoreinfo_build_id,
    vmcoreinfo_value,
)
from klpinspect.errors import TargetError
from klpinspect.ppc64.radix import PAGE_OFFSET

__all__ = (
    "PAGE_OFFSET",
    "find_vmcoreinfo_note",
    "load_kernel_debug_info",
    "open_core",
    "open_program",
    "read_vmcoreinfo_file",
    "translating_program",
    "vmcoreinfo_build_id",
)

# Things to tell the user about a program open_core() made (a truncated file);
# drgn.Program takes neither attributes nor weak references, so keyed by id().
_CORE_NOTES: dict[int, tuple[drgn.Program, list[str]]] = {}


def core_notes(prog: drgn.Program) -> list[str]:
    """What :func:`open_core` noticed about the file behind ``prog`` (e.g. truncation)."""
    entry = _CORE_NOTES.get(id(prog))
    return list(entry[1]) if entry is not None and entry[0] is prog else []


def _ppc64_platform(byteorder: str) -> drgn.Platform:
    flags = drgn.PlatformFlags.IS_64_BIT
    if byteorder == "little":
        flags |= drgn.PlatformFlags.IS_LITTLE_ENDIAN
    return drgn.Platform(drgn.Architecture.PPC64, flags)


def _custom_kernel_program(
    platform: drgn.Platform,
    vmcoreinfo: bytes,
    ranges: Sequence[tuple[int, int, Callable[[int, int, int, bool], bytes]]],
) -> drgn.Program:
    """A custom Linux kernel program over physical memory ``ranges``.

    Each range ``(paddr, size, read_fn)`` becomes a physical segment and a
    virtual one in the linear map (``PAGE_OFFSET + paddr``), so kernel data
    and the page tables read directly, and everything else (vmalloc, module
    memory) is translated by drgn's own page-table walker.
    """
    prog = drgn.Program(platform)
    # VMCOREINFO must come before any memory segment.
    try:
        prog.set_linux_kernel_custom(vmcoreinfo, False)
    except Exception as e:  # drgn's parser: BadDataError, ValueError, ...
        first = vmcoreinfo.split(b"\n", 1)[0].decode("ascii", "replace")
        raise TargetError(f"unusable VMCOREINFO (starting {first!r}): {e}") from None
    for paddr, size, read_fn in ranges:
        prog.add_memory_segment(paddr, size, read_fn, True)
        prog.add_memory_segment(PAGE_OFFSET + paddr, size, read_fn, False)
    return prog


def _open_elf_custom(path: Path, core: _ElfCore, vmcoreinfo: bytes | None) -> drgn.Program:
    """An ELF core drgn cannot take as a kernel core: QEMU's ppc64 dumps."""
    byteorder = core.byteorder
    if core.msr is not None:
        # QEMU writes big-endian headers for a little-endian pseries guest;
        # the guest's MSR[LE] says what the memory really is.
        byteorder = "little" if core.msr & MSR_LE else "big"
    with open(path, "rb") as f:
        try:
            mem = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (ValueError, OSError) as e:
            raise TargetError(f"{path}: cannot map the file: {e}") from None
    size = len(mem)
    if vmcoreinfo is None:
        vmcoreinfo = core.vmcoreinfo
    if vmcoreinfo is None:
        # The note is in the kernel's memory: scan the PT_LOAD data (C speed).
        found = find_vmcoreinfo_note(mem, min(ld.offset for ld in core.loads))
        if found is not None:
            vmcoreinfo, byteorder = found
    if vmcoreinfo is None:
        if core.truncated:
            raise TargetError(f"{path}: {core.truncated}, and no VMCOREINFO in what is left")
        raise TargetError(
            f"{path}: no VMCOREINFO in this ppc64 QEMU dump and none given; "
            "pass --vmcoreinfo FILE"
        )

    def reader(load: _Load) -> Callable[[int, int, int, bool], bytes]:
        def read(address: int, count: int, offset: int, physical: bool) -> bytes:
            start = load.offset + offset
            end = min(start + count, load.offset + load.filesz)
            if end > size:
                raise drgn.FaultError("dump file is truncated", address + max(0, size - start))
            data = mem[start:end]
            # p_memsz beyond p_filesz reads as zeros (ELF semantics)
            return data + bytes(count - len(data)) if len(data) < count else data

        return read

    ranges = [(ld.paddr, ld.memsz, reader(ld)) for ld in core.loads if ld.memsz]
    return _custom_kernel_program(_ppc64_platform(byteorder), vmcoreinfo, ranges)


def _kdump_ram_size(path: Path, head: bytes) -> int | None:
    """``max_mapnr * block_size`` from a diskdump header (makedumpfile -c)."""
    for end in ("<", ">"):
        (version,) = struct.unpack_from(end + "i", head, 8)
        if 0 < version < 100:
            break
    else:
        return None
    block_size, _sub_hdr_size, _bitmap_blocks, max_mapnr = struct.unpack_from(
        end + "iiII", head, 428
    )
    if block_size <= 0 or block_size & (block_size - 1):
        return None
    if version >= 6:
        # kdump_sub_header.max_mapnr_64, in the block after the header
        with open(path, "rb") as f:
            f.seek(block_size + 96)
            raw = f.read(8)
        if len(raw) == 8:
            (max_mapnr_64,) = struct.unpack(end + "Q", raw)
            if max_mapnr_64:
                max_mapnr = max_mapnr_64
    return int(max_mapnr) * int(block_size)


def _open_kdump(path: Path, head: bytes, vmcoreinfo: bytes | None) -> drgn.Program:
    """A kdump-compressed dump: physical reads through drgn/libkdumpfile,
    virtual translation by drgn's page-table walker."""
    first = drgn.Program()
    try:
        first.set_core_dump(str(path))
    except (drgn.FaultError, OSError, ValueError) as e:
        raise TargetError(f"{path}: cannot open kdump file: {e}") from None
    if first.platform is None or first.platform.arch != drgn.Architecture.PPC64:
        arch = first.platform.arch.name if first.platform else "unknown"
        raise TargetError(
            f"{path}: {arch} kdump file, not ppc64; klpinspect reads ppc64 kernels only"
        )
    if vmcoreinfo is None:
        try:
            vmcoreinfo = first["VMCOREINFO"].to_bytes_().rstrip(b"\0")
        except (LookupError, drgn.FaultError):
            raise TargetError(
                f"{path}: no VMCOREINFO in this kdump file; pass --vmcoreinfo FILE"
            ) from None
    ram = _kdump_ram_size(path, head)
    if not ram:
        m = re.search(rb"^NUMBER\(MAX_PHYSMEM_BITS\)=(\d+)$", vmcoreinfo, re.M)
        ram = 1 << int(m.group(1)) if m else 1 << 46

    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        # Excluded pages (makedumpfile -d) raise drgn.FaultError, as they should.
        data: bytes = first.read(offset, count, True)
        return data

    prog = _custom_kernel_program(first.platform, vmcoreinfo, [(0, ram, read)])
    # Keep the first program (and its file) alive as long as this one.
    prog.cache["klpinspect_kdump_program"] = first
    return prog


def _memblock_end(prog: drgn.Program) -> int | None:
    """End of the last ``memblock.memory`` region: the top of RAM."""
    try:
        memory = prog["memblock"].memory
        n = int(memory.cnt)
        return max(int(memory.regions[i].base) + int(memory.regions[i].size) for i in range(n))
    except (LookupError, AttributeError, ValueError, drgn.FaultError):
        return None


def translating_program(prog: drgn.Program) -> drgn.Program:
    """``prog``, or an equivalent program that can read module memory.

    For a program drgn opened itself from a kdump-compressed ppc64 dump
    (``drgn -c vmcore.kdump``), where libkdumpfile cannot translate module
    addresses: the same custom program :func:`open_core` builds, with the
    debug info files ``prog`` has loaded.  Any other program is returned as is.

    :param prog: a Linux kernel program with vmlinux debug info
    """
    if prog.flags & drgn.ProgramFlags.IS_LIVE or prog.platform is None:
        return prog
    if prog.platform.arch != drgn.Architecture.PPC64:
        return prog
    try:
        head = prog["modules"]
        first = int(head.next.value_())
        if first == int(head.address_of_().value_()):
            return prog  # no modules: nothing to translate
        prog.read(first, 8)
        return prog
    except (LookupError, AttributeError):
        return prog
    except drgn.FaultError:
        pass
    vmcoreinfo = _kernel_vmcoreinfo(prog)
    ram = _memblock_end(prog)
    if not vmcoreinfo or not ram:
        return prog

    def read(address: int, count: int, offset: int, physical: bool) -> bytes:
        data: bytes = prog.read(offset, count, True)
        return data

    new = _custom_kernel_program(prog.platform, vmcoreinfo, [(0, ram, read)])
    new.cache["klpinspect_kdump_program"] = prog
    files = [str(m.debug_file_path) for m in prog.modules() if m.debug_file_path]
    try:
        new.load_debug_info(files, main=True)
    except drgn.MissingDebugInfoError:
        pass
    if not _kernel_debug_status(new):
        from klpinspect.backends.drgn.btf_finder import enable_btf

        try:
            enable_btf(new)
        except LookupError:
            pass
    try:
        new.read(first, 8)
    except drgn.FaultError:
        return prog
    return new


def open_core(path: str | os.PathLike[str], vmcoreinfo: bytes | None = None) -> drgn.Program:
    """Open a ppc64 kernel dump: ELF vmcore, kdump-compressed, or QEMU ELF dump.

    :param vmcoreinfo: VMCOREINFO text overriding or supplying the dump's own
    :raises TargetError: for a missing file, a file that is not a core, or a
        core of another architecture
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except FileNotFoundError:
        raise TargetError(f"{p}: no such file") from None
    except OSError as e:
        raise TargetError(f"{p}: {e.strerror}") from None
    if stat.S_ISSOCK(mode):
        raise TargetError(f"{p}: a socket, not a vmcore (a QEMU QMP socket? use --qemu)")
    if stat.S_ISDIR(mode):
        raise TargetError(f"{p}: is a directory, not a vmcore")
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise TargetError(f"{p}: not a regular file, not a vmcore")
    try:
        with open(p, "rb") as f:
            head = f.read(4096)
            if head[:4] == b"\x7fELF" and len(head) >= 64:
                core = _read_elf_core(p, f, head)
            elif head[:8] in (b"KDUMP   ", b"DISKDUMP"):
                return _open_kdump(p, head, vmcoreinfo)
            else:
                raise TargetError(f"{p}: not a vmcore (neither an ELF core nor a kdump file)")
    except FileNotFoundError:
        raise TargetError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise TargetError(f"{p}: is a directory, not a vmcore") from None
    except PermissionError:
        raise TargetError(f"{p}: permission denied") from None
    guest_order = core.byteorder
    if core.msr is not None:
        guest_order = "little" if core.msr & MSR_LE else "big"
    if core.vmcoreinfo is not None and guest_order == core.byteorder and not core.all_vaddr_zero:
        # A kernel-made (or fixed-up) ELF vmcore: drgn reads it as it is.
        prog = drgn.Program(vmcoreinfo=vmcoreinfo) if vmcoreinfo else drgn.Program()
        try:
            prog.set_core_dump(str(p))
        except (OSError, ValueError, drgn.FaultError) as e:
            raise TargetError(f"{p}: cannot open core: {e}") from None
    else:
        prog = _open_elf_custom(p, core, vmcoreinfo)
    if core.truncated:
        _CORE_NOTES[id(prog)] = (prog, [f"{p}: {core.truncated}"])
    return prog


# --- the running kernel ---------------------------------------------------


def _open_live() -> drgn.Program:
    import platform  # only here: --live (tests stand in for its machine())

    machine = platform.machine()
    if not machine.startswith("ppc64"):
        raise TargetError(
            f"--live: this machine is {machine}, not ppc64; klpinspect reads ppc64 kernels only"
        )
    if os.geteuid() != 0:
        raise TargetError("--live needs root (it reads /proc/kcore)")
    prog = drgn.Program()
    try:
        prog.set_kernel()
    except (OSError, ValueError) as e:
        raise TargetError(f"--live: cannot open /proc/kcore: {e}") from None
    return prog


# --- debug info -------------------------------------------------------------


def _kernel_vmcoreinfo(prog: drgn.Program) -> bytes | None:
    try:
        data: bytes = prog["VMCOREINFO"].to_bytes_()
    except (LookupError, drgn.FaultError):
        return None
    return data.rstrip(b"\0")


def vmcoreinfo_release(prog: drgn.Program) -> str | None:
    """``OSRELEASE`` of the VMCOREINFO ``prog`` was opened with, if it has one."""
    info = _kernel_vmcoreinfo(prog)
    if info is None:
        return None
    return vmcoreinfo_value(info, "OSRELEASE")


def _kernel_debug_status(prog: drgn.Program) -> bool:
    try:
        main = prog.main_module()
    except LookupError:
        return False
    return bool(main.debug_file_status == drgn.ModuleFileStatus.HAVE)


def load_kernel_debug_info(
    prog: drgn.Program,
    symbols: Sequence[str | os.PathLike[str]] = (),
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    debug_directories: Sequence[str | os.PathLike[str]] = (),
    default_symbols: bool = False,
    dwarf: bool = True,
    elf_sizes: bool = True,
) -> None:
    """Load debug info for the kernel and whichever modules ``symbols`` cover.

    :param symbols: vmlinux / ``vmlinux.debug`` / ``.ko`` / ``.ko.debug`` files
        or directories of them; empty: drgn's default search.  A directory is
        also searched the way drgn searches ``/usr/lib/debug`` (``.build-id/``,
        ``lib/modules/RELEASE/``)
    :param debug_directories: more directories for drgn's own search
        (``drgn --debug-directory``)
    :param default_symbols: run drgn's default search as well as loading ``symbols``
    :param dwarf: ``False``: when ``symbols`` is one vmlinux and the kernel has
        BTF, take types from the BTF and symbols from the file's ``.symtab``
        and leave its DWARF unread (:mod:`.symtab_finder`): the same answers
        for everything but a backtrace's inlined frames and source lines
    :param elf_sizes: ``False`` (with ``dwarf=False``): the symbols from the
        kernel's kallsyms where they are whole rather than from the file's
        ``.symtab`` (:func:`~klpinspect.backends.drgn.btf_finder.enable_btf`):
        the same names, sizes as kallsyms gives them
    :raises TargetError: for a missing or non-ELF file, a vmlinux of another
        build, or when no kernel debug info is found
    """
    vmcoreinfo = _kernel_vmcoreinfo(prog)
    kernel_id = vmcoreinfo_build_id(vmcoreinfo) if vmcoreinfo else None
    release = "?"
    btf_problem: str | None = None  # why the BTF path failed, when it was tried
    if vmcoreinfo:
        m = re.search(rb"^OSRELEASE=(.*)$", vmcoreinfo, re.M)
        release = m.group(1).decode("ascii", "replace") if m else "?"
    search = [os.fspath(d) for d in debug_directories]
    search += [os.fspath(p) for p in symbols if os.path.isdir(p)]
    files = []
    if symbols or debug_directories:
        # pyelftools only when there are files to check (~0.1 s to import)
        from klpinspect.backends.drgn.debuginfo import prepare_debug_files

        # module files in search directories are prepared (decompressed) like -s ones:
        # drgn's own search would hand libelf compressed .ko sections it cannot read
        files = prepare_debug_files([*symbols, *debug_directories], cache_dir)
    if not files and not search and not default_symbols:
        # No -s: the kernel's own BTF and kallsyms, when it has them, and no
        # DWARF search at all (klpinspect.backends.drgn.btf_finder).
        from klpinspect.backends.drgn.btf_finder import enable_btf

        try:
            enable_btf(prog)
            return
        except LookupError as e:
            btf_problem = str(e)
    for orig, _, build_id, rel in files:
        if not rel and kernel_id and build_id and build_id != kernel_id:
            raise TargetError(
                f"{orig}: debug info for another kernel build (build ID {build_id}, "
                f"the kernel's is {kernel_id})"
            )
    if not dwarf and len(files) == 1 and not files[0][3] and not search and not default_symbols:
        # One vmlinux: its DWARF would give the types the kernel's own BTF
        # gives alike; drgn indexes it whole on load (0.3-0.6 s, ~300 MB for
        # a distribution -dbg vmlinux).  Without BTF, DWARF it is.
        from klpinspect.backends.drgn.btf_finder import disable_kallsyms_symbols, enable_btf
        from klpinspect.backends.drgn.symtab_finder import disable_symtab_symbols, has_btf

        m = re.search(rb"^KERNELOFFSET=([0-9a-fA-F]+)$", vmcoreinfo or b"", re.M)
        # the same build (build ID checked above): a kernel built without
        # CONFIG_DEBUG_INFO_BTF has no .BTF section (Debian's 6.1)
        if has_btf(str(files[0][1])):
            try:
                enable_btf(prog, symtab=str(files[0][1]), bias=int(m.group(1), 16) if m else 0,
                           elf_sizes=elf_sizes)
                return
            except (LookupError, TargetError):
                disable_symtab_symbols(prog)  # the BTF is not in the dump: DWARF it is
                disable_kallsyms_symbols(prog)
    if search:
        opts = prog.debug_info_options
        opts.directories = tuple(os.path.abspath(d) for d in search) + tuple(opts.directories)
    try:
        if files or search:
            prog.load_debug_info(
                [str(load) for _, load, _, _ in files],
                main=True,
                default=default_symbols or bool(search),
            )
        else:
            prog.load_default_debug_info()
    except drgn.MissingDebugInfoError:
        pass  # modules without debug info are fine; the kernel is checked below
    except (OSError, ValueError) as e:
        raise TargetError(f"cannot load debug info: {e}") from None
    except Exception as e:  # drgn raises plain Exception for libelf/libdw errors
        raise TargetError(f"cannot load debug info: {e}") from None
    if not _kernel_debug_status(prog):
        if btf_problem is None:
            given = "the -s files given" if files else "drgn's default search paths"
            raise TargetError(
                f"no debug info for the kernel {release} (build ID {kernel_id or 'unknown'}) "
                f"in {given}; pass -s VMLINUX (or its .debug file)"
            )
        from klpinspect.backends.drgn.btf_finder import debuginfo_hint

        raise TargetError(
            f"no debug info for the kernel {release} (build ID {kernel_id or 'unknown'}): "
            f"{btf_problem}, and drgn's default search paths have no vmlinux; "
            f"pass -s VMLINUX (or its .debug file){debuginfo_hint(release)}"
        )


def open_program(
    *,
    core: str | None = None,
    symbols: Sequence[str] = (),
    vmcoreinfo: str | None = None,
    live: bool = False,
    qemu: str | None = None,
    cache_dir: str | None = None,
    debug_directories: Sequence[str] = (),
    default_symbols: bool = False,
    dwarf: bool = True,
    elf_sizes: bool = True,
) -> tuple[drgn.Program, str]:
    """Open the target the command line names, with its debug info.

    :param core: a vmcore (ELF, kdump-compressed, or QEMU ``dump-guest-memory``)
    :param symbols: ``-s`` files: vmlinux, ``vmlinux.debug``, ``.ko`` files
    :param vmcoreinfo: a file with the kernel's VMCOREINFO text
    :param live: the running kernel (/proc/kcore)
    :param qemu: QMP socket of a live QEMU guest
    :param dwarf: ``False``: no DWARF for a lone ``-s`` vmlinux of a kernel with
        BTF (:func:`load_kernel_debug_info`)
    :param elf_sizes: ``False`` (with ``dwarf=False``): its symbols from the
        kernel's kallsyms where they are whole (:func:`load_kernel_debug_info`)
    :returns: ``(program, kind)`` with kind ``"vmcore"``, ``"live"`` or ``"qemu"``
    :raises TargetError: when the target cannot be used (one-line message)
    """
    given = [name for name, on in (("-c", core), ("--live", live), ("--qemu", qemu)) if on]
    if len(given) != 1:
        raise TargetError(
            "give exactly one target: -c VMCORE, --live or --qemu QMP_SOCKET"
            + (f" (got {', '.join(given)})" if given else "")
        )
    kind: str
    if core:
        info = read_vmcoreinfo_file(vmcoreinfo) if vmcoreinfo else None
        prog, kind = open_core(core, info), "vmcore"
    elif live:
        prog, kind = _open_live(), "live"
    else:
        from klpinspect.backends.drgn.qmp import open_qmp

        assert qemu is not None
        prog, kind = open_qmp(qemu, vmcoreinfo, symbols=symbols), "qemu"
    load_kernel_debug_info(
        prog,
        symbols,
        cache_dir,
        debug_directories=debug_directories,
        default_symbols=default_symbols,
        dwarf=dwarf,
        elf_sizes=elf_sizes,
    )
    return prog, kind
