.PHONY: install demo test bench
install:
	bash scripts/install.sh
demo:
	bash scripts/quickstart.sh
test:
	bash scripts/test.sh
bench:
	LD_PRELOAD=$$(ls /usr/lib/*/libjemalloc.so.2 2>/dev/null | head -1) .venv/bin/python -m bench
