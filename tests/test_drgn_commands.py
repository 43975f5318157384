"""The drgn plugin in a real drgn session (``python3 -m drgn -c … -s … SCRIPT``).

The session loads this checkout's plugin (``DRGN_PLUGINS``) and not any
installed copy, runs a script that uses ``run_command`` the way a user or a
drgn script would, and prints what it sees as JSON lines for the asserts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import drgn
import pytest
from drgn.commands import DEFAULT_COMMAND_NAMESPACE, CommandNotFoundError

from klpinspect.commands import COMMANDS

pytestmark = pytest.mark.dump

REPO = Path(__file__).resolve().parent.parent

SESSION = r'''
import json, sys
from drgn.commands import CommandError, run_command
from drgn.helpers.linux.module import for_each_module
from drgn.helpers.linux.pid import find_task

def out(**kw):
    print("@@" + json.dumps(kw), flush=True)

# the plugin is loaded, the checks are not (imported on first use)
out(lazy=[m for m in ("klpinspect.api", "klpinspect.report", "klpinspect.audit", "tabulate")
          if m in sys.modules])
# drgn's own helper on the user's own program reads module memory, and drgn
# itself found the loaded modules when it loaded debug info
import drgn
out(drgn_modules=sum(isinstance(m, drgn.RelocatableModule) for m in prog.modules()))
out(modules=sorted(m.name.string_().decode() for m in for_each_module(prog)))
report = run_command(prog, "klp-stubs rk_lib")
out(type=type(report).__name__, status=report.exit_status,
    names=[m.name for m in report.modules], kind=report.target["kind"])
run_command(prog, "klp-audit --help")
for cmd in ("klp-toc xfz", "klp-bt", "klp-bt nonsense", "klp-audit --format xml"):
    try:
        run_command(prog, cmd)
        out(cmd=cmd, raised=None)
    except CommandError as e:
        out(cmd=cmd, raised=type(e).__name__, message=str(e))
task = find_task(prog, 130)
bt = run_command(prog, f"klp-bt {task.value_():x}")
out(bt=[t.pid for t in bt.tasks], frames=len(bt.tasks[0].frames))
run_command(prog, "crash help klp-bt")  # crash's help lists and explains them
crash = run_command(prog, "crash klp-lpstack --format json")
out(crash=[t.pid for t in crash.tasks])
# a report with an error finding: printed, then drgn's exit-status error carrying it
import klpinspect.commands
from klpinspect.report import Finding, FindingCode, Report
bad = Report(sections=("findings",), findings=[Finding(FindingCode.STUB_TOC_MISMATCH, "made up")])
klpinspect.commands.run_report = lambda target, name, args: bad
errors = []
run_command(prog, "klp-audit", onerror=errors.append)
e = errors[0]
out(onerror=type(e).__name__, mro=[c.__name__ for c in type(e).__mro__],
    exit_status=e.exit_status, same=e.report is bad, message=str(e))
# The dump records no panic; make it say CPU 1 panicked (a 4-byte overlay on
# panic_cpu, whose task is that CPU's idle task, off the task list): klp-bt
# with no argument unwinds it.
import importlib, struct
importlib.reload(klpinspect.commands)
panic_cpu = prog["panic_cpu"].address_
prog.add_memory_segment(panic_cpu, 4, lambda a, c, o, p: struct.pack("<i", 1)[o:o + c], False)
crashed = run_command(prog, "klp-bt")
t = crashed.tasks[0]
out(crashed=[t.pid, t.comm, t.backtrace[-1].symbol])
'''


def drgn_session(core: Path, vmlinux_debug: Path, tmp_path: Path) -> tuple[list[dict[str, Any]],
                                                                           str, str]:
    script = tmp_path / "session.py"
    script.write_text(SESSION)
    env = dict(
        os.environ,
        PYTHONPATH=str(REPO),
        DRGN_DISABLE_PLUGINS="klpinspect",  # an installed copy
        DRGN_PLUGINS="klpinspect=klpinspect.backends.drgn.commands",  # this checkout's
    )
    proc = subprocess.run(
        [sys.executable, "-m", "drgn", "-q", "-c", str(core), "-s", str(vmlinux_debug),
         str(script)],
        capture_output=True, text=True, timeout=600, check=False, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [json.loads(ln[2:]) for ln in proc.stdout.splitlines() if ln.startswith("@@")]
    return lines, proc.stdout, proc.stderr


@pytest.mark.parametrize("core_name", ["vmcore_elf", "vmcore_kdump"])
def test_drgn_session(
    core_name: str, request: pytest.FixtureRequest, vmlinux_debug: Path, tmp_path: Path
) -> None:
    core: Path = request.getfixturevalue(core_name)
    lines, stdout, _stderr = drgn_session(core, vmlinux_debug, tmp_path)
    got = {k: v for line in lines for k, v in line.items() if k != "cmd"}
    assert got["lazy"] == []
    assert got["drgn_modules"] == 40
    mods = got["modules"]
    assert len(mods) == 40 and "rk_lib" in mods and "rk_lp" in mods
    assert (got["type"], got["status"], got["names"]) == ("Report", 0, ["rk_lib"])
    # --help: drgn-style help from the argument specs
    assert "usage: klp-audit [-h] [--format {table,json}] [--no-callsites] [--no-tasks]" in stdout
    assert "--no-callsites" in stdout and "skip the call-site scan" in stdout
    errors = {line["cmd"]: (line["raised"], line.get("message")) for line in lines if "cmd" in line}
    assert errors["klp-toc xfz"] == ("CommandError", "klp-toc: no module named 'xfz'")
    # this dump records no panic: klp-bt without an argument says so
    raised, message = errors["klp-bt"]
    assert raised == "CommandError" and "no crashed task" in message
    assert errors["klp-bt nonsense"][0] == "CommandArgumentError"
    assert "not a pid or task address: 'nonsense'" in errors["klp-bt nonsense"][1]
    assert errors["klp-audit --format xml"][0] == "CommandArgumentError"
    assert (got["bt"], got["frames"]) == ([130], 2)  # klp-bt TASK_ADDRESS (hex)
    assert got["crash"] == [130]  # the %crash namespace has the commands too
    assert "klp-bt - backtrace of a task corrected through livepatch_handler frames" in stdout
    assert "klp-bt [-h] [--format {table,json}] [PID|TASK]" in stdout
    assert got["onerror"] == "KlpFindingsError"
    assert "CommandExitStatusError" in got["mro"] and got["exit_status"] == 1 and got["same"]
    assert got["message"] == "klp-audit: 1 error finding(s) (exit status 1)"
    assert got["crashed"] == [0, "swapper/1", "start_secondary_prolog+0x10/0x14"]


def _custom_program(arch: drgn.Architecture, lp61: Path) -> drgn.Program:
    prog = drgn.Program(drgn.Platform(arch, drgn.PlatformFlags.IS_64_BIT
                                      | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    prog.set_linux_kernel_custom((lp61 / "vmcoreinfo.txt").read_bytes(), False)
    return prog


def test_commands_only_on_ppc64_kernels(lp61: Path) -> None:
    import klpinspect.backends.drgn.commands  # noqa: F401  (registers the commands)
    from klpinspect.api import target_from_drgn
    from klpinspect.errors import TargetError

    x86 = _custom_program(drgn.Architecture.X86_64, lp61)
    ppc = _custom_program(drgn.Architecture.PPC64, lp61)
    for sub in COMMANDS:
        with pytest.raises(CommandNotFoundError):
            DEFAULT_COMMAND_NAMESPACE.lookup(x86, f"klp-{sub}")
        DEFAULT_COMMAND_NAMESPACE.lookup(ppc, f"klp-{sub}")
    assert not any(name.startswith("klp-") for name, _ in DEFAULT_COMMAND_NAMESPACE.enabled(x86))
    with pytest.raises(TargetError, match="not a ppc64 kernel: the program's architecture is "
                       "x86_64"):
        target_from_drgn(x86)


def test_help_from_the_same_specs() -> None:
    """drgn's help text and the CLI's subcommand help list the same options."""
    import klpinspect.backends.drgn.commands  # noqa: F401
    from klpinspect.cli import make_parser

    cli = make_parser()
    subparsers = next(a for a in cli._actions if a.dest == "command").choices  # type: ignore
    for sub in COMMANDS:
        theirs = DEFAULT_COMMAND_NAMESPACE._commands[f"klp-{sub}"].format_help()
        ours = subparsers[sub].format_help()
        for action in subparsers[sub]._actions:
            for opt in action.option_strings:
                assert opt in theirs and opt in ours, (sub, opt)
            if action.help and action.help != "==SUPPRESS==":
                assert action.help.split("(")[0].strip() in theirs, (sub, action.help)


def test_interactive_session(vmcore_elf: Path, vmlinux_debug: Path) -> None:
    """What a user types at drgn's prompt (a pseudo-terminal): ``%klp-…``, ``--help``,
    one-line errors, and the report left in ``_``."""
    import pty
    import select

    lines = ["%klp-toc --help", "%klp-toc rk_lp", "%klp-toc xfz", "%klp-bt",
             "print('@@', type(_).__name__, [m.name for m in _.modules])", "exit()"]
    env = dict(os.environ, PYTHONPATH=str(REPO), TERM="dumb", DRGN_DISABLE_PLUGINS="klpinspect",
               DRGN_PLUGINS="klpinspect=klpinspect.backends.drgn.commands")
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "drgn", "-q", "-c", str(vmcore_elf), "-s", str(vmlinux_debug)],
        stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    out = b""
    try:
        for line in lines:
            os.write(master, line.encode() + b"\n")
        while True:
            ready, _, _ = select.select([master], [], [], 120)
            if not ready:
                break
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    finally:
        proc.wait(timeout=120)
        os.close(master)
    text = out.decode(errors="replace").replace("\r", "")
    assert "usage: klp-toc [-h] [--format {table,json}] [--callsites] [MODULE ...]" in text
    assert "rk_lp     0xc008000000fb8000  .toc" in text
    assert "drgn: error: klp-toc: no module named 'xfz'\n" in text
    assert ("drgn: error: klp-bt: no crashed task in this target (panic_cpu is not set): "
            "give a PID or task address\n") in text
    assert "@@ Report ['rk_lp']" in text
    assert "Traceback" not in text
