# xattn: two commands on a fresh machine (`make demo`, `make test`).
# The virtualenv is keyed by a hash of requirements.lock and shared under ~/.cache/xattn, so CI
# reuses it until the pins change; a fresh machine builds it from nothing.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
LOCK := requirements.lock
HASH := $(shell cat $(LOCK) | sha256sum | cut -c1-16)
VENV ?= $(HOME)/.cache/xattn/venv-$(HASH)
BIN := $(VENV)/bin
# Import the package of *this* checkout even when the shared venv was last installed elsewhere.
export PYTHONPATH := $(CURDIR)
# papermill's "python3" kernel must start this venv's interpreter
export PATH := $(BIN):$(PATH)
export MPLBACKEND := Agg
export PYTHONHASHSEED := 0

.PHONY: _build-venv install demo test readme check-sync nbtest pytest bench figures clean-venv lab

# The venv's path carries the hash of the pins, so existence is freshness (never compare mtimes: a fresh
# clone's files are all new). flock serialises concurrent builds of the shared venv (CI beside a session).
$(VENV)/.ok:
	@mkdir -p $(dir $(VENV))
	@flock $(VENV).lock $(MAKE) --no-print-directory _build-venv

_build-venv:
	@if [ ! -f $(VENV)/.ok ]; then \
	  echo "xattn: building virtualenv $(VENV) (first run on this machine or new pins)"; \
	  rm -rf $(VENV) && $(PYTHON) -m venv $(VENV) && \
	  $(BIN)/python -m pip install -q -r $(LOCK) 2>&1 | { grep -v "^WARNING: Location" || true; } && \
	  $(BIN)/python -c "import torch, torchvision, nbdev, decord, av, h5py, timm" && touch $(VENV)/.ok; \
	fi
	@test -f $(VENV)/.ok

# The editable install gives the venv its `xattn` console script; which checkout it points to does not
# matter under make (PYTHONPATH above wins), so it is (re)done only when missing or pointing nowhere:
# a CI clone never re-points the venv of a working checkout.
install: $(VENV)/.ok
	@$(BIN)/python -I -c "import json, pathlib, sys, importlib.metadata as m; d = m.distribution('xattn'); \
	u = json.loads(d.read_text('direct_url.json') or '{}').get('url', '').removeprefix('file://'); \
	sys.exit(0 if u and pathlib.Path(u, 'settings.ini').exists() else 1)" 2>/dev/null \
	|| $(BIN)/python -m pip install -q --no-deps --no-build-isolation -e . 2>&1 | { grep -v "^WARNING: Location" || true; }
	@ln -sfn $(VENV) .venv

demo: install
	$(BIN)/xattn demo

check-sync: install
	$(BIN)/nbdev_clean
	$(BIN)/nbdev_export
	$(BIN)/xattn readme
	@git diff --exit-code --stat -- nbs xattn README.md || (echo "nbdev_clean/nbdev_export/xattn readme changed files: run them and commit" && exit 1)
	@test -z "$$(git status --porcelain --untracked-files=all -- nbs xattn)" || (git status --porcelain -- nbs xattn; echo "untracked generated files: commit them" && exit 1)

readme: install
	$(BIN)/xattn readme

# Two notebooks at a time on two cores: one math thread each, and OpenMP threads that sleep rather than
# spin while they wait (spinning threads of two processes starve each other on a small machine).
nbtest: install
	OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE $(BIN)/nbdev_test --n_workers 2 --timing --do_print 2>&1 | tee .nbtest.log
	@echo "nbdev_test: $$(ls nbs/*.ipynb | wc -l) notebooks passed"

# tests/test_browser.py drives Debian's chromium through Playwright (pinned; no browser can be downloaded at test time).
.PHONY: browser-deps
browser-deps:
	@test -x /usr/lib/chromium/chromium || { echo "xattn: installing Debian chromium for tests/test_browser.py"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium; }

pytest: install browser-deps
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest tests -q -ra --durations=15

test: check-sync nbtest pytest

# Benchmarks are commands printing JSON; `make bench` runs each and keeps the JSON under runs/bench-<stamp>/.
BENCH_DIR ?= runs/bench-$(shell date +%Y%m%d-%H%M%S)
bench: install
	mkdir -p $(BENCH_DIR)
	$(BIN)/xattn bench decode | tee $(BENCH_DIR)/decode.json
	$(BIN)/xattn bench extract-model | tee $(BENCH_DIR)/extract-model.json
	$(BIN)/xattn bench extract | tee $(BENCH_DIR)/extract.json

RUN ?= $(lastword $(sort $(dir $(wildcard runs/*/metrics.json))))
figures: install
	@test -n "$(RUN)" || (echo "no finished run under runs/: run make demo first, or pass RUN=runs/<run>" && exit 1)
	$(BIN)/papermill papers/figures.ipynb $(abspath $(RUN))/figures/paper.ipynb -p run_dir $(abspath $(RUN)) -k python3 --cwd papers

# Every figure (PNG + PDF) and table (Markdown + LaTeX) of the paper, with manifest.json: papers/*.ipynb through `xattn paper`,
# from RUNS (run directories; the first is the main run) and ABLATIONS (`xattn ablate` folders). No RUNS: a tiny demo run and
# ablation, built once under runs/paper-tiny (CPU, minutes). Full-size parameters: papers/README.md.
PAPER_OUT ?= runs/paper
.PHONY: paper
paper: install
	$(BIN)/xattn paper $(if $(strip $(RUNS)),$(foreach r,$(RUNS),--run $(r)),--tiny) $(foreach a,$(ABLATIONS),--ablation $(a)) --out $(PAPER_OUT)

# TensorBoard of a run directory (default: the newest finished run; RUN=runs for all of them) on 127.0.0.1;
# PORT=0 picks a free port (default 6006).
.PHONY: tensorboard
tensorboard: install
	$(BIN)/xattn board $(RUN) $(if $(PORT),--port $(PORT))

lab: install
	$(BIN)/jupyter lab nbs

clean-venv:
	rm -rf $(VENV) .venv
