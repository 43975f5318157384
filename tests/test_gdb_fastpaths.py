"""The gdb back end's fast paths give its plain paths' answers.

Types from the kernel's BTF (klpinspect/backends/btflayout.py): on a core
file the layout layer's type questions are answered from the BTF in the
dump's memory, not by gdb (whose look-ups expand DWARF units): every command
must print what it printed with gdb's own types, and every question asked
must get gdb's answer.  A module's addresses named together
(``GdbTarget.symbolize_many``) as one by one.  Run in a real
``gdb-multiarch`` on the fixture dumps (6.1, 7.2; QEMU's own
physical-address dump of 6.1 too).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import LpFixture, lp_fixture
from test_gdb import SCRIPT, assert_clean, run_gdb, vmcore_args

pytestmark = pytest.mark.dump

# Runs inside gdb after the loader: each command with BTF types, then with gdb's
# (the BTF loader taken away), recording the questions the first run asked; then
# each question answered both ways.
_CHECK = r"""
import gdb, json
from klpinspect.backends.gdb.commands import _STATE, _target
from klpinspect.backends.btflayout import KNOWN_GLOBALS
from klpinspect.errors import TargetError

CMDS = %(cmds)r
asked = {"offsetof": set(), "type_size": set(), "constant": set(), "object": set(),
         "variable": set()}


def record(k, name):
    method = getattr(k, name)
    def wrapper(*args):
        asked[name].add(args[:2] if name == "offsetof" else args[:1])
        return method(*args)
    setattr(k, name, wrapper)


out = {}
for mode in ("btf", "gdb"):
    _STATE["target"] = None
    t = _target()
    k = t._k
    if mode == "gdb":
        k._load_btf = None
    else:
        for name in asked:
            record(k, name)
    out[mode] = [gdb.execute(c, to_string=True) for c in CMDS]
    out[mode + "_used"] = k.btf is not None

t = _target()  # gdb's types
btf = t._kernel_btf()
answers, mismatches = 0, []
for ty, member in sorted(asked["offsetof"]):
    try:
        want = t.types.offsetof(ty, member)
    except TargetError:
        want = None
    try:
        got = btf.offsetof(ty, member)
    except KeyError:
        continue
    answers += 1
    if got != want:
        mismatches.append(["offsetof", ty, member, got, want])
for (ty,) in sorted(asked["type_size"] | asked["object"]):
    info = btf.info(ty)
    if info is None:
        continue
    answers += 1
    want = t._k.type_size(ty)
    if (info.size or None) != want:
        mismatches.append(["sizeof", ty, info.size, want])
for (name,) in sorted(asked["constant"]):
    got = btf.constant(name)
    if got is None:
        continue
    answers += 1
    want = t._k.constant(name)
    if got != want:
        mismatches.append(["constant", name, got, want])
for (name,) in sorted(asked["variable"]):
    if name not in KNOWN_GLOBALS:
        continue
    info = btf.declared(KNOWN_GLOBALS[name])
    sym = gdb.lookup_global_symbol(name) or gdb.lookup_static_symbol(name)
    if info is None or sym is None:
        continue
    answers += 1
    want = sym.type.strip_typedefs()
    # the array's length may be left out: compare its element
    same = (info.pointer == (want.code == gdb.TYPE_CODE_PTR)
            and (info.size == want.sizeof or want.code == gdb.TYPE_CODE_ARRAY
                 and info.target().size == want.target().sizeof))
    if not same:
        mismatches.append(["variable", name, info.size, want.sizeof])
with open(%(result)r, "w") as f:
    json.dump({"same": out["btf"] == out["gdb"], "btf_used": out["btf_used"],
               "gdb_used": out["gdb_used"], "answers": answers, "mismatches": mismatches,
               "asked": {key: len(v) for key, v in asked.items()},
               "lengths": [len(x) for x in out["btf"]]}, f)
