# README's two commands: `make demo` (a real ppc64le guest, audited) and `make test`.
.PHONY: demo test deps lab-deps lab-up lab-down matrix

# the interpreter scripts/install-deps.sh chose (a venv on Debian's system Python)
PYTHON ?= $$(bash scripts/python)
# The fixture's 6.1 livepatch kernel when ../shared is there, else Debian's stock kernel.
# KERNEL=stock (bookworm), bookworm, trixie, sid, trixie-64k, sid-64k: Debian's kernels.
KERNEL ?= $(if $(wildcard ../shared/fixtures/ppc64le-6.1-lp/qemu-cmdline.txt),fixture,stock)

deps:
	bash scripts/install-deps.sh

lab-deps:
	bash tests/lab/deps.sh $(if $(filter stock,$(KERNEL)),--stock)

# Boot a real ppc64le guest under qemu-system-ppc64 -M pseries, print
# `klpinspect --qemu QMP audit` of it, stop it.
demo: deps lab-deps
	$(PYTHON) tests/lab/lab.py --kernel $(KERNEL) demo

# A guest that stays up (QMP socket, gdbstub) until `make lab-down`.
lab-up: lab-deps
	$(PYTHON) tests/lab/lab.py --kernel $(KERNEL) up

lab-down:
	$(PYTHON) tests/lab/lab.py --kernel $(KERNEL) down

# Boot Debian's ppc64el kernels one at a time (trixie, sid, 4K and 64K pages,
# bookworm), audit each live (QMP, gdbstub) and from a dump (drgn, gdb), check
# against the guest's own /sys/module and /proc/modules, write docs/kernels.md.
# ~1 GB of packages per kernel, cached in /work/cache/debian or .cache/debian.
# MATRIX="trixie sid" limits the kernels.  MATRIX=lp-ool: the lab's own Linux 7.2
# livepatch kernel with out-of-line ftrace stubs (clang 22; built once, 20-40 min,
# cached in /work/cache/lpbuild-ool or .cache/lpbuild-ool; tests/lab/lpkernel.py);
# MATRIX=lp-612: the 6.12 era (trixie's linux-source-6.12, gcc 12, no OOL stubs).
MATRIX ?=
matrix: deps
	bash tests/lab/deps.sh --stock $(if $(filter lp-%,$(MATRIX)),--lp)
	nice -n 10 $(PYTHON) tests/lab/matrix.py $(MATRIX)

test:
	bash scripts/test.sh
