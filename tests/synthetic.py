"""A synthetic :class:`~klpinspect.target.Target` over a few memory regions.

Memory contents come from the real assembler (``tests/asm``); this class only
maps them at addresses and answers the protocol's questions with plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from klpinspect.errors import KlpError, MemoryReadError
from klpinspect.target import KernelInfo, ModuleInfo, StackFrame, SymbolInfo, TaskInfo


@dataclass
class SyntheticTarget:
    kernel_info: KernelInfo
    regions: dict[int, bytes] = field(default_factory=dict)
    module_list: list[ModuleInfo] = field(default_factory=list)
    task_list: list[TaskInfo] = field(default_factory=list)
    symbols: list[SymbolInfo] = field(default_factory=list)
    traces: dict[int, list[StackFrame]] = field(default_factory=dict)
    kind: str = "synthetic"
    reads: list[tuple[int, int]] = field(default_factory=list)
    damage: list[tuple[int | None, str]] = field(default_factory=list)

    def kernel(self) -> KernelInfo:
        return self.kernel_info

    def read(self, address: int, size: int) -> bytes:
        self.reads.append((address, size))
        for base, data in self.regions.items():
            if base <= address and address + size <= base + len(data):
                off = address - base
                return data[off : off + size]
        raise MemoryReadError(address, size, "not mapped")

    def symbolize(self, address: int) -> SymbolInfo | None:
        for sym in self.symbols:
            if sym.address <= address < sym.address + max(sym.size, 1):
                return sym
        return None

    def modules(self) -> Iterable[ModuleInfo]:
        return list(self.module_list)

    def tasks(self) -> Iterable[TaskInfo]:
        return list(self.task_list)

    def stack_trace(self, pid: int) -> Sequence[StackFrame]:
        try:
            return self.traces[pid]
        except KeyError:
            raise KlpError(f"no task with pid {pid}") from None
