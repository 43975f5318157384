# PCREL ftrace stub (facts §3.3, TV5): kernelbase from the paca plus a 34-bit paddi.
# Inputs: KBASE (paca->kernelbase), TARGET, PACAKB (offsetof(struct paca_struct, kernelbase)).
	.text
	.org 0
	ld	r12,PACAKB(r13)
	nop				# aligns the prefixed paddi
	paddi	r12,r12,TARGET-KBASE,0
	mtctr	r12
	bctr
	.long	0
	.long	0x73747562
	.quad	TARGET
