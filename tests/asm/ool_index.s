# mod->arch.ool_stub_index (6.13+): a module whose .stubs holds tramp and
# tramp_regs (slots 0, 1), an OOL area of five struct ftrace_ool_stub (120
# bytes = slots 2..4) of which ftrace_init_ool_stub() handed out two
# (ool_stub_index = 2), then one normal stub (slot 5) and a zero slot (the
# pre-6.18 sentinel).  The unused stubs 2..4 hold what setup_ftrace_ool_stubs()
# left: on 6.17.y with f6b4df37ebfe (v6.18) a nop in every reserved slot's
# funcdata (slot + 32), patch_u32(), at +0x70 (inside used stub 1, overwritten
# by it), +0x98 and +0xc0.  With STRAY=1 a normal stub sits in slot 4 over
# stubs 3 and 4, as the 6.13 bug that commit fixed could place one.
# Inputs: BASE, TOC, KTOC, PACATOC, FC, FRC, CALLEE, OP0, OP1, STRAY.
	.set	SBASE, BASE
	.include "stub_macros.inc"

	.macro	ool op, site
	.quad	\op			# ftrace_op
	mflr	r0
	bl	tramp			# mod->arch.tramp
	mtlr	r0
	b	\site+4			# back to rec->ip + 4
	.endm

	.text
	.org	0x408
site0:	b	ool0+8			# enabled
	.org	0x508
site1:	nop				# disabled
	.org	0x10000
tramp:	stub_ftrace FC
tramp_regs:
	stub_ftrace FRC
ool0:	ool	OP0, site0		# stub 0 (slot 2 + 0)
ool1:	ool	OP1, site1		# stub 1 (+24; its bytes cover slot 2's funcdata)
	.org	0x10000+3*40+32		# slot 3 funcdata: stub 3's ftrace_op
	.long	0x60000000
	.if	STRAY
	.org	0x10000+4*40
	stub_normal 0x10000+4*40, TOC, CALLEE
	.else
	.org	0x10000+4*40+32		# slot 4 funcdata: stub 4's insn[2]
	.long	0x60000000
	.long	0
	.endif
	.org	0x10000+5*40
	stub_normal 0x10000+5*40, TOC, CALLEE
	.space	40			# sentinel
