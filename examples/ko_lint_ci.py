#!/usr/bin/env python3
"""Fail a CI job when a livepatch/module ``.ko`` would break on ppc64.

    python3 examples/ko_lint_ci.py FILE.ko|DIR...
    python3 examples/ko_lint_ci.py VMCORE VMLINUX [FILE.ko|DIR...]
    drgn -c VMCORE -s VMLINUX -s MODULES_DIR examples/ko_lint_ci.py [FILE.ko|DIR...]

Lints the files given (a directory: every ``*.ko`` below it).  With a dump
(drgn's ``prog``, or VMCORE VMLINUX), it also lints the ``.ko`` files of the
dump's loaded modules that the debug info search found.  Prints the error
findings as ``file:section+offset: CODE: message`` lines (what CI logs show)
and exits 1 if there is any, 0 otherwise (warnings are printed, not fatal).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

_CHECKOUT = Path(__file__).resolve().parent.parent
if (_CHECKOUT / "klpinspect" / "api.py").exists():  # run from a source checkout
    sys.path.insert(0, str(_CHECKOUT))

import klpinspect  # noqa: E402


def loaded_module_files(prog: Any) -> list[str]:
    """The relocatable ``.ko`` debug files drgn found for the dump's modules."""
    import drgn

    files = []
    for module in prog.modules():
        if isinstance(module, drgn.RelocatableModule) and module.debug_file_path:
            files.append(module.debug_file_path)
    return files


def expand(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in paths:
        path = Path(p)
        out += sorted(map(str, path.rglob("*.ko"))) if path.is_dir() else [p]
    return out


def is_core(path: str) -> bool:
    """A vmcore: kdump-compressed, or an ELF core file (``e_type`` ET_CORE)."""
    try:
        with open(path, "rb") as f:
            head = f.read(18)
    except OSError:
        return False
    if head[:8] in (b"KDUMP   ", b"DISKDUMP"):
        return True
    if head[:4] != b"\x7fELF" or len(head) < 18:
        return False
    return int.from_bytes(head[16:18], "little" if head[5] == 1 else "big") == 4


def main(argv: list[str], prog: Any = None) -> int:
    if prog is None and len(argv) >= 2 and is_core(argv[0]):
        core, vmlinux, *argv = argv
        try:
            target = klpinspect.open_target(core, symbols=[vmlinux, *argv])
        except klpinspect.KlpError as e:
            print(f"ko_lint_ci: {e}", file=sys.stderr)
            return 2
        prog = getattr(target, "prog", None)
    files = expand(argv) + (loaded_module_files(prog) if prog is not None else [])
    if not files:
        print("ko_lint_ci: no .ko files to lint", file=sys.stderr)
        return 2
    report = klpinspect.lint_ko(files)
    for f in report.findings:
        if f.level == "info":
            continue
        where = f"{f.file}:{f.section}+{f.address:#x}" if f.address is not None else f"{f.file}"
        print(f"{where}: {f.level}: {f.code}: {f.message}")
    print(f"ko_lint_ci: {len(files)} file(s), "
          f"{sum(f.level == 'error' for f in report.findings)} error(s)")
    return report.exit_status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], globals().get("prog")))
