"""Naming many addresses together (``DrgnTarget.symbolize_many``,
``ElfSymbols.lookup_many``, ``Symbolizer.prefetch``) answers as naming each
alone: module functions, their ftrace sites, offsets past their ends, gaps,
vmlinux addresses and addresses in no module, on the fixture dumps read
without debug files (where module addresses go to their kallsyms)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import FIXTURES
from test_btf_dump import _core

from klpinspect import api
from klpinspect.checks.symbols import Symbolizer

pytestmark = pytest.mark.dump


@pytest.mark.parametrize("fixture", [FIXTURES / "ppc64le-6.1-lp", FIXTURES / "ppc64le-7.2-lp"],
                         ids=["6.1", "7.2"])
def test_many_as_one_by_one(fixture: Path) -> None:
    target = api.open_target(_core(fixture, "vmcore.elf.xz"))
    rng = random.Random(5)
    addresses: list[int] = []
    for mod in target.modules():
        for start, end in mod.text_ranges:
            addresses += [start, end - 4, end, start - 4]
            addresses += [rng.randrange(start, end) & ~3 for _ in range(40)]
    kernel = target.kernel()
    addresses += [kernel.toc or 0, kernel.ftrace_caller or 0, 0xC000000000000000, 0, 12]
    addresses += [rng.randrange(0xC000000000000000, 0xC000000002000000) for _ in range(200)]
    rng.shuffle(addresses)
    alone = [target.symbolize(a) for a in addresses]
    fresh = api.open_target(_core(fixture, "vmcore.elf.xz"))
    many = fresh.symbolize_many(addresses)  # type: ignore[attr-defined]
    assert many == alone
    assert sum(s is not None and s.owner != "vmlinux" for s in many) > 200
    # the memoizing symbolizer: prefetched, then asked, the same texts
    names = Symbolizer(api.open_target(_core(fixture, "vmcore.elf.xz")))
    names.prefetch(addresses)
    assert [names.name(a) for a in addresses] == [Symbolizer(target).name(a) for a in addresses]
