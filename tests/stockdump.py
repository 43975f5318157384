"""A dump of one of Debian's stock ppc64el kernels, from the lab, for the tests
that any kernel can serve (``tests/test_stock_dump.py``).

Used when ``../shared/fixtures`` (the livepatch fixtures) is absent, or when
``$KLP_STOCK_DUMP`` names a dump.  Where the dump comes from, first found:

1. ``$KLP_STOCK_DUMP``: a directory laid out as the lab's matrix writes them
   (``vmcore``, ``vmlinux`` = debug vmlinux, ``image``, ``modules``,
   ``console.log``, ``matrix.json``);
2. a dump made earlier in this pytest session (``tests/test_debian_kernels.py``
   registers its kernel's directory in :data:`SESSION_DUMPS`);
3. the lab's cache, ``<dumps>/<suite>-<flavour>/`` (``tests/lab/matrix.py``:
   ``/work/cache/debian/dumps`` or ``.cache/debian/dumps``), for
   ``$KLP_STOCK_KERNEL`` (default ``bookworm``: the smallest) and then any other
   Debian kernel there;
4. none of these: the lab fetches ``$KLP_STOCK_KERNEL`` from Debian's archive
   (``tests/lab/stock.py``, ~750 MB for bookworm, cached), boots it under
   ``qemu-system-ppc64 -M pseries`` and dumps it (``matrix.run_kernel``,
   about a minute) into the cache of 3.

The oracle is the kernel itself, never klpinspect: the guest's own
``/proc/modules`` and ``/sys/module/*/sections/{.text,.toc,.stubs}`` printed
on its console (``RK-MODULES``, ``RK-SECT`` lines, ``matrix.guest_view``),
and the symbol table of the image it booted.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = ("KERNEL_DIRS", "SESSION_DUMPS", "StockDump", "StockDumpError", "find_stock_dump",
           "stock_dump_dir")

LAB = Path(__file__).resolve().parent / "lab"
NM = "powerpc64le-linux-gnu-nm"  # binutils-powerpc64le-linux-gnu (scripts/install-deps.sh)
# kernel name (tests/lab/stock.py kernel_by_name) -> its directory under the dumps
KERNEL_DIRS = {
    "bookworm": "bookworm-powerpc64le",
    "trixie": "trixie-powerpc64le",
    "trixie-64k": "trixie-powerpc64le-64k",
    "sid": "sid-powerpc64le",
    "sid-64k": "sid-powerpc64le-64k",
}
# dump directories made by this session (tests/test_debian_kernels.py)
SESSION_DUMPS: list[Path] = []


class StockDumpError(Exception):
    """No stock-kernel dump could be found or made (one line)."""


def _lab() -> Any:
    if str(LAB) not in sys.path:
        sys.path.insert(0, str(LAB))
    import matrix

    return matrix


def _complete(d: Path) -> bool:
    return all((d / n).exists() for n in ("vmcore", "vmlinux", "console.log"))


@dataclass
class StockDump:
    """One lab dump directory of a Debian stock kernel and the guest's own view."""

    path: Path
    source: str
    info: dict[str, Any] = field(init=False)
    # global functions of the image (name -> address), filled by :attr:`symbols`
    global_functions: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for n in ("vmcore", "vmlinux", "console.log"):
            if not (self.path / n).exists():
                raise StockDumpError(f"stock dump {self.path}: no {n}")
        m = self.path / "matrix.json"
        self.info = json.loads(m.read_text()) if m.exists() else {}

    def __repr__(self) -> str:
        return f"StockDump({self.path.name}, {self.source})"

    @property
    def vmcore(self) -> Path:
        return self.path / "vmcore"

    @property
    def vmlinux(self) -> Path:
        """The ``-dbg`` package's vmlinux (DWARF)."""
        return (self.path / "vmlinux").resolve()

    @property
    def modules(self) -> Path:
        """``lib/modules/KVER`` of the image packages (stripped ``.ko`` / ``.ko.xz``)."""
        return (self.path / "modules").resolve()

    @cached_property
    def console(self) -> str:
        return (self.path / "console.log").read_text(errors="replace")

    @cached_property
    def view(self) -> dict[str, Any]:
        """``modules`` (``/proc/modules`` names, in its order) and ``sections``
        ({module: {section: address}} from ``/sys/module/*/sections``)."""
        view: dict[str, Any] = _lab().guest_view(self.console)
        if not view["modules"]:
            raise StockDumpError(f"stock dump {self.path}: the console has no /proc/modules")
        return view

    @cached_property
    def kver(self) -> str:
        """The release: ``lib/modules/KVER`` of the image packages."""
        return self.modules.name

    @cached_property
    def symbols(self) -> dict[str, set[int]]:
        """The symbol table of the image the guest booted (``nm``; Debian's
        ``System.map`` is a placeholder): name -> its addresses."""
        image = (self.path / "image").resolve()
        p = subprocess.run([NM, "--defined-only", str(image)], capture_output=True, text=True,
                           check=False)
        if p.returncode or not p.stdout:
            raise StockDumpError(f"{NM} {image}: exit {p.returncode}: {p.stderr.strip()[-200:]}")
        out: dict[str, set[int]] = {}
        for line in p.stdout.splitlines():
            parts = line.split()
            if len(parts) == 3:
                out.setdefault(parts[2], set()).add(int(parts[0], 16))
                if parts[1] in "TW":  # global text: what a module's undefined symbol binds to
                    self.global_functions[parts[2]] = int(parts[0], 16)
        return out

    def symbol(self, name: str) -> int:
        """The address of the image's one symbol *name*."""
        (addr,) = self.symbols[name]
        return addr

    @cached_property
    def proc_modules(self) -> dict[str, dict[str, Any]]:
        """``/proc/modules`` as the guest printed it: name -> ``size``,
        ``used_by`` (the modules that depend on it), ``address``."""
        out: dict[str, dict[str, Any]] = {}
        m = re.search(r"^RK-MODULES-BEGIN\n(.*?)^RK-MODULES-END", self.console, re.M | re.S)
        for line in (m.group(1) if m else "").splitlines():
            f = line.split()
            if len(f) >= 6:
                used_by = {u for u in f[3].split(",") if u and u != "-"}
                out[f[0]] = {"size": int(f[1]), "used_by": used_by, "address": int(f[-1], 16)}
        return out


