# 4.6 .. ~5.7 -mprofile-kernel _mcount stub (facts §3.1, TV3b): the normal stub
# with jump[2] squashed to a nop by squash_toc_save_inst().
# Inputs: STUB, TOC, TARGET (_mcount).
	.text
	.org 0
	addis	r11,r2,(STUB-TOC)@ha
	addi	r11,r11,(STUB-TOC)@l
	nop				# was std r2,24(r1)
	ld	r12,32(r11)
	mtctr	r12
	bctr
	.long	0
	.long	0x73747562
	.quad	TARGET
