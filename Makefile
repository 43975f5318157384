# README's two commands: `make demo` (a real ppc64le guest, audited) and `make test`.
.PHONY: demo test deps lab-deps lab-up lab-down

# the interpreter scripts/install-deps.sh chose (a venv on Debian's system Python)
PYTHON ?= $$(bash scripts/python)
# The fixture's 6.1 livepatch kernel when ../shared is there, else Debian's stock kernel.
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

test:
	bash scripts/test.sh
