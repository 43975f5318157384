# The 2016 ppc64le-livepatch seed patch's normal stub: the TOC save comes first.
# Inputs: STUB, TOC, TARGET.
	.text
	.org 0
	std	r2,24(r1)
	addis	r11,r2,(STUB-TOC)@ha
	addi	r11,r11,(STUB-TOC)@l
	ld	r12,32(r11)
	mtctr	r12
	bctr
	.long	0
	.long	0x73747562
	.quad	TARGET
