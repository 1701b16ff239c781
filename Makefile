.PHONY: install demo test bench lint
install:
	bash scripts/install.sh
demo:
	bash scripts/quickstart.sh
test:
	bash scripts/test.sh
lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy densenas_core service workers
bench:
	LD_PRELOAD=$$(ls /usr/lib/*/libjemalloc.so.2 2>/dev/null | head -1) .venv/bin/python -m bench
