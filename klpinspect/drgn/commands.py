"""The drgn plugin's old module name: the commands are in :mod:`klpinspect.drgn_commands`.

Kept so an entry point or ``DRGN_PLUGINS`` setting naming
``klpinspect.drgn.commands`` still loads the plugin.
"""

from ..drgn_commands import KlpFindingsError, drgn_prog_set, is_ppc64_kernel

__all__ = ("KlpFindingsError", "drgn_prog_set", "is_ppc64_kernel")
