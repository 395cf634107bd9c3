# imgidx — `make help` lists the targets. CI runs `bash .ci/run`, which runs `make install` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2
export NO_PROXY := 127.0.0.1,localhost

.PHONY: help install test test-all test-fast test-long test-ray test-wheel test-loaders lint format demo quality bench-load clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/python  ## create .venv and install imgidx with its dev tools and the Ray extra (editable)
	$(BIN)/python -m pip install -q -e ".[dev,ray]"

test: install  ## the test suite CI runs (offline; real Keras; a kill/resume of a build on every default; not network, not long)
	$(BIN)/python -m pytest -m "not network and not ray and not torch" -q --durations=15

test-fast: install  ## skip the tests that build the VGG16 graph
	$(BIN)/python -m pytest -m "not slow and not network and not ray and not torch" -q

test-long: install  ## only the `long` tests (CI runs them after make test): kill/resume seeds, fc2, bombs, timeouts
	IMGIDX_LONG_TESTS=1 $(BIN)/python -m pytest -m "long and not network and not torch" -q --durations=15

test-ray: install  ## only the `ray` tests (CI runs them after make test-long): --engine ray on a real local Ray
	$(BIN)/python -m pytest -m "ray and not network" -q --durations=15

test-wheel:  ## the package as users get it: plain `pip install .` in a fresh venv, then build/similar/serve from /tmp
	$(PY) tests/wheel_smoke.py

test-loaders: install  ## only the `torch` tests (CI runs them after make test-ray): exports through torch's DataLoader
	$(BIN)/python -m pip install -q "torch==2.13.0"  # the CPU wheel (never the default install: the CUDA one is ~5 GB)
	$(BIN)/python -m pytest -m "torch and not network" -q --durations=15

test-all: install  ## everything, including the real Flickr API (tests/test_flickr_live.py: IMGIDX_LIVE=1 FLICKR_API_KEY=… FLICKR_API_SECRET=…)
	$(BIN)/python -m pytest -q

lint: install  ## ruff check + format check
	$(BIN)/ruff check imgidx indexer search tests bench
	$(BIN)/ruff format --check imgidx indexer search tests bench

format: install  ## apply ruff's fixes and formatting
	$(BIN)/ruff check --fix imgidx indexer search tests bench
	$(BIN)/ruff format imgidx indexer search tests bench

demo: install  ## offline demo: generate photos, build an index from them, run `imgidx similar`
	$(BIN)/imgidx demo

bench: install  ## measure speed (tables + bench/results.json; BENCH="--quick" or "--only search" to narrow)
	$(BIN)/python -m bench.run $(BENCH)

clean:  ## remove caches (keeps .venv and data/)
	rm -rf .pytest_cache .ruff_cache build *.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +

quality: install  ## clean/classify/audit quality on the real photos in ../shared (writes bench/out/quality.json)
	$(BIN)/python -m bench.quality
	$(BIN)/python -m bench.duplicates  # duplicates: 100 photos x 4 edits among the 2,000 (bench/out/duplicates.json)
	$(BIN)/python -m bench.precision_gate  # each precision this CPU offers vs fp32 on outcomes (bench/out/precision_gate.json)

bench-load: install  ## load test of `imgidx serve`: 50 clients for 15 s on loopback (p50/p99, req/s, errors)
	$(BIN)/python -m bench.load --clients 50 --duration 15 --json bench/out/load.json
