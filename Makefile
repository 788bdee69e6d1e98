# Two commands do all set-up on a fresh clone:  `make demo`  and  `make test`.
# Both create .venv when it is missing (or when pyproject.toml / constraints.txt changed).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
CORES ?= 2
# constraints.txt pins torch==2.13.0 so this machine class gets the CPU build from local disk.
# On a GPU cluster: `make install TORCH_CONSTRAINT=` installs the CUDA build your index serves.
TORCH_CONSTRAINT ?= constraints.txt
PYTEST_ARGS ?=

.PHONY: install demo test check test-dag bench clean-demo

$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python >= 3.11 is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(TORCH_CONSTRAINT),-c $(TORCH_CONSTRAINT)) -e '.[test]'
	touch $@

install: $(VENV)/.installed

# After a killed run (a closed laptop, kill -9) the next `make demo` just works: pipeline.stale_lock removes the lock
# the dead Snakemake left (only when no Snakemake or pipeline job works in this folder any more), and
# --rerun-incomplete redoes the jobs that were running instead of stopping with IncompleteFilesException (the
# profiles set the same); preprocess keeps its finished recordings across the rerun.
demo: $(VENV)/.installed
	$(PY) -m pipeline.stale_lock .
	$(VENV)/bin/snakemake all --cores $(CORES) --printshellcmds --rerun-incomplete --configfile config/demo.yaml

# Two pytest workers (pytest-xdist): most slow tests wait on subprocesses (Snakemake, torchrun, SLURM) half the
# time. Tests that share one finished workdir carry one xdist_group mark and run on one worker.
test: $(VENV)/.installed
	$(PY) -m pytest -n $(CORES) --dist loadgroup --no-loadscope-reorder --durations=25 $(PYTEST_ARGS)

# The quick local loop: everything not marked slow (no workflow runs, no multi-process or long training).
check: $(VENV)/.installed
	$(PY) -m pytest -m "not slow" -n $(CORES) --dist loadgroup --no-loadscope-reorder -q $(PYTEST_ARGS)

bench: $(VENV)/.installed
	$(PY) benchmarks/readers.py
	$(PY) benchmarks/preprocess.py

clean-demo:
	rm -rf results/demo

# The workflow tests' tiny DAG (.test/config.yaml) in this checkout: the demo EEG first (its PhysioNet recording is
# read as user data, with no fetch rule in front of it), then every rule, into results/test/.
test-dag: $(VENV)/.installed
	$(PY) -m pipeline.stale_lock .
	$(VENV)/bin/snakemake fetch_demo_corpus --cores $(CORES) --configfile .test/config.yaml
	$(VENV)/bin/snakemake all --cores $(CORES) --printshellcmds --rerun-incomplete --configfile .test/config.yaml
