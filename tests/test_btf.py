"""The pure BTF reader against BTF made by real tools, checked by a real tool.

The blobs: the ``.BTF`` sections of the fixtures' vmlinux files (pahole 1.24
from the kernel build's DWARF) and of their modules (split BTF on top of
vmlinux's), and ``tests/btf/edge.c`` compiled at test time by clang
(``-target bpf`` and ``bpfeb``: every kind incl. DECL_TAG and TYPE_TAG, both
byte orders) and by gcc + ``pahole -J`` (ENUM64).  The oracle is bpftool's
JSON dump of the same file (``bpftool -j [-B vmlinux] btf dump file F``),
and, for type layouts, the DWARF that drgn reads from ``vmlinux.debug``.

Debian packages: ``bpftool``, ``clang`` (``clang-14`` on bookworm), ``dwarves``.
"""

from __future__ import annotations

import functools
import json
import shutil
import struct
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import drgn
import pytest
from conftest import ABSENT, FIXTURES
from elftools.elf.elffile import ELFFile

from klpinspect.btf import Btf, BtfError, BtfKind, BtfType

EDGE_C = Path(__file__).resolve().parent / "btf" / "edge.c"
LP72 = FIXTURES / "ppc64le-7.2-lp"
LP61 = FIXTURES / "ppc64le-6.1-lp"


def _tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(f"{names[0]} not installed (scripts/install-deps.sh installs it)")


def _btf_section(path: Path) -> bytes:
    with open(path, "rb") as f:
        sec = ELFFile(f).get_section_by_name(".BTF")
        assert sec is not None, f"{path}: no .BTF section"
        data: bytes = sec.data()
        return data


def _bpftool(path: Path, base: Path | None = None) -> list[dict[str, Any]]:
    cmd = [_tool("bpftool", "/usr/sbin/bpftool"), "-j"]
    if base is not None:
        cmd += ["-B", str(base)]
    out = subprocess.run(
        cmd + ["btf", "dump", "file", str(path)], check=True, capture_output=True, text=True
    ).stdout
    types: list[dict[str, Any]] = json.loads(out)["types"]
    return types


_LINKAGE = {0: "static", 1: "global", 2: "extern"}


def _as_bpftool(btf: Btf, t: BtfType) -> dict[str, Any]:
    """One decoded type in the shape of bpftool's JSON dump (tools/bpf/bpftool/btf.c)."""
    d: dict[str, Any] = {"id": t.id, "kind": t.kind.name, "name": t.name or "(anon)"}
    k = t.kind
    if k == BtfKind.INT:
        assert t.int_info is not None
        i = t.int_info
        enc = "SIGNED" if i.signed else "CHAR" if i.char else "BOOL" if i.bool else "(none)"
        d.update(size=t.size, bits_offset=i.offset, nr_bits=i.bits, encoding=enc)
    elif k in (
        BtfKind.PTR,
        BtfKind.TYPEDEF,
        BtfKind.VOLATILE,
        BtfKind.CONST,
        BtfKind.RESTRICT,
        BtfKind.TYPE_TAG,
    ):
        d["type_id"] = t.type
    elif k == BtfKind.ARRAY:
        assert t.array is not None
        d.update(type_id=t.array.type, index_type_id=t.array.index_type, nr_elems=t.array.nelems)
    elif k in (BtfKind.STRUCT, BtfKind.UNION):
        members = []
        for m in t.members:
            md: dict[str, Any] = {"name": m.name or "(anon)", "type_id": m.type}
            md["bits_offset"] = m.bit_offset
            if m.bitfield_size:
                md["bitfield_size"] = m.bitfield_size
            members.append(md)
        d.update(size=t.size, vlen=t.vlen, members=members)
    elif k in (BtfKind.ENUM, BtfKind.ENUM64):
        values = [e.value for e in t.enumerators]
        if k == BtfKind.ENUM and not t.kind_flag:
            # bpftool reads struct btf_enum's __s32 val, sign-extends it and
            # prints it unsigned; the reader gives the u32 (libbpf's
            # btf_enum_value() for an unsigned enum).
            values = [(v - (1 << 32) if v >= 1 << 31 else v) % (1 << 64) for v in values]
        d.update(
            encoding="SIGNED" if t.is_signed_enum else "UNSIGNED",
            size=t.size,
            vlen=t.vlen,
            values=[{"name": e.name, "val": v} for e, v in zip(t.enumerators, values, strict=True)],
        )
    elif k == BtfKind.FWD:
        d["fwd_kind"] = "union" if t.kind_flag else "struct"
    elif k == BtfKind.FUNC:
        d.update(type_id=t.type, linkage=_LINKAGE[t.linkage or 0])
    elif k == BtfKind.FUNC_PROTO:
        d.update(
            ret_type_id=t.type,
            vlen=t.vlen,
            params=[{"name": p.name or "(anon)", "type_id": p.type} for p in t.params],
        )
    elif k == BtfKind.VAR:
        d.update(type_id=t.type, linkage=_LINKAGE[t.linkage or 0])
    elif k == BtfKind.DATASEC:
        d.update(
            size=t.size,
            vlen=t.vlen,
            vars=[{"type_id": s.type, "offset": s.offset, "size": s.size} for s in t.secinfos],
        )
    elif k == BtfKind.FLOAT:
        d["size"] = t.size
    elif k == BtfKind.DECL_TAG:
        d.update(type_id=t.type, component_idx=t.component_idx)
    return d


