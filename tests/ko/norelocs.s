# A module object with code but no relocations at all.
	.abiversion 2
	.text
	.globl	leaf
	.type	leaf,@function
leaf:
	addi	r3,r3,1
	blr
	.size	leaf,.-leaf
