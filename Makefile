# The two commands of the README. Each creates the virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint bench clean

$(STAMP): setup.cfg pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)
	touch $(STAMP)

# One training process per core (DistributedDataParallel over gloo): twice the throughput of one
# process with two threads on this kind of machine. DEMO_PROCS=1 runs a single process;
# DEMO_ARGS passes recipe arguments (`make demo DEMO_ARGS=--resume` continues an interrupted run).
# Our launcher, not torchrun: the recipe's one-line errors and a Ctrl-C's clean stop reach the terminal
# without the elastic agent's tracebacks (audio_vqvae/training/launch.py says why). Not echoed (@):
# the recipe prints what it does.
DEMO_PROCS ?= 2
DEMO_ARGS ?=
demo: $(STAMP)
	@$(PY) -m audio_vqvae.training.launch --processes $(DEMO_PROCS) recipes/vctk/train.py --demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

# pyflakes, import order and 120-character lines (pyproject.toml); CI runs it before the tests.
lint: $(STAMP)
	$(VENV)/bin/ruff check .

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/audio-vqvae bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
