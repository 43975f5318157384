# ELFv1 normal call stub (facts §3.1, TV2); assembled big-endian.
# Inputs: STUB, TOC, TARGET (descriptor funcaddr), FTOC (descriptor TOC);
# define FDESC24 for the 6.1+ 24-byte func_desc_t (env word), else 16 bytes.
	.text
	.org 0
	addis	r11,r2,(STUB-TOC)@ha
	addi	r11,r11,(STUB-TOC)@l
	std	r2,40(r1)		# R2_STACK_OFFSET (ELFv1)
	ld	r12,32(r11)		# funcdata.funcaddr
	ld	r2,40(r11)		# funcdata.toc
	mtctr	r12
	bctr
	.long	0x73747562
	.quad	TARGET
	.quad	FTOC
	.ifdef	FDESC24
	.quad	0			# func_desc.env
	.endif
