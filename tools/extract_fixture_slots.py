#!/usr/bin/env python3
"""Extract a small set of real stub slots from the ppc64le 6.1 fixture into tests/data.

Source: ``checks/drgn-inspect.json`` of ``../shared/fixtures/ppc64le-6.1-lp``, which
drgn 0.3.0 wrote from ``vmcore.elf`` (lab recipe ``drgn_inspect.py``): per module
every used ``struct ppc64_stub_entry`` as eight u32 words (read little-endian)
plus ``funcdata`` (u64).  The 40 slot bytes are rebuilt from exactly those
values.  Module TOCs and section addresses come from the same JSON (which the
fixture README says equal the guest's sysfs values); the kallsyms addresses of
``_mcount``, ``ftrace_caller`` and ``ftrace_regs_caller`` from ``facts.txt``.

Usage: tools/extract_fixture_slots.py [FIXTURE_DIR] [OUT_JSON]
"""

from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_FIXTURE = REPO.parent / "shared" / "fixtures" / "ppc64le-6.1-lp"
DEFAULT_OUT = REPO / "tests" / "data" / "fixture_slots.json"

# Every used slot of these modules; the livepatch trio, the shadow-variable
# livepatch, a module without normal stubs (crc_itu_t), one with no _mcount stub.
FULL_MODULES = ("rk_lp", "rk_target", "rk_lib", "livepatch_shadow_fix1", "crc_itu_t", "libcrc32c")
# Only the first normal stubs and the ftrace stubs of these big modules.
PARTIAL_MODULES = {"fuse": 12, "bridge": 12}
KALLSYMS = ("_mcount", "ftrace_caller", "ftrace_regs_caller")


def _slot_hex(entry: dict[str, Any]) -> str:
    words = [int(w, 16) for w in entry["words"]]
    return (struct.pack("<8I", *words) + struct.pack("<Q", entry["funcdata"])).hex()


def _kallsyms(facts: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in facts.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[:2] == ["RK-FACT", "kallsyms"] and parts[2] in KALLSYMS:
            out[parts[2]] = int(parts[3], 16)
    return out


def extract(fixture: Path) -> dict[str, Any]:
    src = fixture / "checks" / "drgn-inspect.json"
    raw = src.read_bytes()
    inspect = json.loads(raw)
    modules = []
    for mod in inspect["modules"]:
        name = mod["name"]
        if name not in FULL_MODULES and name not in PARTIAL_MODULES:
            continue
        normal = sorted(mod["first_normal_stubs"], key=lambda e: e["addr"])
        ftrace = sorted(mod["ftrace_stub_list"], key=lambda e: e["addr"])
        complete = name in FULL_MODULES
        if not complete:
            normal = normal[: PARTIAL_MODULES[name]]
        slots = sorted(normal + ftrace, key=lambda e: e["addr"])
        modules.append(
            {
                "name": name,
                "complete": complete,
                "stubs_used": mod["stubs_used"],
                "sections": {k: hex(v) for k, v in mod["sections"].items()},
                "toc": hex(mod["toc_from_sections"]),
                "tramp": hex(mod["tramp"]),
                "tramp_regs": hex(mod["tramp_regs"]),
                "slots": [
                    {
                        "address": hex(e["addr"]),
                        "bytes": _slot_hex(e),
                        "drgn_kind": "normal" if e in normal else "ftrace",
                        "funcdata_sym": e.get("funcdata_sym"),
                    }
                    for e in slots
                ],
            }
        )
    return {
        "provenance": {
            "file": "shared/fixtures/ppc64le-6.1-lp/checks/drgn-inspect.json",
            "sha256": hashlib.sha256(raw).hexdigest(),
            "facts": "shared/fixtures/ppc64le-6.1-lp/facts.txt",
            "how": "drgn 0.3.0 read vmcore.elf (lab-recipes/drgn_inspect.py): u32 words "
            "(little-endian) + u64 funcdata per slot; bytes rebuilt from those values "
            "by tools/extract_fixture_slots.py",
            "kernel": inspect["release"] + " ppc64le (ELFv2, PSERIES, -mprofile-kernel)",
        },
        "kernel_toc": hex(inspect["kernel_toc"]),
        "kallsyms": {k: hex(v) for k, v in _kallsyms(fixture / "facts.txt").items()},
        "modules": modules,
    }


def main(argv: list[str]) -> int:
    fixture = Path(argv[1]) if len(argv) > 1 else DEFAULT_FIXTURE
    out = Path(argv[2]) if len(argv) > 2 else DEFAULT_OUT
    data = extract(fixture)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=1) + "\n")
    n = sum(len(m["slots"]) for m in data["modules"])
    print(f"{out}: {n} slots of {len(data['modules'])} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
