# helm-mrna: the two commands a fresh machine needs are `make smoke` (main job) and `make test` (tests).
# Every target sets up what it needs first; re-running is cheap (stamps in .venv/).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2
# torch and torchvision are pinned together and installed before anything that imports torch (timm needs
# a matching torchvision; an unpinned torch would pull a multi-GB build).
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
SLURM_PKGS := slurmctld slurmd slurm-client munge
# Tools the Python package calls as programs: MMseqs2 (`mmseqs`) for similarity splits (config/datasets.yaml).
SYSTEM_PKGS := mmseqs2

.PHONY: install smoke study test test-fast lint bench slurm-deps slurm-profile system-deps clean help plan rerun

help:
	@echo "make install - set up only: .venv with pinned torch, helm-mrna (editable) and its dev tools; then"
	@echo "               source .venv/bin/activate (helm, train.py, pytest, snakemake)"
	@echo "make smoke   - set up, then run the smoke grid end to end -> results/tables.csv + results/report.html"
	@echo "make study   - set up, then run the laptop study (config/study.yaml, ~1.5 h on 2 cores) -> docs/results/study/"
	@echo "make test    - set up (venv, mmseqs2 and local Slurm packages when root), then run the whole test suite"
	@echo "make slurm-profile ACCOUNT=... PARTITION=gpu CPU_PARTITION=cpu - install the site Slurm profile (snakemake --profile slurm)"
	@echo "make plan [PROFILE=slurm] [CONFIG=...] - price a grid: jobs per rule, GPU-hours and CPU-hours it reserves"
	@echo "make rerun RUN=<run id> [PROFILE=slurm] [CONFIG=...] - retrain one run from scratch and redo what read it"
	@echo "make test-fast / lint / bench / clean"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/pip install -q $(TORCH_PINS)
	touch $@

# the design extra (ViennaRNA, DNA Chisel, python-codon-tables: `helm design`) too, so its tests run
$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(BIN)/pip install -q -e ".[dev,design]" $(TORCH_PINS)
	touch $@

install: $(VENV)/.installed

# A real single-node Slurm for the workflow's Slurm test (Debian packages; needs root, skipped otherwise).
slurm-deps:
	@if command -v slurmctld >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(SLURM_PKGS) for the local Slurm test"; \
		(apt-get install -y -qq $(SLURM_PKGS) >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(SLURM_PKGS) >/dev/null 2>&1)) || \
		echo "could not install $(SLURM_PKGS): the Slurm test will skip"; \
	else echo "not root or no apt-get: the Slurm test will skip"; fi

# The site part of the Slurm profile (executor, account, default partition) in ~/.config/snakemake/slurm/, never
# overwriting one that exists; per-rule GPUs, memory and runtime stay in the config's `resources`.
# SLURM_SET="key=value ..." adds other site settings (e.g. slurm-status-command=squeue where sacct is absent).
# CPU_PARTITION: CPU-only jobs (data, baselines, ridge/linear heads) go there, GPU jobs to PARTITION (the slurm
# plugin picks between the two per job from a partitions file written beside the profile).
ACCOUNT ?=
PARTITION ?=
CPU_PARTITION ?=
GPUS_PER_NODE ?= 8
SLURM_SET ?=
slurm-profile: install
	$(BIN)/python workflow/scripts/slurm_profile.py --account "$(ACCOUNT)" --partition "$(PARTITION)" \
		--cpu-partition "$(CPU_PARTITION)" --gpus-per-node $(GPUS_PER_NODE) $(foreach s,$(SLURM_SET),--set $(s))

# Price a grid before launching it, and retrain one run (workflow/scripts/plan.py, rerun.py). PROFILE: a profile
# name or folder (slurm = the site profile); CONFIG: a config file replacing the paper grid; ARGS: targets, flags.
PROFILE ?= workflow/profiles/default
CONFIG ?=
ARGS ?=
RUN ?=
# ARGS first: --configfile takes every word after it (a target after it would be read as a config file)
SNAKE_ARGS = $(ARGS) --profile $(PROFILE) $(if $(CONFIG),--configfile $(CONFIG))
plan: install
	$(BIN)/python workflow/scripts/plan.py $(SNAKE_ARGS)

rerun: install
	$(BIN)/python workflow/scripts/rerun.py --run "$(RUN)" $(SNAKE_ARGS)

# MMseqs2 for the similarity splits of `helm probe` / `helm baseline` (Debian package; needs root, else the user
# installs it: `conda install -c bioconda mmseqs2`; the mmseqs tests skip without it).
system-deps:
	@if command -v mmseqs >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(SYSTEM_PKGS)"; \
		(apt-get install -y -qq $(SYSTEM_PKGS) >/dev/null 2>&1 || \
		 (apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $(SYSTEM_PKGS) >/dev/null 2>&1)) || \
		echo "could not install $(SYSTEM_PKGS): similarity splits fail and the mmseqs tests skip"; \
	else echo "not root or no apt-get: install mmseqs2 yourself (conda install -c bioconda mmseqs2)"; fi

smoke: install system-deps
	$(BIN)/snakemake --profile workflow/profiles/default --configfile config/smoke.yaml --cores $(CORES)
	$(BIN)/snakemake --profile workflow/profiles/default --configfile config/smoke.yaml --cores $(CORES) \
		--report results/report.html
	@echo "results: $(CURDIR)/results/tables.csv"
	@echo "report:  $(CURDIR)/results/report.html"

# The laptop study (config/study.yaml): the same workflow, its outputs copied to docs/results/study/ (committed)
# with the resolved config, versions, machine and wall time per stage; the total wall time is appended here.
STUDY := docs/results/study
study: install system-deps
	@date +%s > .study-start
	$(BIN)/snakemake --profile workflow/profiles/default --configfile config/study.yaml --cores $(CORES)
	$(BIN)/snakemake --profile workflow/profiles/default --configfile config/study.yaml --cores $(CORES) \
		--report results/study/report.html
	@$(BIN)/python -c "import sys, pandas as pd; f = '$(STUDY)/stage_times.csv'; t = pd.read_csv(f); \
		t = t[t.stage != 'total']; t.loc[len(t)] = ['total', 'the two snakemake calls of make study', None, None, \
		float(sys.argv[1]), None]; t['jobs'] = t['jobs'].astype('Int64'); t.to_csv(f, index=False)" \
		$$(( $$(date +%s) - $$(cat .study-start) ))
	@rm -f .study-start
	@echo "study: $(CURDIR)/$(STUDY)/ (report: results/study/report.html)"

test: install slurm-deps system-deps
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakemake --lint --configfile config/smoke.yaml

bench: install
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf results .snakemake .pytest_cache .ruff_cache
