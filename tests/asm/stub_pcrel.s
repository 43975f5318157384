# PCREL normal stub (facts §3.3, TV4): pld r12,32(0),1 loads *(stub + 32).
# Inputs: TARGET.
	.text
	.org 0
	pld	r12,32(0),1
	mtctr	r12
	bctr
	.long	0
	.long	0
	.long	0
	.long	0x73747562
	.quad	TARGET
