"""The package as users install it.

* the built wheel, pip-installed into a fresh venv: console script
  (``--version``, ``--gdb-script``), man page, drgn plugin entry point (a real
  drgn session on the fixture finds ``%klp-stubs``) and the gdb script (a
  real gdb session sources the line ``--gdb-script`` prints);
* the lowest versions ``setup.cfg`` allows (drgn, capstone, tabulate,
  pyelftools), installed exactly in a venv: the CLI and the drgn plugin work
  on the fixture dump;
* the man page in ``man/`` is the one generated from the parser.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.dump

REPO = Path(__file__).resolve().parent.parent
PLUGIN = "klpinspect=klpinspect.backends.drgn.commands"  # this checkout's plugin module
PIP = ["-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-input"]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "DRGN_PLUGINS", "DRGN_DISABLE_PLUGINS")}
    env.update(extra)
    return env


def _run(*args: str | Path, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], capture_output=True, text=True,
                          timeout=900, check=False, **kw)  # type: ignore[call-overload]
    assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc  # type: ignore[no-any-return]


def lower_bounds() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    out = {}
    for line in cfg["options"]["install_requires"].split("\n"):
        m = re.fullmatch(r"\s*([A-Za-z0-9_-]+)>=([0-9][0-9a-z.]*)\s*", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def test_man_page_is_generated_from_the_parser() -> None:
    from klpinspect.cli import make_parser
    from klpinspect.manpage import manpage

    page = (REPO / "man" / "klpinspect.1").read_text()
    assert page == manpage(), "regenerate: python3 -m klpinspect.manpage > man/klpinspect.1"
    for action in make_parser()._actions:
        for opt in action.option_strings:
            assert opt.replace("-", "\\-") in page, opt


def test_version() -> None:
    import klpinspect

    proc = _run(sys.executable, "-m", "klpinspect", "--version",
                env=_clean_env(PYTHONPATH=str(REPO)))
    assert proc.stdout == f"klpinspect {klpinspect.__version__}\n"


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the checkout, installed in a fresh venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".cache", "build", "dist", "*.egg-info", "__pycache__", ".mypy_cache",
        ".ruff_cache", ".pytest_cache"))
    _run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", tmp / "dist", src, env=_clean_env())
    (wheel,) = (tmp / "dist").glob("klpinspect-*.whl")
    venv = tmp / "venv"
    # the system's drgn, capstone, tabulate and pyelftools satisfy the requirements
    _run(sys.executable, "-m", "venv", "--system-site-packages", venv)
    _run(venv / "bin" / "python", *PIP, wheel, env=_clean_env())
    return venv


def test_wheel_console_script_and_man_page(wheel_venv: Path) -> None:
    import klpinspect

    env = _clean_env()
    proc = _run(wheel_venv / "bin" / "klpinspect", "--version", cwd="/", env=env)
    assert proc.stdout.strip() == f"klpinspect {klpinspect.__version__}"
    page = wheel_venv / "share" / "man" / "man1" / "klpinspect.1"
    assert page.read_text() == (REPO / "man" / "klpinspect.1").read_text()
    assert page.read_text().startswith(".TH KLPINSPECT 1 ")


def test_wheel_drgn_plugin(wheel_venv: Path, vmcore_elf: Path, vmlinux_debug: Path) -> None:
    py = wheel_venv / "bin" / "python"
    code = ("import importlib.metadata as m, json, klpinspect;"
            "print(json.dumps([klpinspect.__file__, [e.value for e in "
            "m.distribution('klpinspect').entry_points if e.group == 'drgn.plugins']]))")
    where, plugins = json.loads(_run(py, "-c", code, cwd="/", env=_clean_env()).stdout)
    assert where.startswith(str(wheel_venv)) and plugins == ["klpinspect.backends.drgn.commands"]
    proc = _run(py, "-m", "drgn", "-q", "-c", vmcore_elf, "-s", vmlinux_debug, "-e",
                "from drgn.commands import run_command\n"
                "r = run_command(prog, 'klp-stubs rk_lib')\n"
                "import klpinspect; print('@@', klpinspect.__file__, r.exit_status)",
                cwd="/", env=_clean_env())  # fmt: skip
    assert "msleep" in proc.stdout
    assert f"@@ {where} 0" in proc.stdout


def test_wheel_gdb_script(wheel_venv: Path, vmcore_elf: Path, vmlinux_debug: Path) -> None:
    line = _run(wheel_venv / "bin" / "klpinspect", "--gdb-script", cwd="/",
                env=_clean_env()).stdout.strip()
    assert line.startswith(f"source {wheel_venv}/")
    assert line.endswith("/klpinspect/backends/gdb/load.py")
    gdb = shutil.which("gdb-multiarch")
    assert gdb, "gdb-multiarch is not installed"
    proc = _run(gdb, "-batch", "-nx", "-ex", "set architecture powerpc:common64",
                "-ex", f"file {vmlinux_debug}", "-ex", f"core-file {vmcore_elf}", "-ex", line,
                "-ex", "klp stubs rk_lib", "-ex",
                "python import klpinspect; print('@@', klpinspect.__file__)",
                cwd="/", env=_clean_env())  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "0xc008000000ef0068  normal  0xc0000000001931c0  msleep" in proc.stdout, proc.stderr
    package_init = line.removeprefix("source ").replace("backends/gdb/load.py", "__init__.py")
    assert f"@@ {package_init}" in proc.stdout


def test_lowest_allowed_versions(tmp_path: Path, vmcore_kdump: Path,
                                 vmlinux_debug: Path) -> None:
    """The lower bounds of setup.cfg, installed exactly, run the CLI and the plugin."""
    bounds = lower_bounds()
    assert set(bounds) == {"drgn", "capstone", "tabulate", "pyelftools"}
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    _run(py, *PIP, *(f"{name}=={version}" for name, version in bounds.items()),
         env=_clean_env())
    code = "import drgn, capstone, tabulate, elftools; print(drgn.__version__, " \
           "capstone.__version__, tabulate.__version__, elftools.__version__)"
    got = _run(py, "-c", code, env=_clean_env()).stdout.split()
    assert [v.removesuffix(".post1") for v in got] == [
        bounds["drgn"], bounds["capstone"], bounds["tabulate"], bounds["pyelftools"]]
    env = _clean_env(PYTHONPATH=str(REPO))
    proc = _run(py, "-m", "klpinspect", "-c", vmcore_kdump, "-s", vmlinux_debug,
                "--format", "json", "audit", env=env)
    audit = json.loads(proc.stdout)
    assert len(audit["modules"]) == 40 and [t["pid"] for t in audit["tasks"]] == [130]
    proc = _run(py, "-m", "klpinspect", "-c", vmcore_kdump, "-s", vmlinux_debug, "bt", "130",
                env=env)
    assert "livepatch_rk_target_work+0x30/0x58 [rk_lp]" in proc.stdout
    proc = _run(py, "-m", "drgn", "-q", "-c", vmcore_kdump, "-s", vmlinux_debug, "-e",
                "from drgn.commands import run_command\n"
                "r = run_command(prog, 'crash klp-lpstack')\n"
                "print('@@', [t.pid for t in r.tasks])",
                env=dict(env, DRGN_PLUGINS=PLUGIN))  # fmt: skip
    assert "@@ [130]" in proc.stdout, proc.stderr
