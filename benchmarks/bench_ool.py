"""Per-slot cost of the out-of-line ftrace stubs (6.13+) and of naming their sites.

On a dump whose modules have OOL stubs (Debian sid 7.2: ~12,000 in 50 modules),
prints the CPU time (``time.process_time``, best of ``--runs``: the machine
is shared, wall time is noisy) of each per-stub step, in microseconds a stub:

``decode``
    :func:`~klpinspect.ppc64.stubs.for_each_ool_stub` over every module's area
``check``
    :func:`~klpinspect.ool_audit.check_ool` with a namer that names nothing
    (the rules and the records)
``name (warm)``
    :meth:`~klpinspect.checks.symbols.Symbolizer.name` of every site, a fresh
    symbolizer, the back end's module symbol tables already built
``name (cold)``
    the same with the module tables built again (what an audit pays)

and the audit itself (``audit()`` of the drgn target, no JSON) with and without
the sites named.  ``--tree`` measures another checkout's klpinspect (the
``--base`` of ``bench_distro.py``), for before/after figures.

    python3 benchmarks/bench_ool.py [VMCORE] [-s VMLINUX] [--runs 15] [--tree CHECKOUT]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SID = Path("/work/cache/debian/dumps/sid-powerpc64le/vmcore")


def _best(fn: Callable[[], object], runs: int) -> float:
    best = float("inf")
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vmcore", nargs="?", default=str(SID))
    ap.add_argument("-s", dest="symbols", action="append", default=[])
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--tree", default=str(REPO), help="checkout whose klpinspect is measured")
    args = ap.parse_args()
    if not Path(args.vmcore).exists():
        print(f"bench_ool: {args.vmcore}: no such dump (give VMCORE)", file=sys.stderr)
        return 2
    sys.path.insert(0, args.tree)
    os.environ.setdefault("KLPINSPECT_CACHE", str(REPO / ".cache"))
    api = importlib.import_module("klpinspect.api")
    audit_mod = importlib.import_module("klpinspect.audit")
    ool_audit = importlib.import_module("klpinspect.ool_audit")
    stubs_mod = importlib.import_module("klpinspect.ppc64.stubs")
    symbols_mod = importlib.import_module("klpinspect.checks.symbols")

    target: Any = api.open_target(args.vmcore, symbols=args.symbols)
    kernel = target.kernel()
    t0 = time.process_time()
    audit_mod.audit(target)
    first = time.process_time() - t0
    audits, _everything = audit_mod._audit_modules(target, kernel, None)
    reads = [(a.module, a.ool) for a in audits if a.ool is not None]
    if not reads:
        print("bench_ool: no module of this dump has out-of-line ftrace stubs", file=sys.stderr)
        return 2
    slot = stubs_mod.stub_size(kernel.abi, kernel.func_desc_size)
    areas = [(audit_mod._read_stubs(target, m, slot)[0], m) for m, _r in reads]
    count = sum(len(r.stubs) for _m, r in reads)
    sites = [o.site for _m, r in reads for o in r.stubs if o.site is not None]
    gc.disable()

    def decode() -> None:
        for data, m in areas:
            list(stubs_mod.for_each_ool_stub(data, m.stubs, m.ool_stubs, m.ool_stub_count,
                                             byteorder=kernel.byteorder, slot_size=slot))

    def check() -> None:
        for m, r in reads:
            ool_audit.check_ool(kernel, m, r, lambda _a: (None, None))

    def name() -> None:
        namer = symbols_mod.Symbolizer(target)
        for site in sites:
            namer.name(site)

    def name_cold() -> None:
        if hasattr(target, "_module_symbols"):
            target._module_symbols = {}
        name()

    print(f"{args.vmcore}: {len(reads)} modules, {count} OOL stubs, klpinspect from "
          f"{Path(api.__file__).parent.parent}; CPU, best of {args.runs}")
    for label, fn in (("decode", decode), ("check", check), ("name (warm)", name),
                      ("name (cold)", name_cold)):
        secs = _best(fn, args.runs)
        print(f"  {label:12} {secs * 1e3:7.1f} ms  {secs / count * 1e6:5.2f} us a stub")
    print(f"  audit (first, this process) {first * 1e3:7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
