# A module's .stubs for the audit tests (ELFv2, sentinel era), one slot per
# situation the audit must tell apart.  Inputs (--defsym): SBASE (.stubs
# address), TOC (the module's r2), BADTOC (another module's r2), KTOC (kernel
# TOC), PACATOC, T0 (a kernel function), FC (ftrace_caller), FRC
# (ftrace_regs_caller), DANGLING (an address in no loaded text), MAGIC (the
# magic word for slot 4).
	.include "stub_macros.inc"

	.macro	normal idx, toc, target, magic=0x73747562
	.org	\idx*40
	stub_normal \idx*40, \toc, \target, \magic
	.endm

	.macro	ftrace idx, target
	.org	\idx*40
	stub_ftrace \target
	.endm

	.text
	normal	0, TOC, T0		# good
	normal	1, BADTOC, T0		# built against another module's TOC
	ftrace	2, FC			# good tramp
	ftrace	3, T0			# "tramp_regs" that reaches the wrong function
	normal	4, TOC, T0, MAGIC	# magic word as given
	normal	5, TOC, DANGLING	# target in no loaded text
	normal	6, TOC, FRC		# an r2-relative stub used as a trampoline
	.org	7*40			# a used slot that is no stub at all
	li	r3,1
	blr
	li	r4,2
	mr	r5,r4
	li	r6,3
	li	r7,4
	li	r8,5
	.long	0x73747562
	.quad	T0
	.org	8*40			# the zero sentinel
	.space	40
