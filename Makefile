# Two entry points (see README): `make demo` and `make test`.
.PHONY: demo test setup setup-test lint

setup:
	bash scripts/setup.sh all

setup-test:
	bash scripts/setup.sh test

demo: setup
	.venv/bin/convir demo

test: setup-test
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/python -m pytest -q

lint:
	.venv/bin/ruff check src tests benchmarks
	.venv/bin/ruff format --check src tests benchmarks
