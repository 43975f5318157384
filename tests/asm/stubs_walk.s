# A .stubs section of the sentinel era (<= 7.1, ELFv2): slots are used from the
# start up to the first one whose funcdata is zero (stub_for_addr()).  Slot 6
# holds a stale stub beyond the sentinel that a walk must not reach.
# Inputs: SBASE (.stubs address), TOC (module r2), KTOC (kernel TOC), PACATOC,
# T0..T3 (normal stub targets), FC (ftrace_caller), FRC (ftrace_regs_caller).
	.macro	normal idx, target
	.org	\idx*40
	addis	r11,r2,(SBASE+\idx*40-TOC)@ha
	addi	r11,r11,(SBASE+\idx*40-TOC)@l
	std	r2,24(r1)
	ld	r12,32(r11)
	mtctr	r12
	bctr
	.long	0
	.long	0x73747562
	.quad	\target
	.endm

	.macro	ftrace idx, target
	.org	\idx*40
	ld	r12,PACATOC(r13)
	addis	r12,r12,(\target-KTOC)@ha
	addi	r12,r12,(\target-KTOC)@l
	mtctr	r12
	bctr
	.long	0
	.long	0
	.long	0x73747562
	.quad	\target
	.endm

	.text
	normal	0, T0
	normal	1, T1
	ftrace	2, FC			# mod->arch.tramp
	ftrace	3, FRC			# mod->arch.tramp_regs
	normal	4, T2			# added later (livepatch relocation)
	.org	5*40			# slot 5: the zero sentinel
	.space	40
	normal	6, T3			# stale, beyond the sentinel
	.org	7*40
	.space	40
