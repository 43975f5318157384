"""``render_json``'s module writer: the text the generic writer gives for the
records' own ``to_json()`` dicts, byte for byte, in every shape a record takes
(no slot, only a tramp, missing fields, OOL stubs, strings json must escape).

The records are built from stubs that ``stubs_report`` decodes (the synthetic
kernel of test_audit) and from the same records with fields blanked out, so
the values are the decoder's, not typed in.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from test_audit import make_target

from klpinspect.audit import stubs_report
from klpinspect.ppc64.toc import TocSource
from klpinspect.report import (
    ModuleRecord,
    OolStubRecord,
    Report,
    StubRecord,
    _dumps,
    render,
    render_json,
)


def _generic(report: Report) -> str:
    """The report through the generic writer: every record as its ``to_json()`` dict."""
    return _dumps(report.to_json(), 0)


@dataclasses.dataclass(frozen=True, slots=True)
class _NotedStub(StubRecord):
    """A record type of its own, with a nested field: written the generic way."""

    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = StubRecord.to_json(self)
        out["notes"] = list(self.notes)
        return out


def _records() -> list[StubRecord]:
    report = stubs_report(make_target())
    recs = [s for m in report.modules for s in m.stubs]
    recs += [t for m in report.modules for t in (m.tramp, m.tramp_regs) if t is not None]
    assert recs
    return recs


def _variants(rec: StubRecord) -> list[StubRecord]:
    """``rec`` with each optional field missing, odd strings and a bad magic."""
    stub = rec.stub
    blank = dataclasses.replace(stub, target=None, implied_toc=None, magic_ok=None)
    return [
        rec,
        StubRecord(stub, None, rec.target_symbol, rec.target_owner),
        StubRecord(blank, 7, None, None),
        StubRecord(dataclasses.replace(stub, magic_ok=False), 0, 'q"uo\\te\n', "m\u00f6d\u2603"),
        OolStubRecord(stub, None, rec.target_symbol, rec.target_owner),
        OolStubRecord(blank, None, None, None, 0xC0080000000012F4, "f+0x4/0x40",
                      "enabled", 0xC000000001459E40, "ftrace_nop_ops"),
        OolStubRecord(stub, 3, "s", "vmlinux", 0, "\x00\x1f", "other", None, None),
        _NotedStub(stub, 1, "f", None, ("a", "b")),
        _NotedStub(stub, 2, "g", None, ()),
    ]


def _modules() -> list[ModuleRecord]:
    recs = [v for r in _records() for v in _variants(r)]
    ool = [r for r in recs if isinstance(r, OolStubRecord)]
    plain = [r for r in recs if not isinstance(r, OolStubRecord)]
    return [
        ModuleRecord("empty"),  # no slot at all: one line
        ModuleRecord("tramp_only", toc=0x1000, toc_source=TocSource.TOC,
                     tramp=plain[0]),
        ModuleRecord("regs_only", tramp_regs=plain[1]),
        ModuleRecord("ool_only", ool_stubs=ool),
        ModuleRecord("noted", tramp=plain[-2], stubs=plain[-2:]),
        ModuleRecord("m\u00e9", toc=0, stubs=plain, tramp=plain[2], tramp_regs=plain[3],
                     stubs_section=0xC008000000000000, ool_stubs=ool[:1]),
    ]


@pytest.mark.parametrize("sections", [("modules", "findings"), ("stubs", "findings"),
                                      ("tasks", "findings")])
def test_module_writer_is_the_generic_text(sections: tuple[str, ...]) -> None:
    base = stubs_report(make_target())
    for mods in ([], _modules()[:1], _modules(), base.modules):
        report = Report(target=base.target, kernel=base.kernel, modules=list(mods),
                        findings=base.findings, sections=sections)
        text = render_json(report)
        assert text == _generic(report)
        assert json.loads(text) == json.loads(json.dumps(report.to_json()))
        assert render(report, "json") == text + "\n"


def test_decoded_report_is_the_generic_text() -> None:
    report = stubs_report(make_target())
    assert any(m.stubs for m in report.modules)
    assert render_json(report) == _generic(report)


def test_indented_like_json_dumps() -> None:
    """The layout: json.dumps(indent=2) with the innermost objects on one line."""
    report = Report(modules=_modules()[1:2])
    lines = render_json(report).splitlines()
    assert lines[:4] == ["{", '  "schema": "klpinspect/1",', '  "target": {},', '  "kernel": {},']
    assert lines[4:7] == ['  "modules": [', "    {", '      "name": "tramp_only",']
    assert lines[-4:] == ["    }", "  ],", '  "findings": []', "}"]
