"""The public Python API: open a kernel, run a check, get a :class:`Report`.

Everything the ``klpinspect`` command, the drgn ``%klp-*`` commands and the
gdb ``klp …`` commands print comes from these functions, so a post-mortem
script gets exactly what a user sees::

    import klpinspect

    target = klpinspect.open_target("vmcore", symbols=["vmlinux.debug"])
    report = klpinspect.audit(target)
    for f in report.findings:
        print(f.severity, f.code, f.module, f.message)
    raise SystemExit(report.exit_status)

Inside drgn (a script run with ``drgn -c VMCORE -s VMLINUX script.py``, or a
corelens-style module) use :func:`target_from_drgn` on the ``prog`` you have.
See ``docs/api.md`` for every name with an example.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from .errors import KlpError, TargetError
from .report import CODES, Finding, FindingCode, ModuleRecord, Report, Severity, TaskRecord
from .target import Target

if TYPE_CHECKING:
    import drgn

__all__ = (
    "CODES",
    "Finding",
    "FindingCode",
    "KlpError",
    "ModuleRecord",
    "Report",
    "Severity",
    "Target",
    "TargetError",
    "TaskRecord",
    "TaskRef",
    "audit",
    "backtrace",
    "crashed_task",
    "ftrace",
    "lint_ko",
    "livepatch_stacks",
    "open_target",
    "resolve_task",
    "stubs",
    "target_from_drgn",
    "toc",
)

# PID_MAX_LIMIT (include/linux/threads.h, 4M on 64-bit): a number above it is
# not a pid, so :func:`backtrace` takes it as a ``struct task_struct`` address.
PID_MAX_LIMIT = 4 * 1024 * 1024

PathLike = str | os.PathLike[str]


class TaskRef(NamedTuple):
    """A task named the way crash and drgn users name one.

    ``TaskRef("pid", 130)`` or ``TaskRef("task", 0xc000000003a8c200)`` (the
    address of its ``struct task_struct``).
    """

    kind: str
    value: int


def _settled(report: Report) -> Report:
    """Every finding with its severity filled in (``Finding.severity`` is ``None``
    when the code's default applies; API users read ``.severity``)."""
    from dataclasses import replace

    report.findings = [
        f if f.severity is not None else replace(f, severity=f.level) for f in report.findings
    ]
    return report


def open_target(
    core: PathLike | None = None,
    *,
    symbols: Iterable[PathLike] = (),
    vmcoreinfo: PathLike | None = None,
    live: bool = False,
    qemu: PathLike | None = None,
    debug_directories: Iterable[PathLike] = (),
    default_symbols: bool = False,
    dwarf: bool = True,
    elf_sizes: bool = True,
) -> Target:
    """Open a kernel the way the ``klpinspect`` command does (drgn back end).

    Give exactly one of ``core``, ``live=True`` or ``qemu``.

    :param core: a vmcore: ELF, kdump-compressed (makedumpfile ``-c``) or a
        QEMU ``dump-guest-memory`` file
    :param symbols: vmlinux / ``vmlinux.debug`` / ``.ko`` / ``.ko.debug`` files,
        or directories of them (a ``/usr/lib/debug`` tree is searched too);
        none (and no ``debug_directories``, no ``default_symbols``): types from
        the kernel's own BTF, symbols from kallsyms (``target.debuginfo``)
    :param vmcoreinfo: a file with the kernel's VMCOREINFO text, for ppc64
        QEMU dumps that carry none
    :param live: the running kernel (``/proc/kcore``)
    :param qemu: the QMP socket of a running QEMU guest
    :param debug_directories: more directories for drgn's own debug info
        search (``drgn --debug-directory``)
    :param default_symbols: also run drgn's default debug info search
    :param dwarf: ``False``: when ``symbols`` is one vmlinux and the kernel
        carries BTF, types come from the BTF and symbols from the vmlinux's
        ``.symtab``, and its DWARF is never read (``target.debuginfo`` is
        ``"btf+symtab"``): the same answers, a fraction of the time and memory,
        but backtraces without inlined frames or source lines.  The
        ``klpinspect`` command does this for every command but ``bt``.
    :param elf_sizes: ``False`` (with ``dwarf=False``): the symbols from the
        kernel's own kallsyms where they are whole (readable, data symbols
        included) rather than from the vmlinux's ``.symtab``, left unparsed
        (``target.debuginfo`` is ``"btf+kallsyms"``): the same names -- the
        build ID says it is the same kernel -- but a symbol's size runs to the
        next symbol, padding included, as in the kernel's ``%pS``.  The
        ``klpinspect`` command does this for every command whose report shows
        no symbol sizes (all but ``ftrace`` and ``bt``).
    :raises TargetError: when the target cannot be used (a one-line message)
    """
    chosen = [x for x in (core, live or None, qemu) if x]
    if not chosen:
        raise TargetError("no target: give -c VMCORE, --live or --qemu QMP_SOCKET")
    if len(chosen) > 1:
        raise TargetError("give only one of -c VMCORE, --live, --qemu QMP_SOCKET")
    try:
        from .backends.drgn.program import open_program
        from .backends.drgn.target import DrgnTarget
    except ImportError as e:
        raise TargetError(f"the drgn back end is not available: {e}") from None
    kwargs: dict[str, Any] = {}
    dirs = [os.fspath(d) for d in debug_directories]
    if dirs or default_symbols:
        kwargs.update(debug_directories=dirs, default_symbols=default_symbols)
    prog, kind = open_program(
        core=None if core is None else os.fspath(core),
        symbols=[os.fspath(s) for s in symbols],
        vmcoreinfo=None if vmcoreinfo is None else os.fspath(vmcoreinfo),
        live=live,
        qemu=None if qemu is None else os.fspath(qemu),
        dwarf=dwarf,
        elf_sizes=elf_sizes,
        **kwargs,
    )
    target = DrgnTarget(prog, kind)
    target.forkable = kind == "vmcore" and target.debuginfo in ("btf+kallsyms", "btf+symtab")
    return target


# One target per program, so kernel facts, the module list and the symbol
# table are read once per session.  drgn.Program takes no weak references:
# keyed by id(), holding the program (a session has one, for its lifetime).
_DRGN_TARGETS: dict[int, tuple[Any, Target]] = {}


def target_from_drgn(prog: drgn.Program) -> Target:
    """The :class:`Target` over a ``drgn.Program`` you already have (cached per program).

    :param prog: a ppc64 Linux kernel program with vmlinux debug info loaded
        (``drgn -c VMCORE -s VMLINUX``'s ``prog``), or with none and the
        plugin's BTF + kallsyms finders (``drgn -c VMCORE``)
    :raises TargetError: if ``prog`` is not a ppc64 Linux kernel
    """
    import drgn

    entry = _DRGN_TARGETS.get(id(prog))
    if entry is not None and entry[0] is prog:
        return entry[1]
    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise TargetError("not a Linux kernel program")
    if prog.platform is None or prog.platform.arch != drgn.Architecture.PPC64:
        arch = "unknown" if prog.platform is None else prog.platform.arch.name.lower()
        raise TargetError(f"not a ppc64 kernel: the program's architecture is {arch}")
    from .backends.drgn.program import translating_program
    from .backends.drgn.target import DrgnTarget

    kind = "live" if prog.flags & drgn.ProgramFlags.IS_LIVE else "vmcore"
    # A kdump-compressed ppc64 dump opened by drgn itself cannot read module
    # (vmalloc) memory unless the plugin's hook fixed the program up; then
    # this returns prog itself.
    target = DrgnTarget(translating_program(prog), kind)
    _DRGN_TARGETS[id(prog)] = (prog, target)
    return target


def stubs(target: Target, modules: Sequence[str] | None = None) -> Report:
    """Every used ``.stubs`` slot of the modules (``struct ppc64_stub_entry``), decoded.

    :param modules: module names (``struct module.name``); ``None``: all
    :raises KlpError: for a module name that is not loaded
    """
    from .audit import stubs_report

    return _settled(stubs_report(target, list(modules) if modules else None))


def toc(
    target: Target, modules: Sequence[str] | None = None, *, callsites: bool = False
) -> Report:
    """Each module's TOC (r2) and whether its stubs imply it (``klp-toc``)."""
    from .audit import toc_report

    return _settled(
        toc_report(target, list(modules) if modules else None, callsites=callsites)
    )


def audit(
    target: Target,
    modules: Sequence[str] | None = None,
    *,
    callsites: bool = True,
    lpstack: bool = True,
) -> Report:
    """Every check: stubs, TOCs, ftrace trampolines, call sites, livepatch stacks.

    :param modules: module names; ``None``: all
    :param callsites: scan each module's calls into its stubs
    :param lpstack: walk every task's livepatch stack
    """
    from .audit import audit as _audit

    return _settled(
        _audit(target, list(modules) if modules else None, callsites=callsites, tasks=lpstack)
    )


def ftrace(target: Target, modules: Sequence[str] | None = None) -> Report:
    """Every function ftrace currently redirects, by which ``struct ftrace_ops``,
    and the ``struct klp_func`` behind each livepatch redirect (``klp-ftrace``).

    :param modules: limit the redirects to functions of these modules
        (``vmlinux`` for the kernel's own); ``None``: all
    :raises KlpError: the back end or the kernel cannot give the ftrace records
    """
    from .ftrace_view import ftrace_report

    report = ftrace_report(target, list(modules) if modules else None)
    if getattr(target, "debuginfo", None) == "btf+kallsyms":
        from .commands import BTF_SYMBOL_SIZE_NOTE

        report.notes.append(BTF_SYMBOL_SIZE_NOTE)
    return _settled(report)


def livepatch_stacks(target: Target, pids: Sequence[int] | None = None) -> Report:
    """The per-task livepatch stacks (``thread_info.livepatch_sp``), checked.

    Tasks with an empty, healthy livepatch stack are left out unless named.

    :param pids: only these tasks; ``None``: all
    :raises KlpError: if a pid names no task
    """
    from .audit import tocs_for
    from .livepatch import audit_livepatch_stacks
    from .report import damage_findings, new_report

    report = new_report(target, target.kernel(), ("tasks", "findings"))
    records, findings = audit_livepatch_stacks(
        target, tocs_for(target), pids=list(pids) if pids else None
    )
    report.tasks = records
    report.extend(findings)
    report.extend(damage_findings(target))  # a task list that loops, ...
    return _settled(report)


def crashed_task(target: Target) -> int:
    """The address of the ``struct task_struct`` that crashed (drgn's ``panic_task()``:
    the task running on ``panic_cpu``; often a CPU's idle task, pid 0).

    :raises KlpError: if the dump records no crash, or the back end cannot tell
    """
    prog = getattr(target, "prog", None)
    if prog is None:
        raise KlpError("this back end cannot find the crashed task: give a PID or task address")
    from drgn.helpers.linux.panic import panic_task

    try:
        task = panic_task(prog)
    except (LookupError, ValueError) as e:
        raise KlpError(
            f"no crashed task in this target ({e}): give a PID or task address"
        ) from None
    if not task:
        raise KlpError("no crashed task in this target: give a PID or task address")
    return int(task.value_())


def _task_ref(task: int | TaskRef | Any) -> TaskRef:
    if isinstance(task, TaskRef):
        return task
    if hasattr(task, "value_"):  # a drgn.Object: struct task_struct *
        return TaskRef("task", int(task.value_()))
    value = int(task)
    return TaskRef("pid" if value <= PID_MAX_LIMIT else "task", value)


def resolve_task(target: Target, task: int | TaskRef | Any) -> int:
    """The pid of ``task``: a pid, a ``struct task_struct`` address, a
    :class:`TaskRef`, or a drgn ``struct task_struct *`` object.

    :raises KlpError: if no task has that address
    """
    return _backtrace_target(target, _task_ref(task))[1]


class _IdleTask:
    """``target`` narrowed to one task missing from the task list (a CPU's idle
    task, which ``for_each_task()`` does not visit), unwound by address: what
    :func:`~klpinspect.livepatch.klp_backtrace` needs, everything else delegated."""

    def __init__(self, target: Any, info: Any, task: Any) -> None:
        self._target, self._info, self._task = target, info, task
        self.kind: str = target.kind
        self.debuginfo: str | None = getattr(target, "debuginfo", None)

    @property
    def damage(self) -> Sequence[tuple[int | None, str]]:
        damage: Sequence[tuple[int | None, str]] = self._target.damage
        return damage

    def kernel(self) -> Any:
        return self._target.kernel()

    def read(self, address: int, size: int) -> bytes:
        data: bytes = self._target.read(address, size)
        return data

    def symbolize(self, address: int) -> Any:
        return self._target.symbolize(address)

    def modules(self) -> Any:
        return self._target.modules()

    def tasks(self) -> Any:
        return [self._info]

    def stack_trace(self, pid: int) -> Any:
        return self._target.task_stack_trace(
            self._task, f"the idle task at {int(self._task.value_()):#x}"
        )


def _backtrace_target(target: Target, ref: TaskRef) -> tuple[Target, int]:
    """The target to unwind ``ref`` on and its pid."""
    if ref.kind == "pid":
        return target, ref.value
    prog = getattr(target, "prog", None)
    for info in target.tasks():
        if info.address == ref.value:
            # pid 0 names every CPU's idle task: unwind those by address below
            if info.pid != 0 or prog is None:
                return target, info.pid
            break
    if prog is not None and hasattr(target, "task_info"):
        # Idle tasks are not on the task list; the crashed task often is one.
        import drgn
        from drgn.helpers.linux.cpumask import for_each_online_cpu
        from drgn.helpers.linux.sched import idle_task

        try:
            for cpu in for_each_online_cpu(prog):
                task = idle_task(prog, cpu)
                if int(task.value_()) == ref.value:
                    info = target.task_info(task)
                    return _IdleTask(target, info, task), info.pid
        except (LookupError, drgn.FaultError):
            pass
    raise KlpError(f"no task at address {ref.value:#x}")


def backtrace(target: Target, task: int | TaskRef | Any | None = None) -> Report:
    """The backtrace of one task with ``livepatch_handler`` returns corrected (``klp-bt``).

    :param task: a pid, a ``struct task_struct`` address (any number above
        ``PID_MAX_LIMIT``), a :class:`TaskRef` or a drgn task object;
        ``None``: the task that crashed (:func:`crashed_task`)
    :returns: a report whose single task record holds ``frames`` and ``backtrace``
    :raises KlpError: if there is no such task
    """
    from .audit import tocs_for
    from .livepatch import klp_backtrace

    ref = TaskRef("task", crashed_task(target)) if task is None else _task_ref(task)
    unwind_on, pid = _backtrace_target(target, ref)
    report = klp_backtrace(unwind_on, pid, tocs_for(target))
    from .report import damage_findings

    # In address order: which walk (the task's, the modules' for the TOC map)
    # found it first depends on what ran before on a reused target.
    damage = sorted(
        damage_findings(target), key=lambda f: (f.address is not None, f.address or 0, f.message)
    )
    if damage:  # the walk that found the task stopped at a loop, ...
        report.extend(damage)
        if "findings" not in report.sections:
            report.sections = (*report.sections, "findings")
    debuginfo = getattr(target, "debuginfo", None)
    if debuginfo == "btf+kallsyms":
        from .commands import BTF_BACKTRACE_NOTE

        report.notes.append(BTF_BACKTRACE_NOTE)
    elif debuginfo == "btf+symtab":
        from .commands import BTF_SYMTAB_BACKTRACE_NOTE

        report.notes.append(BTF_SYMTAB_BACKTRACE_NOTE)
    return _settled(report)


def lint_ko(paths: Sequence[PathLike]) -> Report:
    """Lint livepatch/module ``.ko`` files before loading them (no kernel needed).

    A file that cannot be read is a ``KO_UNREADABLE`` finding; the others go on.
    """
    from .ko import lint_files

    report, _status = lint_files([os.fspath(p) for p in paths])
    return _settled(report)
