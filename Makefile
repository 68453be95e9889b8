# Entry points: `make reproduce` (the study), `make demo` and `make test`. Each
# creates .venv when it is missing and installs groklab into it. torch==2.13.0
# is installed first and pinned so that pip keeps the CPU build instead of fetching a CUDA one.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.groklab-installed

.PHONY: reproduce demo test bench install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

reproduce: $(STAMP)
	$(BIN)/groklab reproduce --scale quick --out runs/study

demo: $(STAMP)
	$(BIN)/groklab demo --out runs/demo

test: $(STAMP)
	sh scripts/ensure-chromium.sh
	$(BIN)/python -m pytest

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) runs
