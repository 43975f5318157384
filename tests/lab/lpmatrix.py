#!/usr/bin/env python3
"""The lab's own livepatch kernels in the matrix: ``lp-ool`` (Linux 7.2, clang 22, OOL stubs).

``lp-pcrel`` is the same with ``CONFIG_PPC_KERNEL_PCREL`` (gcc: the kernel
allows PCREL with gcc only, so no OOL stubs), booted on ``-cpu power10``: the
livepatch frames' saved r2 must read ``no TOC (PCREL)``.  ``lp-612`` is the
6.12 era (trixie's ``linux-source-6.12``, gcc 12: ``mem[]``, pre-6.14
section attributes, the stub sentinel, no OOL stubs); its dump stays in
``<dumps>/lp-612/``.

For ``lp-ool`` (:mod:`lpkernel`, variant ``ool``) the matrix:

1. builds the kernel once (cached; a re-run is a no-op), writes an initramfs
   (:class:`stock.Initramfs`) with the recipes' module set: ordinary modules,
   the kernel's livepatch samples and selftest modules, ``rk_lib``,
   ``rk_target`` and the ``rk_lp`` livepatch; its ``/init``
   (``lpkernel/guest-init-lp.sh``) parks the ``rk_target`` kthread inside
   the livepatched ``rk_target_inner`` (livepatch stack depth 2) and prints
   the kernel's own view (``RK-FACT``, ``RK-SECT``, ``/proc/modules``);
2. runs ``audit``, ``lpstack``, ``bt PID`` and ``ftrace`` live (QMP/drgn,
   gdbstub/gdb), dumps the guest and runs them on the dump (drgn, gdb);
3. checks: each command's four reports are equal (but for the target kind);
   the audit agrees with ``/proc/modules`` and ``/sys/module/*/sections``
   (:func:`matrix.check_report`), with no finding above ``info``; every
   module's OOL stubs are sited and checked (site, site symbol, enabled or
   disabled, ``bl`` to the module's own trampoline); the parked task's
   livepatch frames have the LR symbols ``/proc/kallsyms`` implies; ``bt``
   is ``/proc/PID/stack`` with each ``livepatch_handler`` replaced by the
   caller its frame saved; ``ftrace`` names exactly the patched functions of
   ``/sys/kernel/livepatch`` and their ``klp_func``.

The dump stays in ``<dumps>/lp-ool-7.2/`` (``vmcore``, ``vmlinux`` with
its debug info, ``modules/``, ``console.log``, ``README.txt``, the reports)
for other tools; ``tests/test_lab_lpkernel.py`` re-checks it when asked.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import debarchive  # noqa: E402
import lab  # noqa: E402
import lpkernel  # noqa: E402
import matrix  # noqa: E402
import stock  # noqa: E402

__all__ = (
    "COMMANDS",
    "LP_KERNELS",
    "LabFacts",
    "check_lp",
    "dump_dir",
    "lab_facts",
    "lp_kernel_spec",
    "run_lp",
)

#: matrix name -> lpkernel variant
LP_KERNELS = {"lp-ool": "ool", "lp-pcrel": "pcrel", "lp-612": "612"}
#: the commands run four ways: name -> klpinspect arguments ("{pid}": the parked task)
COMMANDS = {
    "audit": ["audit"],
    "lpstack": ["lpstack"],
    "bt": ["bt", "{pid}"],
    "ftrace": ["ftrace"],
}
# The crypto/crc modules of each era: 7.x folded the ppc crc32c/md5/sha1 code
# into lib/ (crc32c-vpmsum, md5-ppc, sha1-powerpc, libcrc32c are gone); 6.12
# has the 6.1 fixture's set (../shared/lab-recipes/22-lp-initramfs.sh).
ERA_MODULES = {
    "7.2": "crc32c-cryptoapi crc-itu-t md5 sha1 vmx-crypto udf".split(),
    "6.12": ("crc32c_generic crc32c-vpmsum libcrc32c crc-itu-t md5-ppc sha1-powerpc "
             "vmx-crypto udf").split(),
}
# The recipes' module set (22-lp-initramfs.sh) but for ERA_MODULES: not
# atomic_replace (it would replace the other patches).
WANT = (
    "virtio_console virtio_net virtio_blk virtio_balloon pseries-rng "
    "bridge 8021q tun veth dummy loop fuse overlay isofs squashfs "
    "livepatch-sample livepatch-shadow-mod livepatch-shadow-fix1 "
    "livepatch-callbacks-mod livepatch-callbacks-demo "
    "test_klp_livepatch test_klp_callbacks_mod test_klp_shadow_vars"
).split()
RK_MODULES = ("rk_lib", "rk_target", "rk_lp")
_EXTRA_APPLETS = ("basename", "hexdump", "rm", "getconf")
HANDLER = "livepatch_handler"


def dump_dir(name: str, version: str | None = None, dumps: Path | None = None) -> Path:
    """``<dumps>/lp-ool-7.2``: where the matrix keeps this kernel's dump (the
    name and its variant's era; ``lp-612``, already naming its era, stays so)."""
    if version is None:
        v = lpkernel.VARIANTS.get(LP_KERNELS.get(name, ""))
        version = v.era if v is not None else "7.2"
    root = dumps or matrix.dumps_root()
    return root / name if name.endswith(version.replace(".", "")) else root / f"{name}-{version}"


