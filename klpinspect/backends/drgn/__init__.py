"""The drgn back end: open ppc64 kernels with drgn and answer the Target protocol.

``program`` opens vmcores (ELF, kdump-compressed, QEMU dumps), the running
kernel and QEMU guests as ``drgn.Program``\\ s with their debug info;
``target`` implements :class:`klpinspect.target.Target` over a program;
``debuginfo`` prepares debug info files drgn cannot read as they are;
``commands`` holds the drgn ``%klp-*`` commands.
"""

__all__: tuple[str, ...] = ()
