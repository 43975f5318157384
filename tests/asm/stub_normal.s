# ELFv2 normal call stub (facts §3.1, TV1/TV1b): module_64.c ppc64_stub_insns.
# Inputs: STUB (slot address), TOC (my_r2()), TARGET (funcdata.addr).
	.text
	.org 0
	addis	r11,r2,(STUB-TOC)@ha	# r11 = r2 + HA(reladdr)
	addi	r11,r11,(STUB-TOC)@l	# r11 = &stub
	std	r2,24(r1)		# R2_STACK_OFFSET (ELFv2)
	ld	r12,32(r11)		# funcdata.addr
	mtctr	r12
	bctr
	.long	0			# jump[6], unused on ELFv2
	.long	0x73747562		# STUB_MAGIC
	.quad	TARGET			# funcdata
