# Out-of-line ftrace stubs in a module's .stubs (facts §3.4, TV6), laid out in
# one section so every branch is relative: the section starts at BASE (the
# module text), the traced call sites are at +0x408/+0x508/+0x608, .stubs is
# at +0x10000 with tramp and tramp_regs in slots 0 and 1, the OOL area of
# three struct ftrace_ool_stub (72 bytes, 2 reserved 40-byte slots) from slot 2,
# and a normal stub after it (slot 4), then zero slots.
# Inputs: BASE, TOC, KTOC, PACATOC, FC, FRC, CALLEE, OP0..OP2 (ftrace_op values).
	.set	SBASE, BASE		# stub_macros.inc's section start (this one starts at BASE)
	.include "stub_macros.inc"

	.macro	ftrace target
	stub_ftrace \target
	.endm

	.macro	ool op, site
	.quad	\op			# ftrace_op
	mflr	r0
	bl	tramp			# mod->arch.tramp
	mtlr	r0
	b	\site+4			# back to rec->ip + 4
	.endm

	.text
	.org	0x408
site0:	b	ool0+8			# an enabled site: b ool_stub (&insn[0])
	.org	0x508
site1:	nop				# disabled
	.org	0x608
site2:	nop
	.org	0x10000
stubs:
tramp:	ftrace	FC
tramp_regs:
	ftrace	FRC
ool0:	ool	OP0, site0
ool1:	ool	OP1, site1
ool2:	ool	OP2, site2
	.org	0x10000+4*40
	stub_normal 0x10000+4*40, TOC, CALLEE
	.space	80
