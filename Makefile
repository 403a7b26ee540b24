# Two commands do all the set-up on a fresh machine with Python 3.11 or 3.12:
#   make demo   installs everything, then runs the credential-free demo
#   make test   installs everything, then runs the whole test suite
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never

.PHONY: install demo test test-fast lint bench clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Bytecode is compiled at install, as pip does: a command then starts in a tenth of the
# time where PYTHONDONTWRITEBYTECODE is set (containers, CI) and no .pyc is ever written.
$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON) --extra dev --extra embedded
	touch $@

install: $(VENV)/.synced
	@$(VENV)/bin/python -m compileall -q etl migrations >/dev/null

demo: install
	$(VENV)/bin/cdr-etl demo

test: install
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/python bench/backfill.py --cdrs 100000

clean:
	rm -rf .tools $(VENV) .cdr-etl-test
