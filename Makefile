# Two commands for a fresh Linux or macOS machine:
#   make serve   set everything up in .venv, then serve (the demo checkpoint when no model is configured)
#   make test    set everything up in .venv (and a local redis-server), then run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
UNAME_S := $(shell uname -s)
UNAME_M := $(shell uname -m)
TORCH_PIN := torch==2.13.0

ifeq ($(UNAME_S),Darwin)
  ifeq ($(UNAME_M),arm64)
    MLX_EXTRA := 'mlx>=0.26' 'mlx-lm>=0.26'
  endif
else
  # Linux: mlx's CPU build lets the MLX backend run (and be tested) without Apple hardware.
  MLX_EXTRA := 'mlx[cpu]>=0.26'
endif

.PHONY: install serve test services gpu-check clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[dev]' $(MLX_EXTRA)
	touch $@

install: $(VENV)/.installed

serve: install
	$(PY) -m tkr_embed.cli serve

# The tests run against real servers: redis-server (shared rate limits) and PostgreSQL (the key store
# on a database URL). Install them from the OS packages when missing.
services:
	@need=""; command -v redis-server >/dev/null 2>&1 || need="$$need redis-server"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need="$$need postgresql"; \
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

clean:
	rm -rf $(VENV) .pytest_cache
