# Two commands do all the set-up: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HASH   := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
CLI    := $(VENV)/.installed-cli-$(HASH)
TEST   := $(VENV)/.installed-test-$(HASH)

# Shared MNIST / Fashion-MNIST files, when this checkout sits beside them.
SHARED_DATA := $(wildcard ../shared/data)
ifneq ($(SHARED_DATA),)
export HANDGRAD_DATA_DIR ?= $(abspath $(SHARED_DATA))
endif

.PHONY: install demo test bench clean cpp cpp-sanitize

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# The CLI alone (NumPy, safetensors, tqdm, matplotlib, scikit-learn, Pillow) for the demo.
$(CLI): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --disable-pip-version-check -q -e '.[cli]'
	rm -f $(VENV)/.installed-cli-*
	touch $@

# Everything the tests need: the CLI, PyTorch (torch==2.13.0, the CPU build), pytest.
$(TEST): pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install --disable-pip-version-check -q -e '.[test]'
	rm -f $(VENV)/.installed-test-* $(VENV)/.installed-cli-*
	touch $@ $(CLI)

install: $(CLI)

demo: $(CLI)
	$(VENV)/bin/handgrad train --dataset digits --layers conv16-maxpool-conv32-fc64 --epochs 12 --batch-size 32 \
		--out runs/demo --overwrite

# Lint, format and types first: a new violation fails the build before the long test run.
# The pytest run includes the C++ fuzz test, through both builds (tests/test_cpp_robustness.py); two
# workers (pytest-xdist), each taking whole test files, in the order tests/conftest.py sets (the long
# files first, so neither worker is left with one at the end).
test: $(TEST) cpp cpp-sanitize
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	@# The kernels most tests run compile into Numba's cache on the core mypy and ctest leave free,
	@# so the two pytest workers load them instead of both compiling them (scripts/warm_kernels.py).
	$(PY) scripts/warm_kernels.py & warm=$$!; \
	$(VENV)/bin/mypy && sh scripts/ensure-chromium.sh && \
	ctest --test-dir cpp/build --output-on-failure && ctest --test-dir cpp/build-sanitize --output-on-failure; \
	status=$$?; wait $$warm || echo "warm_kernels.py failed: the tests compile the kernels themselves"; exit $$status
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder

# The C++ twin (cpp/build/handgrad-cpp); installs cmake, Eigen, nlohmann-json, doctest, stb when missing.
# Its doctest suites are built and run by cpp-sanitize (for `make test`); CPP_TESTS=ON builds them here too.
CPP_TESTS ?= OFF
cpp:
	sh scripts/ensure-cpp-deps.sh
	cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release -DHANDGRAD_TESTS=$(CPP_TESTS)
	cmake --build cpp/build -j2

# The same library, tests and fuzz harness under AddressSanitizer and UndefinedBehaviorSanitizer (-O0),
# for `make test` only: slow code, every finding fatal.
cpp-sanitize:
	sh scripts/ensure-cpp-deps.sh
	cmake -S cpp -B cpp/build-sanitize -DCMAKE_BUILD_TYPE=Release -DHANDGRAD_SANITIZE=ON
	cmake --build cpp/build-sanitize -j2

bench: $(TEST) cpp
	$(PY) -m benchmarks distributed
	$(PY) -m benchmarks threads --repeats 3 --max-steps 100
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info cpp/build cpp/build-sanitize