def _busybox() -> Path:
    try:
        deb = debarchive.Suite(lpkernel.SOURCE_SUITE).fetch("busybox-static")
    except debarchive.ArchiveError as e:
        raise lab.LabError(str(e)) from None
    root = lpkernel.lp_cache() / "lpsrc" / f"busybox-{deb.stem}"
    stock.extract(deb, root)
    return stock._find_busybox(root)


def lp_kernel_spec(name: str = "lp-ool") -> lab.KernelSpec:
    """The lab's livepatch kernel *name* (built on first use: 20-40 min) with its
    initramfs, as a :class:`lab.KernelSpec`."""
    if name not in LP_KERNELS:
        raise lab.LabError(f"unknown livepatch kernel {name!r} (one of {', '.join(LP_KERNELS)})")
    try:
        b = lpkernel.build(LP_KERNELS[name])
    except (lpkernel.LpError, debarchive.ArchiveError) as e:
        raise lab.LabError(str(e)) from None
    kver = b.kver
    config = (b.out / ".config").read_text().splitlines()
    ool = "CONFIG_PPC_FTRACE_OUT_OF_LINE=y" in config
    pcrel = "CONFIG_PPC_KERNEL_PCREL=y" in config
    bb = _busybox()
    init = lpkernel.LPDIR / "guest-init-lp.sh"
    initrd = b.out / "initramfs.cpio.gz"
    inputs = [init, Path(__file__), Path(stock.__file__), b.out / ".lab-stamp"]
    if not initrd.exists() or initrd.stat().st_mtime < max(p.stat().st_mtime for p in inputs):
        tmp = initrd.with_suffix(".tmp")
        ird = stock.Initramfs(tmp)
        ird.busybox(bb)
        for a in _EXTRA_APPLETS:
            ird.symlink(f"bin/{a}", "busybox")
        ird.file("init", init, 0o755)
        loaded = ird.modules(b.mods, kver, [*ERA_MODULES[b.variant.era], *WANT])
        for m in RK_MODULES:
            ird.file(f"rk/{m}.ko", b.rkmods / f"{m}.ko")
        ird.file("etc/modlist-lp", "".join(f"/rk/{m}.ko\n" for m in RK_MODULES).encode())
        ird.close()
        tmp.replace(initrd)
        print(f"lab: {name} initramfs with {len(loaded) + len(RK_MODULES)} modules: {initrd}",
              flush=True)
    args = [
        "-M", "pseries", "-cpu", b.variant.cpu, "-m", "512M", "-smp", "2",
        "-kernel", "vmlinux", "-initrd", "initramfs.cpio.gz",
        # init_on_free=1: the module files deleted after insmod are zero in the dump
        "-append", "console=hvc0 loglevel=6 init_on_free=1",
        "-display", "none", "-vga", "none", "-monitor", "none", "-nic", "none",
        "-netdev", "user,id=n0,restrict=on", "-device", "virtio-net-pci,netdev=n0,romfile=",
        "-device", "virtio-balloon-pci", "-device", "virtio-serial-pci",
    ]  # fmt: skip
    return lab.KernelSpec(
        name=name,
        qemu_args=args,
        files={"vmlinux": b.vmlinux, "initramfs.cpio.gz": initrd},
        symbols=[b.vmlinux],
        extra={"kver": kver, "version": b.version, "suite": "lab", "flavour": name,
               "page_size": "64K", "modules": str(b.mods / "lib" / "modules" / kver),
               "rkmods": str(b.rkmods), "variant": b.variant.name,
               "source_package": b.variant.source_package, "source_suite": b.variant.suite,
               "compiler": "clang 22" if b.variant.llvm else "gcc 12",
               "ool": "1" if ool else "", "pcrel": "1" if pcrel else "",
               "build_seconds": (b.out / "build-time.txt").read_text().strip()
               if (b.out / "build-time.txt").exists() else ""},
    )