def _anon(value: Any) -> Any:
    """bpftool prints ``(anon)`` for name offset 0 and ``""`` for an offset of
    an empty string (split BTF: the module's own first string); both are no name."""
    if isinstance(value, dict):
        return {k: ("(anon)" if k == "name" and v == "" else _anon(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_anon(v) for v in value]
    return value


def _same_as_bpftool(btf: Btf, expected: list[dict[str, Any]]) -> None:
    assert len(expected) == len(btf), "number of types"
    for want in expected:
        got = _as_bpftool(btf, btf.type(want["id"]))
        assert got == _anon(want)


# --- BTF made by clang and pahole from tests/btf/edge.c --------------------------------


@functools.cache
def _workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="klpinspect-btf-"))


@functools.cache
def _edge_object(how: str) -> Path:
    """edge.c compiled: ``bpfel`` / ``bpfeb`` (clang), ``pahole`` (gcc -g, pahole -J)."""
    out = _workdir() / f"edge-{how}.o"
    if how == "pahole":
        subprocess.run([_tool("gcc"), "-g", "-O0", "-c", str(EDGE_C), "-o", str(out)], check=True)
        subprocess.run([_tool("pahole"), "-J", str(out)], check=True, capture_output=True)
    else:
        clang = _tool("clang", "clang-14", "clang-15", "clang-16", "clang-19")
        subprocess.run(
            [clang, "-target", how, "-g", "-O2", "-c", str(EDGE_C), "-o", str(out)], check=True
        )
    return out


@pytest.mark.parametrize("how", ["bpfel", "bpfeb", "pahole"])
def test_edge_kinds_match_bpftool(how: str) -> None:
    obj = _edge_object(how)
    btf = Btf(_btf_section(obj))
    assert btf.byteorder == ("big" if how == "bpfeb" else "little")
    _same_as_bpftool(btf, _bpftool(obj))


def test_edge_every_kind_present() -> None:
    """The edge objects together hold every BTF kind: the comparisons cover them all."""
    kinds: set[BtfKind] = set()
    for how in ("bpfel", "pahole"):
        btf = Btf(_btf_section(_edge_object(how)))
        kinds.update(t.kind for t in btf)
    assert kinds == set(BtfKind) - {BtfKind.UNKN}


