# Call sites into a fake .stubs area, for klpinspect.ppc64.callsites and the
# call-site audit.  Assembled with --defsym RESTORE=24 (ELFv2, LE) or
# RESTORE=40 (ELFv1, BE), and FUNCDATA (stub0's callee).  The branches stay
# inside the section, so the assembler resolves them and the bytes can be
# mapped at any address.
# Offsets (in the comments) are what tests/test_callsites.py expects.
	.text
	.globl	caller
caller:
	mflr	r0		# 0x00
	bl	tramp		# 0x04 ftrace: -mprofile-kernel "mflr r0; bl"
	mflr	r0
	std	r0,16(r1)
	stdu	r1,-32(r1)
	bl	stub0		# 0x14 toc-restore
	ld	r2,RESTORE(r1)
	bl	stub1		# 0x1c nop: never patched
	nop
	bl	stub0		# 0x24 other
	addi	r1,r1,32
	bl	local		# 0x2c not into a stub
	nop
	b	.+8		# 0x34 -pg's disabled "b +8": not into a stub
	ld	r2,RESTORE(r1)
	mflr	r0
	std	r0,16(r1)
	bl	stub2		# 0x44 ftrace: gcc 5's "mflr r0; std r0,16(r1); bl"
	bl	tramp_regs	# 0x48 ftrace only when tramp_regs is given, else other
	addi	r3,r3,1
	ld	r0,16(r1)
	mtlr	r0
	b	stub1		# 0x58 sibling
local:
	blr			# 0x5c

	.org	0x100
stub0:	.space	32		# 0x100
	.quad	FUNCDATA	# funcdata: the callee
stub1:	.space	40		# 0x128
stub2:	.space	40		# 0x150
tramp:	.space	40		# 0x178
tramp_regs:
	.space	40		# 0x1a0
	bl	stub1		# 0x1c8 the last word: nothing after it