# ---- the guest's own view


@dataclass
class LabFacts:
    """What the guest printed (``RK-FACT`` lines of ``guest-init-lp.sh``)."""

    kallsyms: dict[tuple[str, str], int] = field(default_factory=dict)  # (name, owner) -> addr
    livepatches: dict[str, list[tuple[str, str, int]]] = field(default_factory=dict)
    pid: int = 0
    comm: str = ""
    stack: list[str] = field(default_factory=list)  # /proc/PID/stack: "name+0xoff"
    modules: list[str] = field(default_factory=list)
    # /sys/kernel/tracing/enabled_functions, if printed: (name, owner) -> (refs, ops)
    enabled: dict[tuple[str, str], tuple[int, int | None]] | None = None

    def sym(self, name: str, owner: str = "vmlinux") -> int:
        return self.kallsyms[(name, owner)]


def lab_facts(console: str) -> LabFacts:
    """Parse the ``RK-FACT`` lines of a console log."""
    f = LabFacts()
    stack_lines = 0
    for line in console.splitlines():
        if not line.startswith("RK-FACT "):
            continue
        w = line.split()
        kind = w[1]
        if kind == "kallsyms" and len(w) >= 5:
            owner = w[5].strip("[]") if len(w) > 5 else "vmlinux"
            f.kallsyms[(w[2], owner)] = int(w[3], 16)
        elif kind == "livepatch":
            funcs = []
            for item in line.split("funcs=", 1)[1].split():
                obj, _, rest = item.partition(":")
                fn, _, pos = rest.partition(",")
                funcs.append((obj, fn, int(pos or 1)))
            f.livepatches[w[2]] = funcs
        elif kind == "task":
            kv = dict(x.split("=", 1) for x in w[2:] if "=" in x)
            f.pid, f.comm = int(kv["pid"]), kv["comm"]
        elif kind == "stack":
            stack_lines += 1
            # The first entry is no frame: arch_stack_walk (arch/powerpc/kernel/
            # stacktrace.c) starts at thread.ksp, _switch's own frame, and prints
            # its LR save slot, which _switch never writes: whatever was there
            # (0x0, a stack address, a stale return address such as
            # timer_interrupt+0x128 were all seen).  __switch_to comes next.
            m = re.match(r"\[<[0-9a-f]+>\] (\S+?)(?:/0x[0-9a-f]+)?(?: \[\S+\])?$", " ".join(w[2:]))
            if m and stack_lines > 1:
                f.stack.append(m.group(1))
        elif kind == "module":
            f.modules.append(w[2])
        elif kind == "ftrace_enabled_begin":
            f.enabled = {}
        elif kind == "ftrace_enabled" and f.enabled is not None:
            m = re.match(r"RK-FACT ftrace_enabled (\S+)(?: \[(\S+)\])? \((\d+)\)", line)
            if m:
                ops = re.search(r"\tops: (0x[0-9a-f]+|[0-9a-f]{16}) ", line)
                f.enabled[(m.group(1), m.group(2) or "vmlinux")] = (
                    int(m.group(3)), int(ops.group(1), 16) if ops else None)
    return f


