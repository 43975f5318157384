"""``-s DIR``: module debug files as distributions lay them out.

A ``/usr/lib/debug`` tree: vmlinux by build ID (``.build-id/xx/yyyy.debug``)
and a module's split debug file (``lib/modules/RELEASE/extra/NAME.ko.debug``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import drgn
import pytest

import klpinspect
from klpinspect.backends.drgn.debuginfo import expand_debug_paths, read_build_id

pytestmark = pytest.mark.dump

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture()
def debug_tree(tmp_path: Path, vmlinux_debug: Path, modules_dir: Path) -> Path:
    root = tmp_path / "usr" / "lib" / "debug"
    build_id = read_build_id(vmlinux_debug)
    assert build_id
    by_id = root / ".build-id" / build_id[:2]
    by_id.mkdir(parents=True)
    (by_id / f"{build_id[2:]}.debug").symlink_to(vmlinux_debug)
    extra = root / "lib" / "modules" / "6.1.192" / "extra"
    extra.mkdir(parents=True)
    (extra / "rk_lp.ko.debug").write_bytes((modules_dir / "rk_lp.ko").read_bytes())
    (extra / "rk_lib.ko").write_bytes((modules_dir / "rk_lib.ko").read_bytes())
    return root


def test_expand_finds_ko_and_ko_debug(debug_tree: Path) -> None:
    names = [p.name for p in expand_debug_paths([debug_tree])]
    assert names == ["rk_lib.ko", "rk_lp.ko.debug"]  # not the .build-id files


def test_debug_tree_loads_kernel_and_modules(debug_tree: Path, vmcore_elf: Path) -> None:
    target = klpinspect.open_target(vmcore_elf, symbols=[debug_tree])
    prog = target.prog  # type: ignore[attr-defined]
    assert prog.main_module().debug_file_status == drgn.ModuleFileStatus.HAVE
    status = {m.name: m.debug_file_status for m in prog.modules()
              if m.name in ("rk_lp", "rk_lib", "rk_target")}
    assert status == {"rk_lp": drgn.ModuleFileStatus.HAVE, "rk_lib": drgn.ModuleFileStatus.HAVE,
                      "rk_target": drgn.ModuleFileStatus.WANT}
    # DWARF of the .ko.debug module: a static function of rk_lp
    assert int(prog.function("livepatch_rk_target_inner").address_) == 0xC008000000F90008


def test_cli_debug_directory(debug_tree: Path, vmcore_elf: Path) -> None:
    """drgn's own --debug-directory: vmlinux found by build ID with no -s at all."""
    proc = subprocess.run(
        [sys.executable, "-m", "klpinspect", "-c", str(vmcore_elf), "--debug-directory",
         str(debug_tree), "toc", "rk_lp"],
        capture_output=True, text=True, timeout=600, check=False,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "0xc008000000fb8000" in proc.stdout