"""

CMDS = ["klp-audit --format json", "klp-stubs --format json", "klp-toc --callsites",
        "klp-lpstack --format json", "klp-ftrace --format json", "klp-audit"]


def _check(core: Path, symbols: Path, tmp_path: Path) -> dict[str, object]:
    script, result = tmp_path / "check.py", tmp_path / "result.json"
    script.write_text(_CHECK % {"cmds": CMDS, "result": str(result)})
    proc = run_gdb(*vmcore_args(core, symbols), "-ex", f"source {SCRIPT}",
                   "-ex", f"source {script}")  # fmt: skip
    assert_clean(proc)
    assert result.exists(), proc.stderr
    data: dict[str, object] = json.loads(result.read_text())
    return data


def _assert_same(data: dict[str, object]) -> None:
    assert data["btf_used"] is True and data["gdb_used"] is False, data
    assert data["mismatches"] == [], data
    assert data["same"] is True, data
    # the commands printed reports, and the BTF answered the questions they asked
    assert all(isinstance(n, int) and n > 1000 for n in data["lengths"][:1]), data  # type: ignore[index]
    assert isinstance(data["answers"], int) and data["answers"] >= 50, data


def test_btf_types_answer_as_gdb(lp: LpFixture, tmp_path: Path) -> None:
    """Every command prints the same with the BTF's types as with gdb's, and each
    question (offsetof, sizeof, enumerators, globals) gets gdb's answer."""
    _assert_same(_check(lp.vmcore_elf, lp.vmlinux_debug, tmp_path))


def test_btf_types_physical_dump(vmcore_qemu_elf: Path, tmp_path: Path) -> None:
    """QEMU's own dump (PT_LOAD at physical 0): the BTF read through the linear map."""
    _assert_same(_check(vmcore_qemu_elf, lp_fixture("6.1").vmlinux_debug, tmp_path))


_SYMBOLIZE = r"""
import json
from klpinspect.backends.gdb.commands import _target
t = _target()
# every module's text, a few vmlinux functions, the image's end, unowned addresses
addresses = []
for mod in t.modules():
    for start, end in mod.text_ranges:
        addresses += range(start, min(end, start + 0x3000), 12)
        addresses += [end - 4, end, end + 8]
elf = t._elf_symbols()
addresses += list(elf.starts[::5000]) + [s + 4 for s in elf.starts[::7001]]
addresses += [elf.address_of("_end"), 0, 8, 0xc00fffffffff0000]
many = t.symbolize_many(addresses)
one = [t.symbolize(a) for a in addresses]
with open(%(result)r, "w") as f:
    json.dump({"n": len(addresses), "same": many == one,
               "named": sum(1 for s in one if s is not None),
               "modules": sum(1 for s in one if s is not None and s.owner != "vmlinux")}, f)
"""


def test_symbolize_many_is_symbolize(lp: LpFixture, tmp_path: Path) -> None:
    """``GdbTarget.symbolize_many`` (a module's addresses from its kallsyms in one
    pass) names every address as ``symbolize`` does, one by one."""
    script, result = tmp_path / "check.py", tmp_path / "result.json"
    script.write_text(_SYMBOLIZE % {"result": str(result)})
    proc = run_gdb(*vmcore_args(lp.vmcore_elf, lp.vmlinux_debug), "-ex", f"source {SCRIPT}",
                   "-ex", f"source {script}")  # fmt: skip
    assert_clean(proc)
    assert result.exists(), proc.stderr
    data = json.loads(result.read_text())
    assert data["same"] is True, data
    assert data["modules"] > 500 and data["named"] > data["modules"] + 10, data


_HELP = r"""
import json
from klpinspect.backends.gdb import commands
docs = {c.name: [c.__doc__, commands._help_text(c.sub, c.name)]
        for c in commands._REGISTERED if isinstance(c, commands.KlpCommand)}
with open(%(result)r, "w") as f:
    json.dump(docs, f)
"""


def test_older_spelling_help_is_its_own(tmp_path: Path) -> None:
    """``klp-stubs``' help, made from ``klp stubs``' by renaming its usage line, is
    what argparse prints for ``klp-stubs`` itself."""
    script, result = tmp_path / "check.py", tmp_path / "result.json"
    script.write_text(_HELP % {"result": str(result)})
    proc = run_gdb("-ex", f"source {SCRIPT}", "-ex", f"source {script}")
    assert_clean(proc)
    assert result.exists(), proc.stderr
    docs = json.loads(result.read_text())
    assert len(docs) >= 12 and any(name.startswith("klp-") for name in docs), docs.keys()
    for name, (doc, want) in docs.items():
        assert doc == want, name
        assert f"usage: {name} " in doc, name
