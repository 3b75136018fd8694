# hygie-w2l: every target does its own set-up (a .venv here), idempotently.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install install-ui ui test demo download-weights lint typecheck bench clean

install: $(STAMP)

# Packages are installed by uv (from PyPI, like everything else): the same wheels as pip,
# fetched and unpacked in parallel: a fresh install takes ~40 s instead of pip's 3-4 min,
# which is what lets `make demo` finish in under 10 minutes on a fresh clone. A local wheel
# folder (e.g. a CPU torch build) given to pip, by PIP_FIND_LINKS or pip's own config, is
# given to uv too.
# torch first, from its own spec, so that no dependency drags in a multi-GB CUDA build.
# mediapipe pulls opencv-contrib-python and we ask for opencv-python-headless: both own
# `cv2/`, and whichever is written last wins. Remove all OpenCV wheels, then install the
# headless one alone, so that exactly one distribution owns cv2 (tests/test_install.py).
UV := $(VENV)/bin/uv
FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
UV_INSTALL = $(UV) pip install -q --python $(PY) $(addprefix --find-links ,$(FIND_LINKS))
$(STAMP): pyproject.toml Makefile hygie_w2l/_kernels.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	test -x $(UV) || $(PY) -m pip install -q "uv>=0.5"
	$(UV_INSTALL) "$(TORCH_SPEC)"
	$(UV_INSTALL) -e ".[dev,onnx]"
	$(UV) pip uninstall -q --python $(PY) opencv-contrib-python opencv-python opencv-python-headless
	$(UV_INSTALL) --no-deps --reinstall "opencv-python-headless>=4.9,<4.12"
	$(PY) -c "import cv2, mediapipe, torch, faiss, scipy; cv2.seamlessClone"
	touch $(STAMP)

# The web page's extra (Gradio, and Selenium for its browser test), added to .venv without
# re-resolving the rest (numpy stays < 2 for mediapipe; OpenCV is left as installed).
UI_STAMP := $(VENV)/.installed-ui
$(UI_STAMP): $(STAMP)
	$(UV_INSTALL) "gradio>=6,<7" "selenium>=4.20,<5" "numpy<2"
	$(PY) -c "import gradio, selenium, cv2, mediapipe; cv2.seamlessClone"
	touch $(UI_STAMP)

install-ui: $(UI_STAMP)

ui: $(UI_STAMP)
	$(VENV)/bin/hygie-w2l ui

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

demo: $(STAMP)
	bash scripts/demo.sh

download-weights: $(STAMP)
	$(VENV)/bin/hygie-w2l weights download

lint: $(STAMP)
	$(VENV)/bin/ruff check hygie_w2l tests scripts

typecheck: $(STAMP)
	$(VENV)/bin/mypy hygie_w2l

bench: $(STAMP)
	$(PY) scripts/bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build hygie_w2l/*.so