def test_edge_decoded_facts() -> None:
    """A few facts of edge.c read through the API (names, not IDs)."""
    btf = Btf(_btf_section(_edge_object("bpfeb")))
    (sid,) = btf.find("s", [BtfKind.STRUCT])
    s = btf.type(sid)
    by_name = {m.name: m for m in s.members}
    assert (by_name["b"].bit_offset, by_name["b"].bitfield_size) == (32, 3)
    assert (by_name["c"].bit_offset, by_name["c"].bitfield_size) == (35, 5)
    assert btf.offsetof(sid, "l") == btf.offsetof(sid, "bytes")  # anonymous union
    assert btf.offsetof(sid, "pt.y") == btf.offsetof(sid, "pt") + 2
    (tid,) = btf.find("s_t", [BtfKind.TYPEDEF])
    assert btf.resolve(tid) == sid
    assert btf.sizeof(tid) == s.size
    tags = {t.name: t for t in btf if t.kind == BtfKind.DECL_TAG}
    assert tags["member_tag"].component_idx == 0
    assert tags["var_tag"].component_idx == -1
    assert btf.kind(tags["param_tag"].type or 0) == BtfKind.FUNC
    (vfp,) = btf.find("g_vfp", [BtfKind.VAR])
    proto = btf.type(btf.type(btf.type(vfp).type or 0).type or 0)
    assert proto.kind == BtfKind.FUNC_PROTO and proto.params[-1].type == 0  # "..."
    secs = {sec for sec, _, _ in btf.datasec_vars()}
    assert {".bss", ".data"} <= secs
    assert list(btf.datasec_var_names()) == [(v.name, v.id) for _, v, _ in btf.datasec_vars()]
    le = Btf(_btf_section(_edge_object("bpfel")))
    assert [_as_bpftool(le, t) for t in le] == [_as_bpftool(btf, t) for t in btf]
    big = Btf(_btf_section(_edge_object("pahole")))
    (eid,) = big.find("big", [BtfKind.ENUM64])
    assert [(e.name, e.value) for e in big.type(eid).enumerators] == [
        ("BIG_A", 1),
        ("BIG_B", 1 << 32),
    ]
    (nid,) = big.find("neg")
    assert big.type(nid).is_signed_enum
    assert big.type(nid).enumerators[0].value == -1


# --- the kernels' BTF ----------------------------------------------------------------------


@pytest.mark.lpfixture
@pytest.mark.parametrize("fixture", [LP61, LP72], ids=["6.1", "7.2"])
def test_vmlinux_btf_matches_bpftool(fixture: Path) -> None:
    vmlinux = fixture / "vmlinux"
    btf = Btf(_btf_section(vmlinux))
    _same_as_bpftool(btf, _bpftool(vmlinux))


@functools.cache
def _vmlinux_btf(fixture: Path) -> Btf:
    return Btf(_btf_section(fixture / "vmlinux"))


@pytest.mark.lpfixture
@pytest.mark.parametrize("fixture", [LP61, LP72], ids=["6.1", "7.2"])
def test_find_base_types_by_name(fixture: Path) -> None:
    """find() of INT/FLOAT names (answered from a small index) is every type of
    that kind and name, as bpftool lists them; a spelling BTF lacks finds none."""
    btf = _vmlinux_btf(fixture)
    expected: dict[tuple[str, str], list[int]] = {}
    for t in _bpftool(fixture / "vmlinux"):
        if t["kind"] in ("INT", "FLOAT"):
            expected.setdefault((t["kind"], t["name"]), []).append(t["id"])
    assert ("INT", "long unsigned int") in expected
    for (kind, name), ids in expected.items():
        assert btf.find(name, [BtfKind[kind]]) == ids, name
        assert btf.find(name, [BtfKind.INT, BtfKind.FLOAT]) == ids, name
    assert btf.find("unsigned long", [BtfKind.INT]) == []


