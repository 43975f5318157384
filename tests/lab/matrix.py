#!/usr/bin/env python3
"""The kernel matrix: boot Debian's ppc64el kernels, audit each four ways, check
every answer against the kernel's own view, and write ``docs/kernels.md``.

For each kernel (``bookworm``, ``trixie``, ``sid``, ``trixie-64k``, ``sid-64k``;
``stock.kernel_by_name``), one at a time:

1. fetch and unpack it (``stock.py``, cached in ``/work/cache/debian``), boot it
   under ``qemu-system-ppc64 -M pseries`` (TCG) with the busybox initramfs
   that insmods the stock module set and prints the kernel's own view:
   ``/proc/modules`` and every module's ``/sys/module/*/sections/.stubs``,
   ``.toc``, ``.text`` (``guest-init-stock.sh``);
2. audit it live: klpinspect over QMP (drgn back end) and gdb over the
   gdbstub (``gdb/klpinspect.py``, ``klp-audit``);
3. dump it (QMP ``dump-guest-memory``, fixed up: ``qemucore.py``) into
   ``/work/cache/debian/dumps/<suite>-<flavour>/vmcore``, stop the guest, and audit the
   dump through drgn (``klpinspect -c``) and gdb (``core-file``);
4. check: the four reports are equal (but for the target kind); the modules
   are the guest's ``/proc/modules``; each module's ``.stubs`` address is the
   guest's ``sections/.stubs``, its TOC ``sections/.toc`` + 0x8000; no
   finding above ``info``.

``lp-ool`` (and ``lp-pcrel``) are the lab's own Linux 7.2 livepatch kernels,
built with clang 22 (``lpkernel.py``, ``lpmatrix.py``): not in the default
list (the first run builds a kernel, 20-40 min); ``make matrix MATRIX=lp-ool``.

Results go to ``<dumps>/<suite>-<flavour>/matrix.json``; ``docs/kernels.md`` is written
from every ``matrix.json`` there, so kernels can be run one at a time::

    nice -n 10 python3 tests/lab/matrix.py trixie sid     # then: sid-64k, bookworm...
    python3 tests/lab/matrix.py --table-only              # rewrite docs/kernels.md

Exit 0 when every kernel run passed, 1 when a check failed, 2 on a lab error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import lab  # noqa: E402
import stock  # noqa: E402
from debarchive import cache_dir  # noqa: E402

__all__ = ("guest_view", "check_report", "run_kernel", "write_table")

GDB = "gdb-multiarch"
GDB_SCRIPT = REPO / "gdb" / "klpinspect.py"
KINDS = ("qmp-drgn", "gdbstub-gdb", "dump-drgn", "dump-gdb")
DEFAULT_KERNELS = ("trixie", "sid", "trixie-64k", "sid-64k", "bookworm")
TOC_BIAS = 0x8000  # arch/powerpc/kernel/module_64.c: my_r2() = .toc + 0x8000


def dumps_root() -> Path:
    """Where the matrix keeps its dumps (shared with other checkouts)."""
    return Path(os.environ.get("KLP_MATRIX_DUMPS", str(cache_dir() / "dumps")))


def guest_view(console: str) -> dict[str, Any]:
    """The kernel's own view, from the console of ``guest-init-stock.sh``:
    ``modules`` (``/proc/modules`` names) and ``sections`` ({module: {section:
    address}} from ``/sys/module/*/sections``)."""
    mods: list[str] = []
    m = re.search(r"^RK-MODULES-BEGIN\n(.*?)^RK-MODULES-END", console, re.M | re.S)
    if m:
        mods = [ln.split()[0] for ln in m.group(1).splitlines() if ln.strip()]
    sections: dict[str, dict[str, int]] = {}
    for mod, sec, addr in re.findall(r"^RK-SECT (\S+) (\S+) (0x[0-9a-fA-F]+)\s*$", console, re.M):
        sections.setdefault(mod, {})[sec] = int(addr, 16)
    return {"modules": mods, "sections": sections}


def _strip_kind(report: dict[str, Any]) -> dict[str, Any]:
    """*report* without what differs between back ends by design: the target's
    kind, and where types came from (gdb reads the DWARF, drgn's command line
    the kernel's BTF where it has one)."""
    r = dict(report)
    r["target"] = {k: v for k, v in r.get("target", {}).items()
                   if k not in ("kind", "debuginfo")}
    return r


def check_report(report: dict[str, Any], view: dict[str, Any]) -> list[str]:
    """Where *report* (klpinspect JSON audit) disagrees with the guest's own view."""
    errs: list[str] = []
    ours = {m["name"]: m for m in report.get("modules", [])}
    theirs = set(view["modules"])
    if set(ours) != theirs:
        errs.append(f"modules: klpinspect {sorted(set(ours) - theirs)} extra, "
                    f"{sorted(theirs - set(ours))} missing vs /proc/modules")
    for name, secs in view["sections"].items():
        mod = ours.get(name)
        if mod is None:
            continue
        if ".stubs" in secs and int(mod.get("stubs_section") or "0", 16) != secs[".stubs"]:
            errs.append(f"{name}: .stubs {mod.get('stubs_section')} vs sysfs {secs['.stubs']:#x}")
        if ".toc" in secs and mod.get("toc_source") == ".toc" and (
            int(mod["toc"], 16) != secs[".toc"] + TOC_BIAS
        ):
            errs.append(f"{name}: TOC {mod['toc']} vs sysfs .toc {secs['.toc']:#x} + 0x8000")
    for f in report.get("findings", []):
        if f.get("severity") not in ("info",):
            errs.append(f"finding {f.get('severity')} {f.get('code')}: {f.get('message')}")
    return errs


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    mods = report.get("modules", [])
    return {
        "modules": len(mods),
        "slots": sum(len(m.get("stubs", [])) for m in mods),
        "ool_stubs": sum(len(m.get("ool_stubs", [])) for m in mods),
        "findings": sorted({f"{f['severity']} {f['code']}" for f in report.get("findings", [])}),
    }


def _klpinspect(args: Sequence[str], timeout: float = 900) -> tuple[dict[str, Any], float]:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "klpinspect", *args], capture_output=True,
                       text=True, timeout=timeout, cwd=REPO)
    secs = time.monotonic() - t0
    if p.returncode not in (0, 1):
        raise lab.LabError(f"klpinspect {shlex.join(args[:4])}...: exit {p.returncode}: "
                           f"{p.stderr.strip()[-300:]}")
    return json.loads(p.stdout), secs


def _gdb(symbols: Path, target: list[str], out: Path,
         timeout: float = 1800) -> tuple[dict[str, Any], float]:
    args = [GDB, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
            "-ex", f"file {symbols}", *target, "-ex", f"source {GDB_SCRIPT}",
            "-ex", f"pipe klp-audit --format json | cat > {out}"]  # fmt: skip
    if "target" in " ".join(target):
        args += ["-ex", "detach"]
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out.unlink(missing_ok=True)
    t0 = time.monotonic()
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    secs = time.monotonic() - t0
    if not out.exists() or not out.stat().st_size:
        tail = (p.stderr.strip() or p.stdout.strip())[-300:]
        raise lab.LabError(f"gdb klp-audit gave no report: {tail}")
    return json.loads(out.read_text()), secs


def _write_dump_readme(d: Path, spec: lab.KernelSpec, res: dict[str, Any]) -> None:
    x = spec.extra
    (d / "README.txt").write_text(f"""\
QEMU dump of Debian's {x.get('suite')} ppc64el kernel {x['kver']} ({x.get('version')}),
{x.get('page_size')} pages, booted by klpinspect's lab (tests/lab/matrix.py) under
qemu-system-ppc64 -M pseries -cpu power9 -m 1G -smp 2 (TCG) with a busybox
initramfs that insmods {res['view_modules']} modules (/proc/modules in console.log).

vmcore      QMP dump-guest-memory, fixed up (qemucore.py: LE headers, linear-map
            p_vaddr, VMCOREINFO note): opens in drgn, gdb, crash, makedumpfile
vmlinux     -> the -dbg package's debug vmlinux (klpinspect -s, gdb file)
image       -> the bootable vmlinux the guest ran
modules     -> /lib/modules/{x['kver']} of the image packages (.ko.xz, stripped)
console.log the guest's console: RK-SECT lines = /sys/module/*/sections values
matrix.json klpinspect's answers and the checks of tests/lab/matrix.py

    klpinspect -c vmcore -s vmlinux audit
    drgn -c vmcore -s vmlinux
""")


def _link(d: Path, name: str, target: Path) -> None:
    p = d / name
    if p.is_symlink() or p.exists():
        p.unlink()
    p.symlink_to(target)


def run_kernel(name: str, use_gdb: bool = True, timeout: float = 900,
               dumps: Path | None = None) -> dict[str, Any]:
    """Boot kernel *name*, audit it four ways, check; the result dict
    (also written to ``<dumps>/<suite>-<flavour>/matrix.json``; *dumps*
    defaults to :func:`dumps_root`, the shared directory)."""
    t0 = time.monotonic()
    spec = stock.kernel_by_name(name)
    t_fetch = time.monotonic() - t0
    dbg = spec.symbols[0]
    d = (dumps or dumps_root()) / f"{spec.extra['suite']}-{spec.extra['flavour']}"
    d.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {"name": name, "kver": spec.extra["kver"],
                           "version": spec.extra.get("version"), "suite": spec.extra.get("suite"),
                           "page_size": spec.extra.get("page_size"),
                           "debug_vmlinux_mb": round(dbg.stat().st_size / 1e6),
                           "times": {"fetch": round(t_fetch, 1)}, "errors": []}
    reports: dict[str, dict[str, Any]] = {}
    vmcore = d / "vmcore"
    print(f"matrix: {name}: {spec.extra['kver']}, booting", flush=True)
    guest_dir = (dumps / "guest") if dumps is not None else lab.WORK / "matrix" / name
    with lab.Guest(spec, guest_dir, gdb=use_gdb) as g:
        res["times"]["boot"] = round(g.wait_ready(timeout), 1)
        console = g.console_text()
        view = guest_view(console)
        res["view_modules"] = len(view["modules"])
        failed = re.findall(r"^RK: insmod FAILED (\S+)", console, re.M)
        res["insmod_failed"] = failed
        reports["qmp-drgn"], t = _klpinspect(
            ["--qemu", g.qmp_path, "-s", str(dbg), "--format", "json", "audit"])
        res["times"]["qmp-drgn"] = round(t, 2)
        if use_gdb:
            reports["gdbstub-gdb"], t = _gdb(
                dbg, ["-ex", f"target remote {g.gdb_address}"], d / "gdbstub.json")
            res["times"]["gdbstub-gdb"] = round(t, 2)
        r = g.dump(vmcore)
        res["times"]["dump"] = round(r.dump_seconds + r.fixup_seconds, 1)
        (d / "console.log").write_text(console)
    reports["dump-drgn"], t = _klpinspect(["-c", str(vmcore), "-s", str(dbg), "--format",
                                           "json", "audit"])
    res["times"]["dump-drgn"] = round(t, 2)
    if use_gdb:
        reports["dump-gdb"], t = _gdb(dbg, ["-ex", f"core-file {vmcore}"], d / "gdbcore.json")
        res["times"]["dump-gdb"] = round(t, 2)
    _link(d, "vmlinux", dbg)
    _link(d, "image", spec.files["vmlinux"])
    _link(d, "modules", Path(spec.extra["modules"]))
    base = reports["dump-drgn"]
    res.update(_summary(base))
    for kind, rep in reports.items():
        res["errors"] += [f"{kind}: {e}" for e in check_report(rep, view)]
        if _strip_kind(rep) != _strip_kind(base):
            res["errors"].append(f"{kind}: report differs from dump-drgn's")
    res["times"]["total"] = round(time.monotonic() - t0, 1)
    res["ok"] = not res["errors"]
    (d / "audit.json").write_text(json.dumps(base, indent=1) + "\n")
    (d / "matrix.json").write_text(json.dumps(res, indent=1) + "\n")
    _write_dump_readme(d, spec, res)
    return res


def _kernel_key(r: dict[str, Any]) -> tuple[int, str]:
    order = {"bookworm": 0, "trixie": 1, "sid": 2, "lab": 3}
    return order.get(r.get("suite") or "", 9), r["name"]


def write_table(out: Path) -> str:
    """``docs/kernels.md`` from every ``matrix.json`` under :func:`dumps_root`."""
    rows = []
    for p in sorted(dumps_root().glob("*/matrix.json")):
        try:
            rows.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    rows.sort(key=_kernel_key)
    lines = [
        "| kernel | page size | debug vmlinux | modules | slots | OOL stubs | findings | "
        "checks | time: boot / QMP / gdbstub / dump drgn / dump gdb |",
        "|---|---|--:|--:|--:|--:|---|---|---|",
    ]
    for r in rows:
        t = r["times"]
        tt = " / ".join(f"{t[k]:g} s" if k in t else "-" for k in
                        ("boot", "qmp-drgn", "gdbstub-gdb", "dump-drgn", "dump-gdb"))
        checks = "pass" if r.get("ok") else f"FAIL ({len(r['errors'])})"
        findings = ", ".join(r["findings"]) or "none"
        kernel = f"{r['suite']} {r['kver']} ({r['version']})"
        if r.get("suite") == "lab":  # lpmatrix.py: the lab's own livepatch build
            kernel = (f"lab {r['name']}: {r['kver']} (linux-source {r['version']}, "
                      f"{r.get('compiler', 'clang 22')}; "
                      f"{r.get('livepatch_frames', 0)} livepatch frames, "
                      f"{r.get('redirects', 0)} klp redirects)")
        lines.append(
            f"| {kernel} | {r['page_size']} | "
            f"{r['debug_vmlinux_mb']} MB | {r['modules']} | {r['slots']:,} | {r['ool_stubs']:,} | "
            f"{findings} | {checks} | {tt} |"
        )
    table = "\n".join(lines)
    text = out.read_text() if out.exists() else ""
    begin, end = "<!-- matrix-begin -->", "<!-- matrix-end -->"
    if begin in text and end in text:
        text = text[: text.index(begin) + len(begin)] + "\n" + table + "\n" + text[text.index(end):]
    else:
        text = text.rstrip() + f"\n\n{begin}\n{table}\n{end}\n"
    out.write_text(text.lstrip())
    return table


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="matrix.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("kernels", nargs="*",
                    help=f"default: {' '.join(DEFAULT_KERNELS)}; also lp-ool, lp-pcrel, lp-612 "
                    "(the lab's livepatch builds)")
    ap.add_argument("--no-gdb", action="store_true", help="drgn only (no gdbstub, no gdb core)")
    ap.add_argument("--timeout", type=float, default=900, help="boot timeout per kernel")
    ap.add_argument("--table-only", action="store_true", help="only rewrite docs/kernels.md")
    ap.add_argument("--out", default=str(REPO / "docs" / "kernels.md"))
    a = ap.parse_args(argv)
    rc = 0
    if not a.table_only:
        for name in a.kernels or DEFAULT_KERNELS:
            try:
                if name.startswith("lp-"):  # the lab's own livepatch kernels
                    import lpmatrix

                    r = lpmatrix.run_lp(name, use_gdb=not a.no_gdb,
                                        timeout=max(a.timeout, 1500))
                else:
                    r = run_kernel(name, use_gdb=not a.no_gdb, timeout=a.timeout)
            except (lab.LabError, subprocess.TimeoutExpired, OSError) as e:
                print(f"matrix: {name}: {e}", file=sys.stderr)
                rc = 2
                continue
            state = "pass" if r["ok"] else "FAIL"
            print(f"matrix: {name}: {state}: {r['modules']} modules, {r['slots']} slots, "
                  f"{r['ool_stubs']} OOL stubs; {r['times']}", flush=True)
            for e in r["errors"]:
                print(f"  {e}")
            if not r["ok"] and rc == 0:
                rc = 1
    print(write_table(Path(a.out)))
    return rc


if __name__ == "__main__":
    sys.exit(main())
