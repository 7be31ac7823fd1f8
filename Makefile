# Set-up and everyday commands.  Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo test bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.py
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,embedded,bench,docs]'
	touch $(STAMP)

## demo: install and run the example application (embedded MongoDB
## stand-in unless MONGODB_URI is set)
demo: $(STAMP)
	$(BIN)/python examples/blog.py

## test: install and run the whole suite
test: $(STAMP)
	$(BIN)/python -m pytest

## bench: install and run the benchmarks
bench: $(STAMP)
	$(BIN)/python -m benchmarks

## docs: build the HTML documentation into docs/_build/html
docs: $(STAMP)
	$(BIN)/python -m sphinx -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist src/*.egg-info docs/_build .pytest_cache
