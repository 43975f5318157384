# ELFv1 .stubs section: slots of SLOT bytes (48 with the <= 5.x 16-byte
# func_desc_t, 56 with the 6.1+ 24-byte one); sentinel-terminated.
# Inputs: SLOT, SBASE, TOC, T0..T2 (descriptor funcaddrs), FTOC (their TOC).
	.macro	normal idx, target
	.org	\idx*SLOT
	addis	r11,r2,(SBASE+\idx*SLOT-TOC)@ha
	addi	r11,r11,(SBASE+\idx*SLOT-TOC)@l
	std	r2,40(r1)
	ld	r12,32(r11)
	ld	r2,40(r11)
	mtctr	r12
	bctr
	.long	0x73747562
	.quad	\target
	.quad	FTOC
	.if	SLOT == 56
	.quad	0
	.endif
	.endm

	.text
	normal	0, T0
	normal	1, T1
	normal	2, T2
	.org	3*SLOT			# sentinel
	.space	SLOT
	normal	4, T0			# stale
