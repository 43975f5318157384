"""Run one klpinspect command on a target and classify it like the CLI's exit status.

Shared by the drgn worker and the gdb worker (inside gdb's Python).
"""

from __future__ import annotations

import hashlib
import json
import os
import traceback
from typing import Any

__all__ = ("apply", "classify_text", "restore", "run_command_classified")


def classify_text(text: str) -> dict[str, Any]:
    """JSON output -> ``ok``/``finding`` with its finding codes and a digest."""
    try:
        report = json.loads(text)
        codes = sorted(f["code"] for f in report.get("findings", []))
        errors = any(f["severity"] == "error" for f in report.get("findings", []))
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        return {"outcome": "badjson", "message": f"{type(e).__name__}: {e}", "codes": []}
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return {"outcome": "finding" if errors else "ok", "codes": codes, "digest": digest}


def one_line_error(message: str) -> dict[str, Any]:
    """exit 2: one line, not an internal error; anything else is a crash."""
    lines = message.strip().splitlines()
    if len(lines) == 1 and "internal error" not in message and "Traceback" not in message:
        return {"outcome": "error", "message": lines[0], "codes": [],
                "digest": hashlib.sha256(lines[0].encode()).hexdigest()[:16]}
    return {"outcome": "crash", "message": message[-1500:], "codes": []}


def run_command_classified(target: Any, name: str, argv: list[str]) -> dict[str, Any]:
    from klpinspect.commands import run_command
    from klpinspect.errors import KlpError

    try:
        text, _status = run_command(target, name, [*argv, "--format", "json"])
    except KlpError as e:
        return one_line_error(str(e))
    except Exception:  # noqa: BLE001  the CLI would say "internal error": a bug
        return {"outcome": "crash", "message": traceback.format_exc()[-1500:], "codes": []}
    return classify_text(text)


def apply(path: str, trial: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes.fromhex(trial["data"]), trial["offset"])
    finally:
        os.close(fd)


def restore(path: str, trial: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, bytes.fromhex(trial["original"]), trial["offset"])
    finally:
        os.close(fd)
