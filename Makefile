# The two commands of the README: `make demo` (install, then the main job on the bundled fixtures)
# and `make test` (install, then the test suite). Both are safe to rerun. stemdb needs no system package (audio is
# decoded in-process: no ffmpeg); `make install` also installs Chromium for the tests' browser checks when it is
# missing (as root on Debian/Ubuntu; otherwise it prints the command, and those tests skip).
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
OUT     ?= work/demo

.PHONY: install system-packages demo test test-all lint clean gpu-kit

$(BIN)/stemdb: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# CPU torch first: a plain `torch` requirement would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/stemdb

install: $(BIN)/stemdb system-packages

system-packages:
	@.ci/system-packages

demo: install
	$(BIN)/python -m pipelines.demo --out $(OUT)

test: install
	$(BIN)/python -m pytest -q

test-all: install
	$(BIN)/python -m pytest -q -m "not gpu"

lint: install
	$(BIN)/ruff check stemdb augment pipelines train tests bench

# Wheels (.whl/) and the packed training pool (.pool/) for bench/gpu/suite.sh on a bare GPU machine.
gpu-kit: install
	$(BIN)/python bench/gpu/kit.py build

clean:
	rm -rf work .pytest_cache .ruff_cache
