# pre-3.16 ELFv1 stub with r12/r11 swapped (facts §3.1, "pre-3.16 format").
# Inputs: STUB, TOC, TARGET, FTOC.
	.text
	.org 0
	addis	r12,r2,(STUB-TOC)@ha
	addi	r12,r12,(STUB-TOC)@l
	std	r2,40(r1)
	ld	r11,32(r12)
	ld	r2,40(r12)
	mtctr	r11
	bctr
	.long	0			# unused (no magic before 4.6)
	.quad	TARGET
	.quad	FTOC
