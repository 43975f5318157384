# PACA ftrace stub (facts §3.2, TV3): create_ftrace_stub(), kernel TOC from the paca.
# Inputs: KTOC (paca->kernel_toc), TARGET (ftrace_caller/_regs_caller/_mcount),
# PACATOC (offsetof(struct paca_struct, kernel_toc)).
	.text
	.org 0
	ld	r12,PACATOC(r13)
	addis	r12,r12,(TARGET-KTOC)@ha
	addi	r12,r12,(TARGET-KTOC)@l
	mtctr	r12
	bctr
	.long	0
	.long	0
	.long	0x73747562
	.quad	TARGET
