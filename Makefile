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

.PHONY: install demo test bench clean cpp

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
test: $(TEST) cpp
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy
	sh scripts/ensure-chromium.sh
	ctest --test-dir cpp/build --output-on-failure
	$(PY) -m pytest -q

# The C++ twin (cpp/build/handgrad-cpp); installs cmake, Eigen, nlohmann-json, doctest when missing.
cpp:
	sh scripts/ensure-cpp-deps.sh
	cmake -S cpp -B cpp/build -DCMAKE_BUILD_TYPE=Release
	cmake --build cpp/build -j2

bench: $(TEST) cpp
	$(PY) -m benchmarks distributed
	$(PY) -m benchmarks threads --repeats 3 --max-steps 100
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) runs build *.egg-info src/*.egg-info cpp/build