def _name(symbol: str | None) -> str:
    """``msleep+0x58/0x98 [mod]`` -> ``msleep+0x58`` (no size, no owner)."""
    return re.sub(r"/0x[0-9a-f]+.*$", "", symbol or "")


def _check_ool(audit: dict[str, Any]) -> list[str]:
    errs: list[str] = []
    n = 0
    for m in audit.get("modules", []):
        tramp = (m.get("tramp") or {}).get("address")
        for s in m.get("ool_stubs", []):
            n += 1
            where = f"{m['name']}: OOL stub {s['address']}"
            if s.get("target") != tramp:
                errs.append(f"{where}: target {s.get('target')} is not arch.tramp {tramp}")
            if s.get("site_state") not in ("enabled", "disabled"):
                errs.append(f"{where}: site state {s.get('site_state')}")
            if not s.get("site") or not s.get("site_symbol"):
                errs.append(f"{where}: not sited ({s.get('site')}, {s.get('site_symbol')})")
            if s.get("site_state") == "enabled" and not s.get("ftrace_op"):
                errs.append(f"{where}: enabled but no ftrace_op")
    if not n:
        errs.append("audit: no OOL stubs at all (CONFIG_PPC_FTRACE_OUT_OF_LINE kernel)")
    return errs


def _check_lpstack(rep: dict[str, Any], facts: LabFacts, pcrel: bool = False) -> list[str]:
    errs: list[str] = []
    tasks = {t["pid"]: t for t in rep.get("tasks", [])}
    if set(tasks) != {facts.pid}:
        errs.append(f"lpstack: tasks with frames {sorted(tasks)}, expected [{facts.pid}]")
    t = tasks.get(facts.pid)
    if t is None:
        return errs
    frames = t.get("frames", [])
    # rk_target_thread -> (patched) rk_target_work -> livepatch_rk_target_work ->
    # (patched) rk_target_inner: two livepatch_handler frames; each saved LR is
    # the return address into the caller of the patched function
    want = [("rk_target_thread", "rk_target"), ("livepatch_rk_target_work", "rk_lp")]
    if len(frames) != len(want):
        return errs + [f"lpstack: {len(frames)} frames, expected 2"]
    for fr, (fn, owner) in zip(frames, want, strict=True):
        base = facts.sym(fn, owner)
        lr = int(fr["lr"], 16)
        sym = fr.get("lr_symbol") or ""
        if not sym.startswith(f"{fn}+{lr - base:#x}/") or not sym.endswith(f" [{owner}]"):
            errs.append(f"lpstack: frame LR {fr['lr']} is {sym!r}; kallsyms: {fn} at {base:#x}")
        if not fr.get("magic_ok"):
            errs.append(f"lpstack: frame {fr['address']}: bad end marker")
        # CONFIG_PPC_KERNEL_PCREL: livepatch_handler saves r2 all the same, but
        # no code keeps a TOC in it (klpinspect.livepatch.PCREL_NO_TOC)
        owner = "no TOC (PCREL)" if pcrel else "rk_target"
        if fr.get("r2_owner") != owner:
            errs.append(f"lpstack: frame {fr['address']}: r2 {fr['r2']} owner "
                        f"{fr.get('r2_owner')!r}, expected {owner!r}")
    return errs


