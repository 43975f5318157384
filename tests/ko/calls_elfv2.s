# Hand-written ELFv2 module code (like a kernel .S file), assembled at test
# time with powerpc64le-linux-gnu-as.  Expected lint result per call site is
# in the comment; tests/test_ko.py checks exactly these.
	.abiversion 2
	.text

	.globl	asm_tail
	.type	asm_tail,@function
asm_tail:
0:	addis	r2,r12,.TOC.-0b@ha
	addi	r2,r2,.TOC.-0b@l
	.localentry asm_tail,.-asm_tail
	mflr	r0
	bl	_mcount			# exempt: is_mprofile_ftrace_call()
	addi	r3,r3,1
	b	ext_func		# KO_SIBLING_CALL (+0x14)
	.size	asm_tail,.-asm_tail

	.globl	asm_calls
	.type	asm_calls,@function
asm_calls:
0:	addis	r2,r12,.TOC.-0b@ha
	addi	r2,r2,.TOC.-0b@l
	.localentry asm_calls,.-asm_calls
	mflr	r0
	std	r0,16(r1)
	stdu	r1,-32(r1)
	bl	ext_func		# ok: nop
	nop
	bl	ext_func		# ok: already ld r2,24(r1)
	ld	r2,24(r1)
	bl	ext_func		# KO_CALL_NEEDS_NOP (+0x24): the ELFv1 restore
	ld	r2,40(r1)
	bl	ext_func		# KO_CALL_NEEDS_NOP (+0x2c)
	addi	r3,r3,1
	bl	asm_local		# ok: local, a direct branch
	addi	r3,r3,1
	bl	ftrace_regs_caller	# exempt
	addi	r3,r3,1
	bl	ext_func@notoc		# ok: R_PPC64_REL24_NOTOC (PCREL, no TOC)
	addi	r3,r3,1
	addi	r1,r1,32
	ld	r0,16(r1)
	mtlr	r0
	blr
	.size	asm_calls,.-asm_calls

	.type	asm_local,@function
asm_local:
	blr
	.size	asm_local,.-asm_local

	.globl	asm_last
	.type	asm_last,@function
asm_last:
	bl	ext_other		# KO_CALL_NEEDS_NOP (+0x0): nothing after it
	.size	asm_last,.-asm_last
