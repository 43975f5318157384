# README's two commands: `make demo` (a real ppc64le guest, audited) and `make test`.
.PHONY: demo test deps

deps:
	bash scripts/install-deps.sh

test:
	bash scripts/test.sh
