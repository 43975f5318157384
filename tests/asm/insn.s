# The encodings klpinspect.ppc64.insn names, in this order (test_insn.py reads
# them by index), then field-extraction cases.
	.text
	nop				# 0  NOP
	ld	r2,24(r1)		# 1  LD_R2_24_R1
	ld	r2,40(r1)		# 2  LD_R2_40_R1
	std	r2,24(r1)		# 3  STD_R2_24_R1
	std	r2,40(r1)		# 4  STD_R2_40_R1
	std	r0,16(r1)		# 5  STD_R0_16_R1
	mtctr	r12			# 6  MTCTR_R12
	bctr				# 7  BCTR
	bctrl				# 8  BCTRL
	mflr	r0			# 9  MFLR_R0
	mtlr	r0			# 10 MTLR_R0
	.long	0x73747562		# 11 STUB_MAGIC (data)
	lis	r12,0x57ac		# 12 STACK_END_MAGIC, high half
	ori	r12,r12,0x6e9d		# 13 low half
	addis	r11,r2,-1		# 14 addis(11, 2, 0xffff)
	addi	r11,r11,-32512		# 15 addi(11, 11, 0x8100)
	addis	r12,r12,0x7fff		# 16
	addi	r12,r12,0x7fff		# 17
	ld	r12,32(r11)		# 18 ld(12, 32, 11)
	ld	r12,-8(r13)		# 19 ld(12, -8, 13)
	std	r31,-16(r1)		# 20 std(31, -16, 1)
	bl	.+0x1000		# 21 at 0x54: bl(0x1000)
	b	.-0x10000		# 22 at 0x58: b(-0x10000)
	bl	.+0x1fffffc		# 23 largest forward displacement
	b	.-0x2000000		# 24 largest backward
	ba	0x100			# 25 absolute (AA=1)
	bla	0x200			# 26
	lwa	r2,36(r11)		# 27 the legacy 0xe84b0026
	addi	r12,r11,0		# 28
