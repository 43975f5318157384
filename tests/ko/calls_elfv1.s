# Hand-written ELFv1 (big-endian, function descriptors in .opd) module code,
# assembled at test time with powerpc64-linux-gnu-as -a64 -mbig.  The TOC
# restore is ld r2,40(r1), and -pg kernels do not exempt _mcount.
	.section ".opd","aw"
	.align	3
	.globl	v1_calls
v1_calls:
	.quad	.L.v1_calls,.TOC.@tocbase,0
	.type	v1_calls,@function
	.size	v1_calls,24

	.text
.L.v1_calls:
	mflr	r0
	std	r0,16(r1)
	stdu	r1,-112(r1)
	bl	_mcount			# ok: -pg leaves the nop
	nop
	bl	ext_func		# ok: nop
	nop
	bl	ext_func		# ok: already ld r2,40(r1)
	ld	r2,40(r1)
	bl	ext_func		# KO_CALL_NEEDS_NOP (+0x24): the ELFv2 restore
	ld	r2,24(r1)
	bl	_mcount			# KO_CALL_NEEDS_NOP (+0x2c)
	addi	r3,r3,1
	addi	r1,r1,112
	ld	r0,16(r1)
	mtlr	r0
	b	ext_func		# KO_SIBLING_CALL (+0x40)