def _check_bt(rep: dict[str, Any], facts: LabFacts, lp: dict[str, Any]) -> list[str]:
    errs: list[str] = []
    tasks = rep.get("tasks") or []
    if len(tasks) != 1 or not tasks[0].get("backtrace"):
        return [f"bt {facts.pid}: no backtrace"]
    bt = tasks[0]["backtrace"]
    names = [_name(e["symbol"]) for e in bt if " (inlined in " not in (e["symbol"] or "")]
    if any(n.startswith(HANDLER + "+") for n in names):
        errs.append(f"bt: {HANDLER} still in the corrected trace")
    frames = ((lp.get("tasks") or [{}])[0]).get("frames", [])
    callers = iter(_name(f["lr_symbol"]) for f in reversed(frames))
    # /proc/PID/stack with each livepatch_handler replaced by its frame's caller,
    # innermost handler <-> last frame pushed
    want = [next(callers, "?") if n.startswith(HANDLER + "+") else n for n in facts.stack]
    it = iter(names)
    if not all(any(w == n for n in it) for w in want):
        errs.append(f"bt: {names} does not contain /proc/{facts.pid}/stack corrected: {want}")
    if sum(1 for e in bt if e.get("corrected")) != 2:
        errs.append("bt: not exactly two corrected entries")
    return errs


def _check_ftrace(rep: dict[str, Any], facts: LabFacts) -> list[str]:
    errs: list[str] = []
    loaded = {"vmlinux", *facts.modules}
    want: dict[tuple[str, str], set[str]] = {}
    for patch, funcs in facts.livepatches.items():
        for obj, fn, _pos in funcs:
            if obj in loaded:
                want.setdefault((obj, fn), set()).add(patch)
    got: dict[tuple[str, str], set[str]] = {}
    ft = rep.get("ftrace", {})
    for r in ft.get("redirects", []):
        keys = {(k["object"], k["function"]) for k in r.get("klp", [])}
        if len(keys) != 1:
            errs.append(f"ftrace: {r.get('symbol')}: klp_func of {sorted(keys)}")
            continue
        ((obj, fn),) = keys
        got[(obj, fn)] = {k["patch"] for k in r["klp"]}
        if r.get("owner") != obj or not (r.get("symbol") or "").startswith(fn + "+0x"):
            errs.append(f"ftrace: redirect {r.get('symbol')} [{r.get('owner')}] for {obj}:{fn}")
        if [o.get("func") for o in r.get("ops", [])] != ["klp_ftrace_handler"]:
            errs.append(f"ftrace: {fn}: ops {r.get('ops')}")
        for k in r["klp"]:
            if not (k.get("patched") and k.get("patch_enabled")):
                errs.append(f"ftrace: {k['patch']} {fn}: not patched/enabled")
            owner = "vmlinux" if obj == "vmlinux" else obj
            if (fn, owner) in facts.kallsyms and int(k["old_func"], 16) != facts.sym(fn, owner):
                errs.append(f"ftrace: {k['patch']} {fn}: old_func {k['old_func']} vs kallsyms")
            if k["patch"] == "rk_lp" and int(k["new_func"], 16) != facts.sym(
                    f"livepatch_{fn}", "rk_lp"):
                errs.append(f"ftrace: rk_lp {fn}: new_func {k['new_func']} vs kallsyms")
    if got != want:
        errs.append(f"ftrace: redirected {sorted(got.items())}; /sys/kernel/livepatch: "
                    f"{sorted(want.items())}")
    if facts.enabled is not None:
        # the kernel's own enabled_functions: the same sites, refs and ftrace_ops
        ours = {(_name(r.get("symbol")).split("+")[0], r.get("owner")):
                (r.get("refs"), int(r["ops"][0]["address"], 16) if r.get("ops") else None)
                for r in ft.get("redirects", [])}
        theirs = {k: (refs, ops if ops is not None else ours.get(k, (0, None))[1])
                  for k, (refs, ops) in facts.enabled.items()}
        if ours != theirs:
            errs.append(f"ftrace: redirects {sorted(ours.items())} vs enabled_functions "
                        f"{sorted(facts.enabled.items())}")
    for f in rep.get("findings", []):
        if f.get("severity") != "info":
            errs.append(f"ftrace finding {f.get('severity')} {f.get('code')}: {f.get('message')}")
    return errs


