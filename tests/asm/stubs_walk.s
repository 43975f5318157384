# A .stubs section of the sentinel era (<= 7.1, ELFv2): slots are used from the
# start up to the first one whose funcdata is zero (stub_for_addr()).  Slot 6
# holds a stale stub beyond the sentinel that a walk must not reach.
# Inputs: SBASE (.stubs address), TOC (module r2), KTOC (kernel TOC), PACATOC,
# T0..T3 (normal stub targets), FC (ftrace_caller), FRC (ftrace_regs_caller).
	.include "stub_macros.inc"

	.macro	normal idx, target
	.org	\idx*40
	stub_normal \idx*40, TOC, \target
	.endm

	.macro	ftrace idx, target
	.org	\idx*40
	stub_ftrace \target
	.endm

	.text
	normal	0, T0
	normal	1, T1
	ftrace	2, FC			# mod->arch.tramp
	ftrace	3, FRC			# mod->arch.tramp_regs
	normal	4, T2			# added later (livepatch relocation)
	.org	5*40			# slot 5: the zero sentinel
	.space	40
	normal	6, T3			# stale, beyond the sentinel
	.org	7*40
	.space	40
