# retrain: the two commands a new user needs are `make retrain` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/fashion-mnist-sample
RUN ?= runs/$(notdir $(patsubst %/,%,$(DATA)))

.PHONY: install test retrain pretrained bench bench-torch clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache runs bench.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
