@ ARM32 prologue vectors for klpinspect.arm32 (tests/test_arm32_prologue.py).
@ Assembled twice: as a relocatable object (the call to the undefined
@ __gnu_mcount_nc carries R_ARM_CALL, like a .ko), and with --defsym LINKED=1
@ then linked at 0xc0008000 with __gnu_mcount_nc defined (like vmlinux).
@ Each function's name says its expected class; test_arm32_prologue.py holds
@ the expected register lists, local sizes and deviations.
	.syntax unified
	.arm
	.text

	.macro	frame regs
	mov	ip, sp
	push	{\regs}
	sub	fp, ip, #4
	.endm

	.macro	mcount
	push	{lr}
	bl	__gnu_mcount_nc
	.endm

	.macro	epilogue
	ldm	sp, {fp, sp, pc}
	.endm

	.macro	func name
	.globl	\name
	.type	\name, %function
\name:
	.endm

	.macro	endf name
	.size	\name, . - \name
	.endm

@ --- apcs-frame -------------------------------------------------------------
	func	apcs_plain
	frame	"fp, ip, lr, pc"
	mcount
	mov	r0, #0
	epilogue
	endf	apcs_plain

	func	apcs_locals
	frame	"r4-r9, sl, fp, ip, lr, pc"
	sub	sp, sp, #100
	mcount
	sub	sp, fp, #40
	ldm	sp, {r4-r9, sl, fp, sp, pc}
	endf	apcs_locals

	@ a rotated immediate: 0x41 ror 22 = 0x10400
	func	apcs_rotated
	frame	"r4, fp, ip, lr, pc"
	sub	sp, sp, #0x10400
	mcount
	epilogue
	endf	apcs_rotated

	@ an alias at the same address: one function
	.globl	apcs_alias
	.type	apcs_alias, %function
apcs_alias:
	func	apcs_aliased
	frame	"fp, ip, lr, pc"
	mcount
	ldr	r0, 1f
	epilogue
1:	.word	0x12345678
	endf	apcs_aliased
	.size	apcs_alias, . - apcs_alias

@ --- apcs-frame-extra ---------------------------------------------------------
	@ variadic: r0-r3 pushed before the frame
	func	extra_arg_spill
	mov	ip, sp
	push	{r0, r1, r2, r3}
	push	{fp, ip, lr, pc}
	sub	fp, ip, #20
	mcount
	epilogue
	endf	extra_arg_spill

	@ room for an argument split between r2-r3 and the stack, before the push
	func	extra_args_area
	mov	ip, sp
	sub	sp, sp, #8
	push	{r4-r9, sl, fp, ip, lr, pc}
	sub	fp, ip, #12
	sub	sp, sp, #12
	mcount
	epilogue
	endf	extra_args_area

	@ an argument stored into the frame before the call
	func	extra_arg_store
	frame	"fp, ip, lr, pc"
	sub	sp, sp, #8
	str	r1, [fp, #-16]
	mcount
	epilogue
	endf	extra_arg_store

	func	extra_vpush
	frame	"r4, fp, ip, lr, pc"
	vpush	{d8-d9}
	mcount
	epilogue
	endf	extra_vpush

	func	extra_realign
	frame	"fp, ip, lr, pc"
	bic	sp, sp, #7
	mcount
	epilogue
	endf	extra_realign

	func	extra_sub_sp_reg
	frame	"r4, fp, ip, lr, pc"
	sub	sp, sp, r4
	mcount
	epilogue
	endf	extra_sub_sp_reg

	@ a frame too big for one modified immediate: two subs (GCC's shape)
	func	extra_sub_twice
	frame	"fp, ip, lr, pc"
	sub	sp, sp, #69632
	sub	sp, sp, #368
	mcount
	epilogue
	endf	extra_sub_twice

	func	extra_conditional
	frame	"fp, ip, lr, pc"
	subne	sp, sp, #8
	mcount
	epilogue
	endf	extra_conditional

	func	extra_no_push_lr
	frame	"fp, ip, lr, pc"
	bl	__gnu_mcount_nc
	epilogue
	endf	extra_no_push_lr

@ --- unwind-tables -------------------------------------------------------------
	func	unwind_push
	push	{r4, r5, lr}
	sub	sp, sp, #60
	mcount
	add	sp, sp, #60
	pop	{r4, r5, pc}
	endf	unwind_push

	func	unwind_first
	mcount
	bx	lr
	endf	unwind_first

	@ AAPCS frame pointer (not APCS): push {fp, lr}; add fp, sp, #4
	func	unwind_aapcs_fp
	push	{fp, lr}
	add	fp, sp, #4
	mcount
	pop	{fp, pc}
	endf	unwind_aapcs_fp

@ --- no-mcount -----------------------------------------------------------------
	func	notrace_frame
	frame	"fp, ip, lr, pc"
	mov	r0, #1
	epilogue
	endf	notrace_frame

	func	notrace_leaf
	bx	lr
	endf	notrace_leaf

@ --- code outside every function symbol (as an overridden __weak copy) ----------
	frame	"fp, ip, lr, pc"
	mcount
	epilogue

@ --- thumb2 --------------------------------------------------------------------
	.thumb
	.globl	thumb_traced
	.type	thumb_traced, %function
	.thumb_func
thumb_traced:
	push	{r4, r7, lr}
	add	r7, sp, #4
	push	{lr}
	bl	__gnu_mcount_nc
	pop	{r4, r7, pc}
	.size	thumb_traced, . - thumb_traced

	.globl	thumb_notrace
	.type	thumb_notrace, %function
	.thumb_func
thumb_notrace:
	push	{r7, lr}
	pop	{r7, pc}
	.size	thumb_notrace, . - thumb_notrace

	.arm
.ifdef LINKED
	@ a stand-in for arch/arm/kernel/entry-ftrace.S
	func	__gnu_mcount_nc
	mov	ip, lr
	ldmia	sp!, {lr}
	bx	ip
	endf	__gnu_mcount_nc
.endif
