"""Errors that end a command with a one-line message and exit status 2."""

__all__ = ("EXIT_UNUSABLE", "KlpError", "TargetError", "MemoryReadError")

#: the exit status of an unusable target or bad arguments (also klpinspect.report's)
EXIT_UNUSABLE = 2


class KlpError(Exception):
    """A problem with the arguments or the target; its text is the one-line message."""


class TargetError(KlpError):
    """The target (core, kernel, debug info, QEMU guest) cannot be used."""


class MemoryReadError(KlpError):
    """Target memory could not be read.

    Inside an audit this becomes a warning finding, not an exit.
    """

    def __init__(self, address: int, size: int, reason: str = "") -> None:
        self.address = address
        self.size = size
        self.reason = reason
        msg = f"cannot read {size} bytes at {address:#x}"
        super().__init__(f"{msg}: {reason}" if reason else msg)
