@ sub sp, sp, #N for every N in IMMS (tests/test_arm32_prologue.py checks that
@ klpinspect.arm32.insn.expand_imm gives back each N, in order): values that need
@ each rotation of the ARM modified immediate.
	.syntax unified
	.arm
	.text
	.irp	n, 0, 1, 4, 100, 255, 0x3fc, 0x400, 0x1000, 0x10400, 0x11000, 0xff000, 0xff0000, 0x3f000000, 0xff000000, 0xc000003f, 0xf000000f, 0x80000001, 0x104, 0x2040, 0xfc000003
	sub	sp, sp, #\n
	.endr
