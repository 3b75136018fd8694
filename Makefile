# hygie-w2l: every target does its own set-up (a .venv here), idempotently.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test demo download-weights lint typecheck bench clean

install: $(STAMP)

# torch first, from its own spec, so that no dependency drags in a multi-GB CUDA build.
# mediapipe pulls opencv-contrib-python and we ask for opencv-python-headless: both own
# `cv2/`, and whichever pip writes last wins. Remove all OpenCV wheels, then install the
# headless one alone, so that exactly one distribution owns cv2 (tests/test_install.py).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,onnx]"
	$(PY) -m pip uninstall -y -q opencv-contrib-python opencv-python opencv-python-headless
	$(PY) -m pip install -q --no-deps --force-reinstall "opencv-python-headless>=4.9,<4.12"
	$(PY) -c "import cv2, mediapipe, torch, faiss, librosa; cv2.seamlessClone"
	touch $(STAMP)

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
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
