# A module's out-of-line ftrace stubs (6.13+) as the kernel builds and patches
# them (arch/powerpc/kernel/trace/ftrace.c, Debian linux-source-7.2), with one
# fault of each kind klpinspect.ppc64.ool checks for.  One section, so every
# branch is relative: module text at BASE (the ftrace sites below 0x1000),
# .stubs at BASE+0x10000: tramp and tramp_regs in slots 0 and 1, nine
# struct ftrace_ool_stub (216 bytes -> 6 reserved slots) from slot 2, a normal
# stub in slot 8, then zero slots.
# Inputs: BASE, TOC, KTOC, PACATOC, FC, FRC, CALLEE, OPS (a struct ftrace_ops),
# NOPOPS (&ftrace_nop_ops).
	.set	SBASE, BASE
	.include "stub_macros.inc"

	# ftrace_init_ool_stub()'s template: {ftrace_op; mflr r0; bl ftrace_caller
	# (a module: bl mod->arch.tramp); mtlr r0; b rec->ip + 4}; ftrace_replace_code()
	# retargets the bl (tramp_regs for ftrace_regs_caller), ftrace_rec_set_ops()
	# the ftrace_op.
	.macro	ool op, call, site
	.quad	\op			# ftrace_op
	mflr	r0			# insn[0]: what rec->arch.ool_stub points at
	bl	\call			# insn[1]
	mtlr	r0			# insn[2]
	b	\site+4			# insn[3]: back to rec->ip + 4
	.endm

	.text
	.org	0x100
site0:	b	ool0+8			# enabled (ftrace_make_call): b &ool_stub->insn[0]
	.org	0x200
site1:	nop				# disabled
	.org	0x300
site2:	b	ool2+8			# enabled, modified to ftrace_regs_caller: bl tramp_regs
	.org	0x400
site3:	b	ool3+8			# enabled, but its stub's bl misses the trampolines
	.org	0x500
site4:	b	ool5+8			# FAULT: branches to another site's stub
	.org	0x600
site5:	mflr	r0			# FAULT: neither a branch nor a nop
	.org	0x700
site6:	nop				# FAULT: claimed by ool6 and ool7
	.org	0x1000			# end of the module's text
	.org	0x2000
outside:				# FAULT: ool8 returns here, outside the text
	.org	0x10000
stubs:
tramp:	stub_ftrace FC
tramp_regs:
	stub_ftrace FRC
ool0:	ool	OPS, tramp, site0
ool1:	ool	NOPOPS, tramp, site1
ool2:	ool	OPS, tramp_regs, site2
ool3:	ool	OPS, normal, site3	# FAULT: bl reaches a normal stub
ool4:	ool	OPS, tramp, site4
ool5:	ool	OPS, tramp, site5
ool6:	ool	NOPOPS, tramp, site6
ool7:	ool	NOPOPS, tramp, site6	# FAULT: second stub for site6
ool8:	ool	OPS, tramp, outside
	.org	0x10000+8*40
normal:	stub_normal 0x10000+8*40, TOC, CALLEE
	.space	80