def check_lp(reports: dict[str, dict[str, dict[str, Any]]], view: dict[str, Any],
             facts: LabFacts, ool: bool = True, pcrel: bool = False) -> list[str]:
    """Every check of the module docstring on ``reports[kind][command]``; *ool*:
    the kernel has out-of-line ftrace stubs, *pcrel*: ``CONFIG_PPC_KERNEL_PCREL``."""
    errs: list[str] = []
    kinds = list(reports)
    base = reports[kinds[-1]] if "dump-drgn" not in reports else reports["dump-drgn"]
    for kind, reps in reports.items():
        for cmd, rep in reps.items():
            if matrix._strip_kind(rep) != matrix._strip_kind(base[cmd]):
                errs.append(f"{kind}: {cmd} report differs from dump-drgn's")
        errs += [f"{kind}: {e}" for e in matrix.check_report(reps["audit"], view)]
    if ool:
        errs += _check_ool(base["audit"])
    elif any(m.get("ool_stubs") for m in base["audit"].get("modules", [])):
        errs.append("audit: OOL stubs on a kernel without CONFIG_PPC_FTRACE_OUT_OF_LINE")
    errs += _check_lpstack(base["lpstack"], facts, pcrel)
    errs += _check_bt(base["bt"], facts, base["lpstack"])
    errs += _check_ftrace(base["ftrace"], facts)
    return errs


# ---- running it


def _gdb_all(symbols: Path, target: list[str], out: Path, pid: int,
             timeout: float = 1800) -> tuple[dict[str, dict[str, Any]], float]:
    """Every command of :data:`COMMANDS` in one gdb session: {command: report}."""
    args = [matrix.GDB, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
            "-ex", f"file {symbols}", *target, "-ex", f"source {matrix.GDB_SCRIPT}"]
    files = {}
    for cmd, argv in COMMANDS.items():
        files[cmd] = out.with_name(f"{out.name}-{cmd}.json")
        files[cmd].unlink(missing_ok=True)
        line = " ".join(a.format(pid=pid) for a in argv)
        args += ["-ex", f"pipe klp-{line} --format json | cat > {files[cmd]}"]
    if "target" in " ".join(target):
        args += ["-ex", "detach"]
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME")}
    t0 = time.monotonic()
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    secs = time.monotonic() - t0
    reps = {}
    for cmd, f in files.items():
        if not f.exists() or not f.stat().st_size:
            tail = (p.stderr.strip() or p.stdout.strip())[-400:]
            raise lab.LabError(f"gdb klp-{cmd} gave no report: {tail}")
        reps[cmd] = json.loads(f.read_text())
    return reps, secs


def _drgn_all(target: list[str], pid: int) -> tuple[dict[str, dict[str, Any]], float]:
    reps = {}
    total = 0.0
    for cmd, argv in COMMANDS.items():
        reps[cmd], t = matrix._klpinspect(
            [*target, "--format", "json", *(a.format(pid=pid) for a in argv)])
        total += t
    return reps, total


def _modules_dir(d: Path, spec: lab.KernelSpec, console: str) -> None:
    """``<dump>/modules``: a link to every ``.ko`` the guest loaded (as built, with DWARF)."""
    m = d / "modules"
    if m.is_symlink():
        m.unlink()
    m.mkdir(exist_ok=True)
    for old in m.iterdir():
        old.unlink()
    root = Path(spec.extra["modules"])
    kos = {p.stem: p for p in root.rglob("*.ko")}
    kos.update({p.stem: p for p in Path(spec.extra["rkmods"]).glob("*.ko")})
    for name in re.findall(r"^(\S+) \d+ \d+ ", console.split("RK-MODULES-BEGIN", 1)[-1], re.M):
        ko = kos.get(name) or kos.get(name.replace("_", "-"))
        if ko is not None:
            (m / ko.name).symlink_to(ko)


