# Call sites into a fake .stubs area, for klpinspect.ppc64.callsites and the
# call-site audit.  Assembled with --defsym RESTORE=24 (ELFv2, LE) or
# RESTORE=40 (ELFv1, BE), and FUNCDATA (the stubs' callee).  The branches stay
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
stub0:	addis	r11,r2,0	# 0x100 a normal stub: saves r2, so callers restore it
	addi	r11,r11,0
	std	r2,RESTORE(r1)
	ld	r12,32(r11)
	.if RESTORE == 40
	ld	r2,40(r11)	# ELFv1: the callee's TOC from the descriptor
	mtctr	r12
	bctr
	.else
	mtctr	r12
	bctr
	.long	0
	.endif
	.long	0x73747562	# STUB_MAGIC (data)
	.quad	FUNCDATA	# funcdata: the callee
stub1:	.space	40		# 0x128
stub2:	.space	40		# 0x150
tramp:	.space	40		# 0x178
tramp_regs:
	.space	40		# 0x1a0
pstub:	pld	r12,32(0),1	# 0x1c8 a PCREL stub: no TOC, nothing to restore
	mtctr	r12
	bctr
	.long	0,0,0
	.long	0x73747562
	.quad	FUNCDATA
	bl	pstub		# 0x1f0 other, but no finding: the stub is PCREL
	addi	r3,r3,1
	bl	stub1		# 0x1f8 the last word: nothing after it
