"""Every finding code is explained, and docs/findings.md is the generated text."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from klpinspect.findings import EXPLANATIONS, explain_text, findings_markdown
from klpinspect.report import CODES, Severity

REPO = Path(__file__).resolve().parent.parent


def test_every_code_explained() -> None:
    assert set(EXPLANATIONS) == set(CODES)
    for code, e in EXPLANATIONS.items():
        for part in (e.meaning, e.mechanism, e.action, e.example):
            assert part.strip(), code


def test_every_code_raised_in_the_sources_is_registered() -> None:
    """A code a module raises (``FindingCode.STUB_UNKNOWN``, or a string literal
    given to ``Finding``) is in CODES, so ``explain`` knows it."""
    prefixes = {c.split("_")[0] for c in CODES}
    used: set[str] = set()
    for path in (REPO / "klpinspect").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "FindingCode"
            ):
                used.add(node.attr)
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Finding":
                args = [a for a in node.args[:1]] + [
                    k.value for k in node.keywords if k.arg == "code"
                ]
                for a in args:
                    if isinstance(a, ast.Constant) and isinstance(a.value, str):
                        used.add(a.value)
    used.discard("severity")  # FindingCode.severity: the member attribute, not a code
    assert used and used <= set(CODES), used - set(CODES)
    assert {u.split("_")[0] for u in used} <= prefixes


def test_doc_is_generated_from_the_table() -> None:
    doc = (REPO / "docs" / "findings.md").read_text()
    regenerate = "regenerate: python3 -m klpinspect.findings > docs/findings.md"
    assert doc == findings_markdown(), regenerate
    for code in CODES:
        assert f"## {code}" in doc


def test_sibling_calls_are_warnings_naming_the_fix() -> None:
    for code in ("KO_SIBLING_CALL", "CALLSITE_SIBLING_VIA_STUB"):
        assert CODES[code] is Severity.WARNING
        text = " ".join(explain_text(code).split())  # as printed, lines joined
        assert '__attribute__((optimize("-fno-optimize-sibling-calls")))' in text
        assert "Sibling calls aren't 'link' branches and they don't return" in text


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "klpinspect", *args], capture_output=True, text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60, check=False,
    )


def test_explain_command() -> None:
    proc = _cli("explain", "ko_sibling_call", "STUB_UNKNOWN")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == explain_text("KO_SIBLING_CALL") + "\n" + explain_text("STUB_UNKNOWN")
    listing = _cli("explain")
    assert [ln.split()[0] for ln in listing.stdout.splitlines()] == list(CODES)
    bad = _cli("explain", "NO_SUCH_CODE")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.strip().splitlines() == [
        "klpinspect: unknown finding code 'NO_SUCH_CODE' (klpinspect explain lists them)"
    ]
