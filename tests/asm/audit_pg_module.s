# A -pg (non-mprofile) kernel's module .stubs: the ftrace trampoline is a normal
# r2-relative stub to ftrace_caller, as create_ftrace_stub() makes it without
# CONFIG_MPROFILE_KERNEL (stub_for_addr()); the call site restores r2 after it.
# Inputs: SBASE, TOC, T0, FC.
	.include "stub_macros.inc"

	.macro	normal idx, toc, target
	.org	\idx*40
	stub_normal \idx*40, \toc, \target
	.endm

	.text
	normal	0, TOC, T0
	normal	1, TOC, FC		# mod->arch.tramp
	.org	2*40
	.space	40			# sentinel