def _write_readme(d: Path, spec: lab.KernelSpec, res: dict[str, Any]) -> None:
    x = spec.extra
    feat = ("CONFIG_PPC_KERNEL_PCREL (POWER10 pc-relative: no TOC, r2 free)" if x["pcrel"]
            else "CONFIG_PPC_FTRACE_OUT_OF_LINE (out-of-line ftrace stubs), no BTF"
            if x["ool"] else "profile-kernel ftrace")
    (d / "README.txt").write_text(f"""\
QEMU dump of the lab's own Linux {x['kver']} livepatch kernel ({res['name']}), built by
tests/lab/lpkernel.py from Debian's {x['source_package']} {x['version']} with {x['compiler']}:
CONFIG_LIVEPATCH, {feat}, 64K pages; booted by tests/lab/lpmatrix.py under
qemu-system-ppc64 -M pseries -cpu {res['cpu']} -m 512M -smp 2 (TCG, init_on_free=1).
The guest loaded {res['view_modules']} modules with 5 livepatches (the kernel's samples and
selftests, rk_lp) and parked the rk_target kthread (pid {res['pid']}) inside the patched
rk_target_inner: two livepatch_handler frames on its livepatch stack.

vmcore       QMP dump-guest-memory, fixed up (qemucore.py): opens in drgn, gdb, crash
vmlinux      -> the built vmlinux (booted; DWARF5, zlib-compressed debug sections)
modules/     -> every loaded .ko as built (with DWARF; drgn 0.3.0 wants them
                decompressed: objcopy --decompress-debug-sections)
console.log  the guest's console: RK-FACT lines (/proc/kallsyms, /sys/kernel/livepatch,
             /proc/PID/stack of the parked task), RK-SECT (/sys/module/*/sections)
matrix.json  the checks of tests/lab/lpmatrix.py; *.json: klpinspect's reports

    klpinspect -c vmcore -s vmlinux audit
    klpinspect -c vmcore -s vmlinux bt {res['pid']}
    klpinspect -c vmcore -s vmlinux ftrace
""")


