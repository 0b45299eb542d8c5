# Two commands for a fresh Linux or macOS machine:
#   make serve   install the server's runtime packages in .venv, then serve (the demo checkpoint when no model is configured)
#   make test    install those and the test toolchain in .venv (and a local redis-server), then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
UNAME_S := $(shell uname -s)
UNAME_M := $(shell uname -m)

# Every package comes from the platform's lock (scripts/lock.py; `make lock` refreshes it), with its hashes:
# SERVE_LOCK holds what the server runs on, LOCK adds the test toolchain, with the same pins.
ifeq ($(UNAME_S),Darwin)
  PLATFORM := macos-$(UNAME_M)
else
  PLATFORM := linux-$(UNAME_M)
endif
LOCK := requirements/lock-$(PLATFORM).txt
SERVE_LOCK := requirements/serve-$(PLATFORM).txt
# The Linux lock pins torch's CPU build, which PyTorch publishes on its own index, not on PyPI. pip looks
# there, unless its own configuration names find-links (where our CI machines keep that wheel on disk).
PIP_HAS_FIND_LINKS := $(shell $(PYTHON) -m pip config list 2>/dev/null | grep -ci find-links)
TORCH_FIND_LINKS ?= $(if $(filter linux-%,$(PLATFORM)),$(if $(filter 0,$(PIP_HAS_FIND_LINKS)),https://download.pytorch.org/whl/cpu/torch/))

.PHONY: install install-serve check-lock lock serve test services gpu-check gpu-wheels clean

check-lock:
	@[ -f $(LOCK) ] || { echo "error: no lock for $(PLATFORM) ($(LOCK)); the locked platforms: $$(ls requirements)" >&2; exit 1; }
	@$(PYTHON) scripts/lock.py check $(PLATFORM)

PIP_LOCKED := $(PIP) install --require-hashes --no-deps $(if $(TORCH_FIND_LINKS),--find-links $(TORCH_FIND_LINKS))

# The server alone: pip shows each package as it comes (torch, the largest, is a few hundred MB).
$(VENV)/.installed-serve: $(SERVE_LOCK) pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@echo "installing the server's $$(grep -c '^[a-z]' $(SERVE_LOCK)) runtime packages from $(SERVE_LOCK) into $(VENV)"
	$(PIP_LOCKED) --progress-bar on -r $(SERVE_LOCK)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@

# Everything the tests need besides: the full lock is a superset of the serve lock, with the same pins.
$(VENV)/.installed: $(LOCK) pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	@echo "installing $$(grep -c '^[a-z]' $(LOCK)) packages (the server and the test toolchain) from $(LOCK) into $(VENV)"
	$(PIP_LOCKED) -q -r $(LOCK)
	$(PIP) install -q --no-deps --no-build-isolation -e .
	touch $@ $(VENV)/.installed-serve

install-serve: check-lock $(VENV)/.installed-serve
install: check-lock $(VENV)/.installed

# Resolve pyproject.toml's dependencies again for every platform, keeping each pin that still fits.
lock:
	[ -x $(VENV)/bin/uv ] || { [ -x $(PY) ] || $(PYTHON) -m venv $(VENV); $(PIP) install -q "uv==$$(sed -n 's/^uv==\([^ ]*\).*/\1/p' $(LOCK))"; }
	$(PY) scripts/lock.py compile --uv $(VENV)/bin/uv

serve: install-serve
	$(PY) -m tkr_embed.cli serve

# The tests run against real servers: redis-server (shared rate limits) and PostgreSQL (the key store
# on a database URL), and drive the web console in Chromium (tests/console). Install them from the OS packages
# when missing; on macOS the console tests use Google Chrome or Chromium where installed, and skip otherwise.
services:
	@need=""; command -v redis-server >/dev/null 2>&1 || need="$$need redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need="$$need postgresql"; \
	[ "$(UNAME_S)" = Darwin ] || command -v chromium >/dev/null 2>&1 || need="$$need chromium"; \
	if [ -n "$$need" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$need >/dev/null; \
	  elif command -v brew >/dev/null 2>&1; then \
	    brew install $$(echo $$need | sed 's/redis-server/redis/'); \
	  else echo "need$$need and found no apt-get or brew to install them" >&2; exit 1; fi; \
	fi

test: install services
	TKR_TEST_SERVICES_REQUIRED=1 $(PY) -m pytest -q

# GPU checks (kernels vs plain torch, GPU vs CPU logits). Runs on a CUDA machine with whatever Python
# has torch + triton there (the venv when present); skipped cleanly where there is no GPU.
GPU_PY ?= $(shell [ -x $(PY) ] && echo $(PY) || echo python3)
gpu-check:
	PYTHONPATH=$(CURDIR) $(GPU_PY) -m pytest -q -m gpu -o asyncio_mode=strict -p no:cacheprovider tests/gpu

# The server's runtime packages as wheels for the GPU machine (Python 3.12, no internet there; it has its own
# torch, Triton, numpy and transformers), pinned and hashed as the Linux lock pins them: carry .whl/ with a run.
gpu-wheels:
	mkdir -p .whl
	$(PYTHON) scripts/lock.py wheels .whl/requirements.txt
	$(PYTHON) -m pip download -q --require-hashes --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_31_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl -r .whl/requirements.txt

clean:
	rm -rf $(VENV) .pytest_cache
