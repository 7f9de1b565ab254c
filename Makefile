# The two commands of the README. Each creates or refreshes the virtual environment by itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test docs bench clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "blackbox needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

## Run simulator, broker, agent and store for one batch and print its trace report.
demo: $(STAMP)
	$(BIN)/blackbox demo

## Lint, type-check and run the whole test suite (CI runs exactly this).
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -q -n 3

## Regenerate the configuration reference in docs/configuration.md.
docs: $(STAMP)
	{ cat docs/configuration.md.head; $(BIN)/blackbox config reference; } > docs/configuration.md

## Run the benchmarks; they print their figures.
bench: $(STAMP)
	for b in benchmarks/*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
