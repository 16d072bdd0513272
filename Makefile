# reclra — two commands: `make demo` and `make test` (both create .venv on first use).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0

.PHONY: demo test venv lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$(TORCH)"
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(STAMP)

venv: $(STAMP)

## Train rec-LRA and backprop side by side on Fashion-MNIST (small budget) and print a table.
demo: venv
	$(BIN)/reclra compare --rules rec-lra,backprop --dataset fashion-mnist \
		--epochs 2 --limit-train 10000 --lr 1e-3 --out runs/demo --overwrite

## Lint, format check and the test suite, with the library's line coverage (at least 90 %).
test: venv lint
	$(BIN)/python -m pytest --cov=reclra --cov-report=term-missing:skip-covered --cov-fail-under=90

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
