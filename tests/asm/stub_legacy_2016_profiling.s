# The 2016 seed patch's profiling stub: kernel TOC from the paca into r12, then
# the target computed in r11 and moved back to r12.
# Inputs: KTOC, TARGET, PACATOC.
	.text
	.org 0
	ld	r12,PACATOC(r13)
	addis	r11,r12,(TARGET-KTOC)@ha
	addi	r11,r11,(TARGET-KTOC)@l
	addi	r12,r11,0
	mtctr	r12
	bctr
	.long	0
	.long	0x73747562
	.quad	TARGET
