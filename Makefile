# The two commands of the README. Each creates the virtual environment on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): setup.cfg pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh $(VENV)
	touch $(STAMP)

# One training process per core (DistributedDataParallel over gloo): twice the throughput of one
# process with two threads on this kind of machine. DEMO_PROCS=1 runs a single process;
# DEMO_ARGS passes recipe arguments (`make demo DEMO_ARGS=--resume` continues an interrupted run).
DEMO_PROCS ?= 2
DEMO_ARGS ?=
demo: $(STAMP)
	$(VENV)/bin/torchrun --standalone --nproc_per_node $(DEMO_PROCS) recipes/vctk/train.py --demo $(DEMO_ARGS)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/audio-vqvae bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