def run_lp(name: str = "lp-ool", use_gdb: bool = True, timeout: float = 1500,
           dumps: Path | None = None) -> dict[str, Any]:
    """Build (cached), boot, run and check livepatch kernel *name*; the result
    dict (also ``<dump dir>/matrix.json``)."""
    t0 = time.monotonic()
    spec = lp_kernel_spec(name)
    t_build = time.monotonic() - t0
    vmlinux = spec.symbols[0]
    d = dump_dir(name, dumps=dumps)
    d.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "name": name, "kver": spec.extra["kver"], "version": spec.extra["version"],
        "suite": "lab", "page_size": spec.extra["page_size"],
        "cpu": lpkernel.VARIANTS[LP_KERNELS[name]].cpu,
        "compiler": spec.extra["compiler"], "ool_expected": bool(spec.extra["ool"]),
        "pcrel": bool(spec.extra["pcrel"]),
        "debug_vmlinux_mb": round(vmlinux.stat().st_size / 1e6),
        "times": {"build": round(t_build, 1),
                  "kernel_build": float(spec.extra["build_seconds"] or 0)},
        "errors": [],
    }
    reports: dict[str, dict[str, dict[str, Any]]] = {}
    vmcore = d / "vmcore"
    print(f"matrix: {name}: {spec.extra['kver']}, booting", flush=True)
    guest_dir = (dumps / "guest") if dumps is not None else lab.WORK / "matrix" / name
    with lab.Guest(spec, guest_dir, gdb=use_gdb) as g:
        res["times"]["boot"] = round(g.wait_ready(timeout), 1)
        console = g.console_text()
        view = matrix.guest_view(console)
        facts = lab_facts(console)
        res["view_modules"] = len(view["modules"])
        res["pid"] = facts.pid
        res["insmod_failed"] = re.findall(r"^RK: insmod FAILED (\S+)", console, re.M)
        (d / "console.log").write_text(console)
        reports["qmp-drgn"], t = _drgn_all(["--qemu", g.qmp_path, "-s", str(vmlinux)],
                                           facts.pid)
        res["times"]["qmp-drgn"] = round(t, 2)
        if use_gdb:
            reports["gdbstub-gdb"], t = _gdb_all(
                vmlinux, ["-ex", f"target remote {g.gdb_address}"], d / "gdbstub", facts.pid)
            res["times"]["gdbstub-gdb"] = round(t, 2)
        r = g.dump(vmcore)
        res["times"]["dump"] = round(r.dump_seconds + r.fixup_seconds, 1)
    reports["dump-drgn"], t = _drgn_all(["-c", str(vmcore), "-s", str(vmlinux)], facts.pid)
    res["times"]["dump-drgn"] = round(t, 2)
    if use_gdb:
        reports["dump-gdb"], t = _gdb_all(vmlinux, ["-ex", f"core-file {vmcore}"],
                                          d / "gdbcore", facts.pid)
        res["times"]["dump-gdb"] = round(t, 2)
    matrix._link(d, "vmlinux", vmlinux)
    _modules_dir(d, spec, console)
    base = reports["dump-drgn"]
    res.update(matrix._summary(base["audit"]))
    res["livepatch_frames"] = sum(len(t.get("frames", [])) for t in base["lpstack"]["tasks"])
    res["redirects"] = len(base["ftrace"]["ftrace"]["redirects"])
    if res["insmod_failed"]:
        res["errors"].append(f"insmod failed: {res['insmod_failed']}")
    res["errors"] += check_lp(reports, view, facts, res["ool_expected"], res["pcrel"])
    res["times"]["total"] = round(time.monotonic() - t0, 1)
    res["ok"] = not res["errors"]
    for cmd, rep in base.items():
        (d / f"{cmd}.json").write_text(json.dumps(rep, indent=1) + "\n")
    (d / "matrix.json").write_text(json.dumps(res, indent=1) + "\n")
    _write_readme(d, spec, res)
    return res


def recheck(d: Path, out: Path, use_gdb: bool = True) -> tuple[list[str], dict[str, float]]:
    """Re-run every check on a kept dump directory *d* (``dump-drgn``, ``dump-gdb``;
    gdb's reports go to *out*): what ``tests/test_lab_lpkernel.py`` does.
    Returns (errors, seconds per back end)."""
    for f in ("vmcore", "vmlinux", "console.log"):
        if not (d / f).exists():
            name = d.name if d.name in LP_KERNELS else d.name.rsplit("-", 1)[0]
            raise lab.LabError(f"no {d / f}: make matrix MATRIX={name}")
    console = (d / "console.log").read_text()
    facts = lab_facts(console)
    reports: dict[str, dict[str, dict[str, Any]]] = {}
    times = {}
    reports["dump-drgn"], times["dump-drgn"] = _drgn_all(
        ["-c", str(d / "vmcore"), "-s", str(d / "vmlinux")], facts.pid)
    if use_gdb:
        reports["dump-gdb"], times["dump-gdb"] = _gdb_all(
            d / "vmlinux", ["-ex", f"core-file {d / 'vmcore'}"], out / "gdbcore", facts.pid)
    m = json.loads((d / "matrix.json").read_text()) if (d / "matrix.json").exists() else {}
    return check_lp(reports, matrix.guest_view(console), facts, m.get("ool_expected", True),
                    m.get("pcrel", False)), times
