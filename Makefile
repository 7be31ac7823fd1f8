# Set-up and everyday commands.  Everything installs into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN = $(VENV)/bin
STAMP = $(VENV)/.installed

.PHONY: demo serve serve-traversal test test-all test-pure typecheck \
	test-server test-browser explore test-wire bench bench-pool docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# The C accelerator is built by the install: built again when its source
# changes.
$(STAMP): $(BIN)/python pyproject.toml setup.py src/mongopersist/_speedups.c
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,embedded,server,cli,pyramid,bench,docs,zope,typecheck]'
	touch $(STAMP)

## demo: install and run the example application, storing its blog in
## the directory var/data (a file:// store, kept across runs) or on the
## MongoDB of MONGODB_URI when it is set.  Elsewhere: make demo STORE=URI
STORE ?= $(if $(MONGODB_URI),$(MONGODB_URI),file://var/data)
demo: $(STAMP)
	$(BIN)/python examples/blog.py --uri '$(STORE)'

## serve: install and serve the example web application (examples/blogapp.py
## with the settings of examples/blogapp.ini: Pyramid on waitress) on
## http://127.0.0.1:6543/, its posts kept in the directory var/data (see
## them with: .venv/bin/mongopersist --uri file://var/data
## -d mongopersist_blog_app inspect).  It prints the address it serves and
## a line per request; mongopersist's conflicts and retries are logged too
## (the logging of blogapp.ini).  Another port: make serve PORT=8080
PORT ?= 6543
serve: $(STAMP)
	PYTHONPATH=examples $(BIN)/pserve examples/blogapp.ini http_port=$(PORT)

## serve-traversal: the wiki example (examples/wikiapp.py with the settings
## of examples/wikiapp.ini), published by traversal from the object tree
## (mongopersist.pyramid.root_factory), on http://127.0.0.1:6543/
serve-traversal: $(STAMP)
	PYTHONPATH=examples $(BIN)/pserve examples/wikiapp.ini http_port=$(PORT)

## test: install and run the whole suite (with the compiled accelerator,
## mongopersist._speedups, where it was built: the report's header says)
test: $(STAMP)
	$(BIN)/python -m pytest

## test-pure: the whole suite again on the pure-Python code, the
## accelerator's reference (MONGOPERSIST_PURE_PYTHON=1)
test-pure: $(STAMP)
	MONGOPERSIST_PURE_PYTHON=1 $(BIN)/python -m pytest

## test-all: the whole suite on every supported Python (CPython 3.10 to
## 3.13) found on PATH or through pyenv: on .venv's as make test does, on
## each other in a virtualenv of its own (.venv-3.X, made once and reused,
## with only what the suite needs; the property tests run a quarter of
## their examples there, unless HYPOTHESIS_PROFILE=ci).  Ends with a line
## per version: passed, failed, or skipped (not found).  Some versions
## only: make test-all PYTHONS='3.10 3.13'; pytest arguments: ARGS='-x'
test-all: $(STAMP)
	PYTHONS='$(PYTHONS)' $(BIN)/python tests/run_pythons.py $(ARGS)

## typecheck: mypy on the package (strict on the public modules, see
## [tool.mypy] in pyproject.toml) and on tests/test_typing_api.py, which checks
## what a type checker infers for the public API.
typecheck: $(STAMP)
	$(BIN)/python -m mypy

## test-server: run the whole suite against SecantusDB (a MongoDB
## wire-protocol server over WiredTiger, from the server extra) started on
## a free loopback port with a fresh directory, removed afterwards; the
## property tests run a quarter of their examples (tests/conftest.py).
## Extra pytest arguments: make test-server ARGS='-x tests/test_store.py'
test-server: $(STAMP)
	$(BIN)/python tests/run_server.py $(ARGS)

## test-browser: the example web application in a real browser
## (browser/test_blog_in_browser.py): headless Chromium (Debian's chromium
## package, installed with apt-get when missing and run as root) driven by
## Playwright (browser/requirements.txt, installed into .venv; it downloads
## no browser); the blog served by pserve on a free port, its posts in a
## file:// store in a temporary directory.  Not part of make test.
## Screenshots of the pages: make test-browser BLOG_SCREENSHOTS=DIR
BROWSER_STAMP = $(VENV)/.browser-installed
$(BROWSER_STAMP): $(STAMP) browser/requirements.txt
	$(BIN)/python -m pip install --quiet -r browser/requirements.txt
	touch $(BROWSER_STAMP)

test-browser: $(BROWSER_STAMP)
	@sh browser/chromium
	$(BIN)/python -m pytest browser $(ARGS)

## explore: run the property and state-machine tests on new random
## examples (make test always runs the same ones).  Repeat it; a failure
## prints the sequence to replay.
EXPLORE ?= $(shell grep -l '^from hypothesis' tests/test_*.py)
explore: $(STAMP)
	HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest $(EXPLORE) $(ARGS)

## test-wire: run the suite against mongoeco's MongoDB wire-protocol server
## (needs Python >= 3.13, installs mongoeco into .venv-wire; skips without
## one).  Extra pytest arguments: make test-wire ARGS='-x tests/test_queries.py'
test-wire: $(STAMP)
	$(BIN)/python tests/run_wire.py $(ARGS)

## bench: install and run the benchmarks (size: make bench N=3000 RUNS=5)
bench: $(STAMP)
	$(BIN)/python -m benchmarks $(if $(N),--n $(N)) $(if $(RUNS),--runs $(RUNS))

## bench-pool: warm web requests with pooled data managers against a new
## data manager per request (benchmarks/pool.py)
bench-pool: $(STAMP)
	$(BIN)/python -m benchmarks.pool

## docs: build the HTML documentation into docs/_build/html
docs: $(STAMP)
	$(BIN)/python -m sphinx -q -b html docs docs/_build/html

clean:
	rm -rf $(VENV) .venv-wire .venv-3.* .mypy_cache build dist src/*.egg-info docs/_build .pytest_cache .hypothesis
