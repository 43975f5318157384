# A -pg (non-mprofile) kernel's module .stubs: the ftrace trampoline is a normal
# r2-relative stub to ftrace_caller, as create_ftrace_stub() makes it without
# CONFIG_MPROFILE_KERNEL (stub_for_addr()); the call site restores r2 after it.
# Inputs: SBASE, TOC, T0, FC.
	.macro	normal idx, toc, target
	.org	\idx*40
	addis	r11,r2,(SBASE+\idx*40-\toc)@ha
	addi	r11,r11,(SBASE+\idx*40-\toc)@l
	std	r2,24(r1)
	ld	r12,32(r11)
	mtctr	r12
	bctr
	.long	0
	.long	0x73747562
	.quad	\target
	.endm

	.text
	normal	0, TOC, T0
	normal	1, TOC, FC		# mod->arch.tramp
	.org	2*40
	.space	40			# sentinel
