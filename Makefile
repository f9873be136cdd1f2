# TokModel: `make run` and `make test` each do all set-up on a fresh clone (Python 3.11 + make).
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8080
WORKERS ?= 2

.PHONY: install generate check-generated run test lint bench bench-full bench-usage bench-profile clean

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) on PATH (or make PYTHON=python3)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,codegen]'
	touch $(STAMP)

install: $(STAMP)

generate: $(STAMP)
	$(BIN)/python -m codegen

check-generated: $(STAMP)
	$(BIN)/python -m codegen --check

run: $(STAMP)
	mkdir -p var
	$(BIN)/tokmodel serve --host $(HOST) --port $(PORT) --workers $(WORKERS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check codegen runtime tests

# make bench BENCH_ARGS=--quick: a short sanity run (python -m tests.bench --help)
bench: $(STAMP)
	$(BIN)/python -m tests.bench $(BENCH_ARGS)

# the full-length run (about 30 minutes): 10-minute soak, 5,000 streams on one worker, 60 s
# tails on 1,000,000 usage rows, on PostgreSQL too when TOKMODEL_TEST_POSTGRES_URL is set
# (or BENCH_FULL_ARGS="--postgres postgresql://...")
bench-full: $(STAMP)
	$(BIN)/python -m tests.bench --full $(BENCH_FULL_ARGS)

# the usage API and the console's usage pages over 1,000,000 usage rows (make bench-usage BENCH_USAGE_ARGS="--rows 100000")
bench-usage: $(STAMP)
	$(BIN)/python -m tests.bench.usage $(BENCH_USAGE_ARGS)

# per-request CPU of the gateway by component (in-process, sampled)
bench-profile: $(STAMP)
	$(BIN)/python -m tests.bench.profile $(PROFILE_ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache
