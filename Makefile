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

.PHONY: install serve test redis gpu-check bench clean

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN)
	$(PIP) install -q -e '.[dev]' $(MLX_EXTRA)
	touch $@

install: $(VENV)/.installed

serve: install
	$(PY) -m tkr_embed.cli serve

# redis-server is needed by the shared rate-limit tests; install it from the OS packages when missing.
redis:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq redis-server >/dev/null; \
	  elif command -v brew >/dev/null 2>&1; then brew install redis; \
	  else echo "redis-server not found and no apt-get/brew to install it" >&2; exit 1; fi; }

test: install redis
	$(PY) -m pytest -q

gpu-check: install
	$(PY) -m pytest -q -m gpu tests

clean:
	rm -rf $(VENV) .pytest_cache
