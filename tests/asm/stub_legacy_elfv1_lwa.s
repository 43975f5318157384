# ELFv1 stub of old trees (facts §3.1, TV10): word 4 was 0xe84b0026, which is
# lwa r2,36(r11) although the comment says ld r2,40(r11).
# Inputs: STUB, TOC, TARGET, FTOC.
	.text
	.org 0
	addis	r11,r2,(STUB-TOC)@ha
	addi	r11,r11,(STUB-TOC)@l
	std	r2,40(r1)
	ld	r12,32(r11)
	lwa	r2,36(r11)
	mtctr	r12
	bctr
	.long	0			# "unused" before STUB_MAGIC (4.6)
	.quad	TARGET
	.quad	FTOC
