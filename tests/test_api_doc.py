"""docs/api.md: every exported name is documented, and every example runs.

The ```python blocks run in order in one namespace, with VMCORE, VMLINUX and
MODULES set to the fixture dump, as the page says.
"""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import klpinspect

pytestmark = pytest.mark.dump

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "api.md"


def test_every_name_documented() -> None:
    doc = DOC.read_text()
    headings = "\n".join(ln for ln in doc.splitlines() if ln.startswith("### "))
    documented = set(re.findall(r"`([A-Za-z_]+)[(`]", headings))
    missing = [n for n in klpinspect.__all__ if n != "__version__" and n not in documented]
    assert not missing, missing


def test_examples_run(vmcore_elf: Path, vmlinux_debug: Path, modules_dir: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 15
    ns: dict[str, object] = {"VMCORE": str(vmcore_elf), "VMLINUX": str(vmlinux_debug),
                             "MODULES": str(modules_dir)}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, block in enumerate(blocks):
            try:
                exec(compile(block, f"docs/api.md block {i + 1}", "exec"), ns)
            except Exception as e:
                raise AssertionError(f"block {i + 1} failed: {e!r}\n{block}") from e
    text = out.getvalue()
    assert "6.1.192 ppc64le" in text
    assert "cannot open: /no/such/vmcore: no such file" in text
    assert "130 rk_target" in text
    assert "no module named 'no_such_module'" in text
    assert "no crashed task" in text


def test_lazy_exports() -> None:
    for name in klpinspect.__all__:
        assert getattr(klpinspect, name) is not None
    with pytest.raises(AttributeError):
        klpinspect.no_such_name  # noqa: B018
    # the submodule klpinspect/audit.py does not hide the API function
    import importlib

    module = importlib.import_module("klpinspect.audit")
    from klpinspect import api

    assert klpinspect.audit is api.audit and module.audit is not api.audit
