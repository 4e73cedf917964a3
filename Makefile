# Two commands for a fresh machine:  `make demo`  and  `make test`.
# Both build (or reuse) a virtual environment keyed by a hash of the dependency lists, so a second
# run with unchanged inputs skips the multi-GB torch install. The package itself is not installed:
# PYTHONPATH points at this checkout, so tests, notebooks and Jupyter kernels use the code you see.
SHELL := /bin/bash
PYTHON ?= python3
# The key is a content hash of what gets installed (the dependency lists, not the rest of
# pyproject.toml), so the stamp needs no file prerequisites: a fresh clone's newer mtimes, or a
# change to a tool setting, must not force a reinstall.
ENV_KEY := $(shell $(PYTHON) .ci/requirements.py test bench demo docs | cat - .ci/constraints.txt .ci/requirements.py .ci/requirements-nodeps.txt | sha1sum | cut -c1-12)
VENV ?= $(HOME)/.cache/guidewidgets/venv-$(ENV_KEY)
export PYTHONPATH := $(CURDIR)$(if $(PYTHONPATH),:$(PYTHONPATH))
export OMP_NUM_THREADS ?= 2
PYTEST_ARGS ?=

.PHONY: test lint demo voila docs env chromium bench clean-env

env: $(VENV)/.ready

$(VENV)/.ready:
	rm -rf $(VENV) && $(PYTHON) -m venv $(VENV)
	$(PYTHON) .ci/requirements.py test bench demo docs > $(VENV)/requirements.txt
	$(VENV)/bin/pip install -q --disable-pip-version-check -c .ci/constraints.txt -r $(VENV)/requirements.txt 2>&1 | grep -v 'is ignored: it is neither' || true
	$(VENV)/bin/pip install -q --disable-pip-version-check --no-deps -r .ci/requirements-nodeps.txt 2>&1 | grep -v 'is ignored: it is neither' || true
	$(VENV)/bin/python -c "import torch, torchvision, ipycanvas, captum, pytorch_grad_cam, playwright, voila, sphinx, myst_nb, furo"
	touch $@

# Chromium for the real-browser tests (Playwright drives the system browser; it never downloads one).
chromium:
	@command -v chromium >/dev/null || { SUDO=$$([ $$(id -u) = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# House habits, checked as part of `make test`: ruff (lint + format) and mypy over the package.
LINTED := guidewidgets tests benchmarks docs/site/conf.py docs/site/_ext
lint: env
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(VENV)/bin/mypy

test: export GUIDEWIDGETS_OFFLINE := 1
test: env chromium lint
	$(VENV)/bin/python -m pytest --nbval-lax --nbval-current-env tests notebooks $(PYTEST_ARGS)

demo: env
	$(VENV)/bin/jupyter lab --allow-root notebooks/00_quickstart.ipynb

voila: env
	$(VENV)/bin/voila --Voila.ip=0.0.0.0 notebooks/00_quickstart.ipynb

# The documentation site (Sphinx + MyST-NB, sources in docs/site/) into docs/_build/html, warnings as
# errors. Lessons are rendered from executed copies cached under ~/.cache/guidewidgets/docs-notebooks
# (`make test` refreshes them from its nbval run); only a lesson missing there is executed now.
docs: export GUIDEWIDGETS_OFFLINE := 1
docs: env
	$(VENV)/bin/python -m sphinx -W --keep-going -b html -d docs/_build/doctrees docs/site docs/_build/html
	@echo "open docs/_build/html/index.html"

bench: env
	$(VENV)/bin/python benchmarks/explain.py

clean-env:
	rm -rf $(VENV)
