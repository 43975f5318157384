"""Livepatch stacks on a PCREL kernel (``CONFIG_PPC_KERNEL_PCREL``, power10, 6.4+).

Neither the kernel nor its modules have a TOC there: ``paca->kernel_toc`` is
gone and there is no ``.TOC.``, so the back ends report ``toc_source``
"none".  ``livepatch_handler`` still saves r2 on the livepatch stack; that
value is no TOC and must be shown as such, not as an unknown owner (issue
12, part 4).  No PCREL kernel can be had here (it needs power10 and a
toolchain that builds it): the task, its stack and the kernel facts are
synthetic, with the frames built as test_lpstack.py builds them.
"""

from __future__ import annotations

import json

from test_lpstack import A_THREAD, C0_RET, MAGIC, SYMS, lp_kernel, lp_target, task_world

from klpinspect.livepatch import PCREL_NO_TOC, audit_livepatch_stacks, klp_backtrace
from klpinspect.ppc64.toc import KernelTocSource
from klpinspect.report import render_json, render_table

SAVED_R2 = 0xC000000002345678  # whatever r2 held: on PCREL it is no TOC


def test_saved_r2_is_no_toc_on_pcrel() -> None:
    tasks, memory = task_world([(130, [(SAVED_R2, A_THREAD, MAGIC), (0, C0_RET, MAGIC)])])
    kernel = lp_kernel(toc=None, toc_source=KernelTocSource.NONE)
    target = lp_target(kernel, tasks, memory, SYMS, traces={130: [C0_RET]})
    records, findings = audit_livepatch_stacks(target, {})
    assert findings == []  # no LPSTACK_R2_UNKNOWN
    assert [f.r2_owner for f in records[0].frames] == [PCREL_NO_TOC, PCREL_NO_TOC]
    report = klp_backtrace(target, 130, {})
    (task,) = report.tasks or []
    assert [f.r2_owner for f in task.frames] == [PCREL_NO_TOC] * 2
    assert json.loads(render_json(report))["tasks"][0]["frames"][0]["r2_owner"] == PCREL_NO_TOC


def test_unknown_r2_still_flagged_with_a_toc() -> None:
    """With a kernel TOC (every non-PCREL kernel) the same r2 is an unknown owner."""
    tasks, memory = task_world([(130, [(SAVED_R2, A_THREAD, MAGIC)])])
    target = lp_target(lp_kernel(), tasks, memory, SYMS)
    records, findings = audit_livepatch_stacks(target, {})
    assert [f.code for f in findings] == ["LPSTACK_R2_UNKNOWN"]
    assert records[0].frames[0].r2_owner is None
    assert "?" in render_table_tasks(records)


def render_table_tasks(records: object) -> str:
    from klpinspect.report import Report

    return render_table(Report(tasks=records, sections=("tasks",)))  # type: ignore[arg-type]
