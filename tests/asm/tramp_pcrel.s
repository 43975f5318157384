# Kernel PCREL ftrace trampoline (facts §3.3, TV9): pla r12,REL; mtctr; bctr.
# Inputs: REL (displacement from the pla).
	.text
	.org 0
	pla	r12,REL
	mtctr	r12
	bctr