@pytest.mark.lpfixture
@pytest.mark.parametrize("fixture", [LP61, LP72], ids=["6.1", "7.2"])
def test_prefetched_strings_as_searched(fixture: Path) -> None:
    """prefetch_strings() finds each name where one search for it does: names
    of types, members, a prefix and a suffix of real names, absent names."""
    searched = Btf(_btf_section(fixture / "vmlinux"))
    names = ["module", "task_struct", "list", "next", "modul", "odule", "int", "long int",
             "no_such_name_at_all", "MOD_TEXT", "rq", "", "ä"]
    want = {n: searched._string_offsets(n) for n in names if n}
    assert want["module"] and want["next"] and not want["no_such_name_at_all"]
    prefetched = Btf(_btf_section(fixture / "vmlinux"))
    prefetched.prefetch_strings(names)
    assert {n: prefetched._string_cache[n] for n in want} == want
    for name in ("module", "task_struct", "rq"):
        assert prefetched.find(name) == searched.find(name)


def _modules() -> list[tuple[Path, str]]:
    if ABSENT:  # no ../shared: one placeholder, deselected (lpfixture) with the others
        return [(LP61, "absent.ko")]
    found = [(f, ko.name) for f in (LP61, LP72) for ko in sorted((f / "modules").glob("*.ko"))]
    assert len(found) >= 80, "fixture modules missing"
    return found


@pytest.mark.lpfixture
@pytest.mark.parametrize("fixture,module", _modules(), ids=lambda x: getattr(x, "name", x))
def test_module_split_btf_matches_bpftool(fixture: Path, module: str) -> None:
    vmlinux = fixture / "vmlinux"
    ko = fixture / "modules" / module
    base = _vmlinux_btf(fixture)
    btf = Btf(_btf_section(ko), base=base)
    assert btf.start_id == base.end_id
    _same_as_bpftool(btf, _bpftool(ko, base=vmlinux))
    # Split BTF refers to the base's types and strings: struct module is vmlinux's.
    (mod,) = btf.find("module", [BtfKind.STRUCT])
    assert mod < base.end_id


# --- type layouts against the DWARF -----------------------------------------------------

_STRUCTS = (
    "module",
    "task_struct",
    "thread_info",
    "paca_struct",
    "mod_arch_specific",
    "module_sect_attrs",
    "mod_kallsyms",
    "list_head",
    "thread_struct",
    "uts_namespace",
    "klp_modinfo",
    "pt_regs",
)


def _drgn_layout(t: drgn.Type, prefix: str = "", base: int = 0) -> dict[str, tuple[int, int]]:
    """member path -> (bit offset, bit field size) through anonymous members."""
    out = {}
    for m in t.members or ():
        off = base + m.bit_offset
        if m.name is None:
            out.update(_drgn_layout(m.type.unqualified(), prefix, off))
        else:
            out[prefix + m.name] = (off, m.bit_field_size or 0)
    return out


def _btf_layout(
    btf: Btf, type_id: int, prefix: str = "", base: int = 0
) -> dict[str, tuple[int, int]]:
    out = {}
    for m in btf.type(type_id).members:
        off = base + m.bit_offset
        if not m.name:
            out.update(_btf_layout(btf, btf.resolve(m.type), prefix, off))
        else:
            out[prefix + m.name] = (off, m.bitfield_size)
    return out


@pytest.mark.lpfixture
@pytest.mark.parametrize("fixture", [LP61, LP72], ids=["6.1", "7.2"])
def test_layouts_match_dwarf(fixture: Path) -> None:
    btf = Btf(_btf_section(fixture / "vmlinux"))
    flags = drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
    prog = drgn.Program(drgn.Platform(drgn.Architecture.PPC64, flags))
    vmlinux = prog.extra_module("vmlinux", create=True)
    vmlinux.try_file(str(fixture / "vmlinux.debug"), force=True)
    assert vmlinux.debug_file_status == drgn.ModuleFileStatus.HAVE
    checked = 0
    for tag in _STRUCTS:
        try:
            dwarf = prog.type(f"struct {tag}")
        except LookupError:
            assert not btf.find(tag, [BtfKind.STRUCT]), f"struct {tag} in BTF but not DWARF"
            continue
        ids = [i for i in btf.find(tag, [BtfKind.STRUCT]) if btf.type(i).members]
        assert ids, f"struct {tag} in DWARF but not in BTF"
        assert btf.type(ids[0]).size == drgn.sizeof(dwarf), tag
        assert _btf_layout(btf, ids[0]) == _drgn_layout(dwarf), tag
        checked += 1
    assert checked >= 10
    # thread_union: THREAD_SIZE for the stack walk
    (tu,) = btf.find("thread_union", [BtfKind.UNION])
    assert btf.sizeof(tu) == drgn.sizeof(prog.type("union thread_union"))