def stock_dump_dir(name: str, root: Path | None = None) -> Path:
    """Where the lab keeps kernel *name*'s dump."""
    return (root or _lab().dumps_root()) / KERNEL_DIRS[name]


def find_stock_dump(make: bool = True,
                    say: Callable[[str], None] | None = None) -> StockDump:
    """The stock-kernel dump, found as the module docstring says; made by the
    lab when none is there and *make* (announced through *say*, else stderr)."""
    env = os.environ.get("KLP_STOCK_DUMP")
    if env:
        return StockDump(Path(env).resolve(), "$KLP_STOCK_DUMP")
    for d in SESSION_DUMPS:
        if _complete(d):
            return StockDump(d, "this session's Debian kernel test")
    name = os.environ.get("KLP_STOCK_KERNEL", "bookworm")
    if name not in KERNEL_DIRS:
        raise StockDumpError(f"KLP_STOCK_KERNEL={name}: one of {', '.join(KERNEL_DIRS)}")
    for n in [name, *(k for k in KERNEL_DIRS if k != name)]:
        d = stock_dump_dir(n)
        if _complete(d):
            return StockDump(d, "the lab's cache")
    if not make:
        raise StockDumpError(f"no stock-kernel dump in {stock_dump_dir(name).parent}")
    matrix = _lab()
    msg = (f"stock dump: none in {stock_dump_dir(name).parent}; the lab fetches Debian's "
           f"{name} kernel, boots it under QEMU and dumps it (about a minute)")
    if say is not None:
        say(msg)
    else:
        print(msg, file=sys.stderr, flush=True)
    try:
        matrix.run_kernel(name, use_gdb=False)
    except Exception as e:  # the lab's errors: LabError, OSError, TimeoutExpired
        raise StockDumpError(f"the lab could not make a {name} dump: "
                             f"{type(e).__name__}: {e}") from e
    return StockDump(stock_dump_dir(name), f"made by the lab ({name})")
