# Out-of-line ftrace stubs in a module's .stubs (facts §3.4, TV6), laid out in
# one section so every branch is relative: the section starts at BASE (the
# module text), the traced call sites are at +0x408/+0x508/+0x608, .stubs is
# at +0x10000 with tramp and tramp_regs in slots 0 and 1, the OOL area of
# three struct ftrace_ool_stub (72 bytes, 2 reserved 40-byte slots) from slot 2,
# and a normal stub after it (slot 4), then zero slots.
# Inputs: BASE, TOC, KTOC, PACATOC, FC, FRC, CALLEE, OP0..OP2 (ftrace_op values).
	.macro	ftrace target
	ld	r12,PACATOC(r13)
	addis	r12,r12,(\target-KTOC)@ha
	addi	r12,r12,(\target-KTOC)@l
	mtctr	r12
	bctr
	.long	0
	.long	0
	.long	0x73747562
	.quad	\target
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
	addis	r11,r2,(BASE+0x10000+4*40-TOC)@ha
	addi	r11,r11,(BASE+0x10000+4*40-TOC)@l
	std	r2,24(r1)
	ld	r12,32(r11)
	mtctr	r12
	bctr
	.long	0
	.long	0x73747562
	.quad	CALLEE
	.space	80
