# The never-merged 2016 klp_return_helper (Petr Mladek's "[PATCH][v4]
# livepatch/ppc", facts §9): the patched function returns here, the helper
# restores the caller's TOC, drops the 32-byte mini frame and returns to the
# real caller through the LR save slot of the caller's frame.
	.machine power8
	.text
	.globl klp_return_helper
klp_return_helper:
	ld	2,24(1)		# restore TOC (saved by ftrace_caller)
	addi	1,1,32		# destroy mini stack frame
	ld	0,16(1)		# get the real return address
	mtlr	0
	blr

# ftrace_caller's side after the tracer changed the NIP: open the mini frame,
# save r2 at 24(r1), store &klp_return_helper in LR and in LRSAVE(r1) = 16(r1),
# then branch to the patched function (its address already in CTR).
	.globl ftrace_caller_mini_frame
ftrace_caller_mini_frame:
	stdu	1,-32(1)	# open new mini stack frame
	std	2,24(1)		# save TOC now, unconditionally
	bl	5f
5:	mflr	12
	addi	12,12,(klp_return_helper+4-.)@l
	std	12,16(1)
	mtlr	12
	bctr
