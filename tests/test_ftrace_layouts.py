"""The ftrace view's klp walk on layouts no fixture has: pre-5.1 static arrays.

Before "livepatch: Use lists to manage patches, objects and functions" (v5.1)
a patch's objects and functions are the patch module's static arrays
(``patch->objs``, ``obj->funcs``, ended by an all-zero entry) and, before
"livepatch: Change unsigned long old_addr -> void *old_func in struct
klp_func" (v5.1), the function's address is ``old_addr``; there is no
``nop`` and (before 4.12) no ``transition``.  No such kernel can be had for
ppc64le here, so the structures are built by hand after the v4.9 headers
(``include/linux/livepatch.h``), with their own (synthetic) offsets, read
through the same LayoutSource queries the back ends answer from DWARF.
"""

from __future__ import annotations

import struct

from synthetic import SyntheticTarget

from klpinspect.ftrace_view import klp_ops_names, read_klp_funcs
from klpinspect.target import KernelInfo

MEM = 0xC000000004000000
KLP_PATCHES, KLP_OPS, PATCH, MODULE = MEM, MEM + 0x10, MEM + 0x100, MEM + 0x200
OBJS, FUNCS, OPS, STRINGS = MEM + 0x300, MEM + 0x400, MEM + 0x600, MEM + 0x800
OLD = [0xC000000000123400, 0xC000000000125600]
NEW = [0xC008000000010000, 0xC008000000010100]


class V49Target(SyntheticTarget):
    """struct klp_patch {mod; objs; list; enabled}, struct klp_object {name; funcs; mod},
    struct klp_func {old_name; new_func; old_sympos; old_addr; stack_node; old_size;
    patched} (v4.9 members; no obj_list, func_list, old_func, transition, nop)."""

    OFFSETS = {
        ("struct klp_patch", "mod"): 0, ("struct klp_patch", "objs"): 8,
        ("struct klp_patch", "list"): 16, ("struct klp_patch", "enabled"): 32,
        ("struct module", "name"): 24,
        ("struct klp_object", "name"): 0, ("struct klp_object", "funcs"): 8,
        ("struct klp_object", "mod"): 16,
        ("struct klp_func", "old_name"): 0, ("struct klp_func", "new_func"): 8,
        ("struct klp_func", "old_sympos"): 16, ("struct klp_func", "old_addr"): 24,
        ("struct klp_func", "stack_node"): 32, ("struct klp_func", "old_size"): 48,
        ("struct klp_func", "patched"): 56,
        ("struct klp_ops", "node"): 0, ("struct klp_ops", "func_stack"): 16,
        ("struct klp_ops", "fops"): 32,
    }
    SIZES = {"struct klp_object": 24, "struct klp_func": 64, "struct klp_ops": 64}

    def type_size(self, type_name: str) -> int | None:
        return self.SIZES.get(type_name)

    def member_offset(self, type_name: str, member: str) -> int | None:
        return self.OFFSETS.get((type_name, member))

    def symbol_address(self, name: str) -> int | None:
        return {"klp_patches": KLP_PATCHES, "klp_ops": KLP_OPS}.get(name)

    def constant(self, name: str) -> int | None:
        return None


def _memory() -> bytes:
    mem = bytearray(0x900)

    def q(address: int, *values: int) -> None:
        struct.pack_into(f"<{len(values)}Q", mem, address - MEM, *values)

    q(KLP_PATCHES, PATCH + 16, PATCH + 16)  # list_head -> patch->list
    q(KLP_OPS, OPS, OPS)  # one klp_ops
    q(PATCH, MODULE, OBJS, KLP_PATCHES, KLP_PATCHES)  # mod, objs, list
    mem[PATCH + 32 - MEM] = 1  # enabled
    mem[MODULE + 24 - MEM : MODULE + 24 - MEM + 8] = b"kpatch_x"
    q(OBJS, 0, FUNCS, 0)  # vmlinux (name NULL), funcs
    # OBJS + 24: the terminator (all zero)
    names = [STRINGS, STRINGS + 0x20]
    mem[STRINGS - MEM : STRINGS - MEM + 9] = b"cmdline_a"
    mem[STRINGS + 0x20 - MEM : STRINGS + 0x20 - MEM + 9] = b"cmdline_b"
    for i in range(2):
        func = FUNCS + 64 * i
        q(func, names[i], NEW[i], 0, OLD[i])
        q(func + 48, 0x60)  # old_size
        mem[func + 56 - MEM] = 1  # patched
    # FUNCS + 128: the terminator; klp_ops {node; func_stack -> func0.stack_node; fops}
    q(OPS, KLP_OPS, KLP_OPS, FUNCS + 32, FUNCS + 32)
    q(FUNCS + 32, OPS + 16, OPS + 16)  # func0.stack_node on the stack
    return bytes(mem)


def test_static_arrays_and_old_addr() -> None:
    target = V49Target(kernel_info=KernelInfo(release="4.9.0-synthetic"),
                       regions={MEM: _memory()})
    funcs = read_klp_funcs(target)
    assert [(f.patch, f.object, f.old_name, f.old_func, f.new_func) for f in funcs] == [
        ("kpatch_x", "vmlinux", "cmdline_a", OLD[0], NEW[0]),
        ("kpatch_x", "vmlinux", "cmdline_b", OLD[1], NEW[1]),
    ]
    assert all(f.patched and f.patch_enabled and not f.transition and not f.nop
               for f in funcs)
    assert [f.old_size for f in funcs] == [0x60, 0x60]
    assert [(f.ops, f.active) for f in funcs] == [(OPS + 32, True), (None, False)]
    assert klp_ops_names(funcs) == {OPS + 32: "klp_ops(vmlinux:cmdline_a)"}
