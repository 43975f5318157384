"""``klpinspect prologue`` on real ARM modules from Debian's armhf kernel package.

tests/arm32/fetch.sh downloads linux-image-<abi>-armmp:armhf (the image package,
not the -dbg one) into the cache once; a failed download fails the test.  The
expectations follow from the package's own config and relocations, read here
independently: Debian builds armmp with CONFIG_UNWINDER_ARM (no APCS frames,
ARM mode), so every traced function must be ``unwind-tables``, and a module's
traced functions are those with an R_ARM_CALL/R_ARM_JUMP24 against
``__gnu_mcount_nc``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from arm32util import tool

from klpinspect.arm32 import PrologueClass, lint_prologues
from klpinspect.cli import main

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KLPINSPECT_CACHE", REPO / ".cache")).resolve()


@pytest.fixture(scope="module")
def moddir() -> Path:
    proc = subprocess.run(["bash", str(REPO / "tests/arm32/fetch.sh"), str(CACHE / "arm32")],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.fail(f"tests/arm32/fetch.sh failed:\n{proc.stderr}", pytrace=False)
    return Path(proc.stdout.strip().splitlines()[-1])


def _config(moddir: Path) -> dict[str, str]:
    boot = moddir.parent.parent.parent / "boot"
    (cfg,) = boot.glob("config-*")
    out = {}
    for line in cfg.read_text().splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, _, v = line.partition("=")
            out[k] = v
    return out


def _mcount_call_sites(ko: Path) -> set[tuple[str, int]]:
    """(relocated section, offset) of every call relocation against __gnu_mcount_nc."""
    proc = subprocess.run([tool("readelf"), "-rW", str(ko)], capture_output=True, text=True,
                          check=True)
    sites = set()
    section = ""
    for line in proc.stdout.splitlines():
        if line.startswith("Relocation section '.rel"):
            section = line.split("'")[1].removeprefix(".rel")
        parts = line.split()
        if len(parts) >= 5 and parts[2] in ("R_ARM_CALL", "R_ARM_JUMP24") \
                and parts[4] == "__gnu_mcount_nc":
            sites.add((section, int(parts[0], 16)))
    return sites


def test_debian_modules_match_config_and_relocations(moddir: Path) -> None:
    cfg = _config(moddir)
    assert cfg.get("CONFIG_FUNCTION_TRACER") == "y"
    expect_frames = cfg.get("CONFIG_FRAME_POINTER") == "y"
    thumb = cfg.get("CONFIG_THUMB2_KERNEL") == "y"
    for rel in ("kernel/fs/ext4/ext4.ko", "kernel/fs/fat/fat.ko", "kernel/fs/fat/vfat.ko"):
        ko = moddir / rel
        result = lint_prologues(str(ko))
        counts = result.counts
        assert sum(counts.values()) == len(result.functions) > 0
        calls = {(f.section, f.mcount_call) for f in result.functions
                 if f.mcount_call is not None}
        assert calls == _mcount_call_sites(ko), rel
        if not expect_frames and not thumb:
            assert counts[PrologueClass.UNWIND_TABLES] == result.traced > 0, rel
            assert counts[PrologueClass.APCS_FRAME] == counts[PrologueClass.APCS_FRAME_EXTRA] == 0
        assert counts[PrologueClass.THUMB2] == (result.traced if thumb else 0)


def test_debian_fs_modules_cli(moddir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kos = sorted(str(p) for p in (moddir / "kernel/fs").rglob("*.ko"))
    assert len(kos) > 50
    status = main(["prologue", "--format", "json", *kos])
    out, err = capsys.readouterr()
    assert status == 0 and err == ""
    doc = json.loads(out)["prologues"]
    assert doc["errors"] == [] and len(doc["files"]) == len(kos)
    total = doc["total"]
    assert sum(total["counts"].values()) == total["functions"]
    assert total["traced"] > 1000
    assert total["traced"] == total["functions"] - total["counts"]["no-mcount"]
    # the table form of the same files
    status = main(["prologue", *kos[:3]])
    out, _err = capsys.readouterr()
    assert status == 0 and "unwind-tables" in out.splitlines()[0]