# --- bad input ---------------------------------------------------------------------------


def test_bad_input_is_btf_error() -> None:
    data = _btf_section(_edge_object("bpfel"))
    with pytest.raises(BtfError, match="magic"):
        Btf(b"\0" * 64)
    with pytest.raises(BtfError, match="too short"):
        Btf(data[:10])
    with pytest.raises(BtfError, match="truncated"):
        Btf(data[: len(data) // 2])
    bad_version = data[:2] + b"\x02" + data[3:]
    with pytest.raises(BtfError, match="version"):
        Btf(bad_version)
    btf = Btf(data)
    with pytest.raises(BtfError, match="out of range"):
        btf.type(btf.end_id)
    with pytest.raises(BtfError, match="out of range"):
        btf.string(10**9)


# --- damaged BTF: BtfError (LookupError for drgn types), never anything else ---------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@functools.cache
def _edge_bytes() -> bytes:
    return _btf_section(_edge_object("bpfel"))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=8))
def test_damaged_btf_fails_cleanly(edits: list[tuple[int, int]]) -> None:
    from klpinspect.backends.drgn.btf_finder import KernelBtf

    data = bytearray(_edge_bytes())
    for pos, value in edits:
        data[pos % len(data)] = value
    try:
        btf = Btf(bytes(data))
    except BtfError:
        return
    flags = drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
    kbtf = KernelBtf(drgn.Program(drgn.Platform(drgn.Architecture.PPC64, flags)), btf)
    for type_id in range(btf.start_id, btf.end_id):
        try:
            t = btf.type(type_id)
            btf.resolve(type_id)
            btf.sizeof(type_id)
        except BtfError:
            continue
        for m in t.members:
            try:
                btf.offsetof(type_id, m.name or "x")
            except BtfError:
                pass
        try:
            dt = kbtf.drgn_type(btf, type_id)
            for m in getattr(dt, "members", None) or ():
                m.type  # noqa: B018  (evaluates the lazy member type)
        except LookupError:
            pass  # "damaged BTF: ..."


def test_member_loop_in_damaged_btf_is_an_error() -> None:
    """edge.c's ``struct s`` with its anonymous union's type pointed back at
    ``struct s`` itself: a member look-up through it is a ``BtfError`` (and no
    answer for the gdb back end's :class:`BtfTypes`), not endless recursion."""
    from klpinspect.backends.btflayout import BtfTypes

    data = bytearray(_edge_bytes())
    btf = Btf(bytes(data))
    (sid,) = btf.find("s", [BtfKind.STRUCT])
    anon = [k for k, m in enumerate(btf.type(sid).members) if not m.name]
    assert len(anon) == 1 and btf.member(sid, "l") is not None  # the union's "long l"
    hdr_len, type_off = struct.unpack_from("<II", data, 4)
    record = hdr_len + type_off + 4 * btf._offsets[sid - btf.start_id]
    struct.pack_into("<I", data, record + 12 + 12 * anon[0] + 4, sid)  # btf_member.type
    looped = Btf(bytes(data))
    assert looped.member(sid, "a") == btf.member(sid, "a")  # named members still found
    with pytest.raises(BtfError, match="too deep"):
        looped.member(sid, "l")
    assert BtfTypes(looped).member_bits(sid, "l") is None
    assert BtfTypes(btf).member_bits(sid, "l") == btf.member(sid, "l")
