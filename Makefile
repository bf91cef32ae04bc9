# Two commands do everything on a fresh machine: `make demo` and `make test`.
# They create .venv, install the pinned Python packages and the Debian packages umtune needs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The built-in datasets: single chorale voices at 8 kHz (the `cpu` recipe's), and the same
# pieces as four-voice chorales at 8 kHz (the harder task, reported beside it).
LINES_DATA ?= data/lines8k
FOUR_VOICE_DATA ?= data/bach8k
DEMO_DATA ?= $(LINES_DATA)
APT_PACKAGES := fluidsynth fluid-soundfont-gm chromium openssh-server openssh-client rsync netcat-openbsd gcc
SYSTEM_COMMANDS := fluidsynth chromium /usr/sbin/sshd ssh rsync nc cc
SOUNDFONT := /usr/share/sounds/sf2/FluidR3_GM.sf2

.PHONY: setup system-deps test test-slow lint demo translation-results translation-curve ablation \
	gpu-check clean

setup: $(STAMP) system-deps

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# FluidSynth and the General MIDI SoundFont render the built-in Bach dataset; headless
# Chromium opens the sweep report in its test (tests/test_report.py); sshd, ssh, rsync and nc
# let `ray up` launch a cluster on this machine in its test (tests/test_ray_up.py); gcc builds
# the compiled generation step and the training gate and cross-entropy (umtune/trainable/
# fused_step.c, kernels.c) on first use.
system-deps:
	@missing=$$(for c in $(SYSTEM_COMMANDS); do command -v $$c >/dev/null || echo $$c; done); \
	if [ -n "$$missing" ] || [ ! -f $(SOUNDFONT) ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "need root to apt-get install $(APT_PACKAGES)"; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PACKAGES); \
	fi

lint: setup
	$(VENV)/bin/ruff check umtune tests benchmarks docs

# Everything: the fast tests, then the slow ones (real Ray clusters): 11-12 minutes on 2 cores of
# an AVX-512 EPYC (Zen 5), 22-26 on 2 of an AVX2-only one (Zen 3), where the slow tests train in fp32.
test: setup lint
	$(PY) -m pytest -q
	$(PY) -m pytest -q -m slow

test-slow: setup
	$(PY) -m pytest -q -m slow

# The demo sweep: 6 trials of the `cpu` recipe over lambda and the augmentation range (Optuna +
# ASHA) on the built-in chorale lines, two at a time on 2 cores; prints the results table and
# the report's path (its gallery plays the best trial's translations).
DEMO_SWEEP := demo-$(shell date +%Y%m%d-%H%M%S)
DEMO_MINUTES ?= 2

$(LINES_DATA)/manifest.json: | setup
	$(VENV)/bin/umtune data chorales --lines --sample-rate 8000 --out $(LINES_DATA)

$(FOUR_VOICE_DATA)/manifest.json: | setup
	$(VENV)/bin/umtune data chorales --sample-rate 8000 --out $(FOUR_VOICE_DATA)

demo: setup $(DEMO_DATA)/manifest.json
	$(VENV)/bin/umtune sweep --space lambda-aug --samples 6 --search optuna --scheduler asha \
		--preset cpu --grace-epochs 2 --set train.steps_per_epoch=20 \
		--minutes-per-trial $(DEMO_MINUTES) --data $(DEMO_DATA) --storage sweeps --name $(DEMO_SWEEP)
	$(VENV)/bin/umtune report sweeps/$(DEMO_SWEEP) -o reports/$(DEMO_SWEEP).html

# The translation recipe (docs/results.md): the `cpu` preset trained for RESULTS_MINUTES
# minutes of training steps on this machine (eager: on the CPU the eager step is now faster than
# the compiled one, docs/speed.md), then evaluated on held-out clips;
# writes the results table against the translation targets to results/cpu.md, and the same
# model's translations of four-voice chorales to results/cpu-four-voice.md.
RESULTS_MINUTES ?= 60
RESULTS_RUN ?= runs/cpu-$(shell date +%Y%m%d-%H%M%S)

translation-results: setup $(LINES_DATA)/manifest.json $(FOUR_VOICE_DATA)/manifest.json
	$(VENV)/bin/umtune train --preset cpu --data $(LINES_DATA) --minutes $(RESULTS_MINUTES) \
		--keep-every $(CURVE_EVERY) --out $(RESULTS_RUN)
	$(VENV)/bin/umtune evaluate $(RESULTS_RUN) --clips 4 --seeds 2 --table results/cpu.md
	$(VENV)/bin/umtune evaluate $(RESULTS_RUN) --data $(FOUR_VOICE_DATA) --clips 2 \
		-o $(RESULTS_RUN)/eval-four-voice --table results/cpu-four-voice.md

# What more compute buys: the run of translation-results (RESULTS_RUN=runs/cpu-...) resumed to
# CURVE_MINUTES of training, keeping a checkpoint every CURVE_EVERY minutes, then every kept
# checkpoint evaluated as translation-results does; writes results/cpu-curve.md.
CURVE_MINUTES ?= 180
CURVE_EVERY ?= 30

translation-curve: setup $(LINES_DATA)/manifest.json
	@test -f "$(RESULTS_RUN)/run.json" || { echo "translation-curve: set \
		RESULTS_RUN to the run of translation-results (runs/cpu-...)"; exit 2; }
	$(VENV)/bin/umtune train --resume $(RESULTS_RUN) --minutes $(CURVE_MINUTES) \
		--keep-every $(CURVE_EVERY)
	$(VENV)/bin/umtune evaluate $(RESULTS_RUN)/checkpoints/* --clips 4 --seeds 2 \
		--table results/cpu-curve.md

# The paper's ablation with the `cpu` preset: lambda off and on x augmentation off and on (the
# preset's values), each from two training seeds: 8 trials, two at a time on one core each,
# ABLATION_MINUTES of training each, every trial evaluated on 2 clips per pair with 2 seeds;
# writes the report to reports/ (not committed: it embeds plotly.js and audio) and
# results/ablation.md (does each component help by more than the spread over seeds?).
ABLATION_MINUTES ?= 20
ABLATION_SWEEP := ablation-$(shell date +%Y%m%d-%H%M%S)

ablation: setup $(LINES_DATA)/manifest.json
	$(VENV)/bin/umtune sweep --space ablation --search grid --scheduler none --preset cpu \
		--cpus-per-worker 1 --minutes-per-trial $(ABLATION_MINUTES) --eval-clips 2 --eval-seeds 2 \
		--data $(LINES_DATA) \
		--storage sweeps --name $(ABLATION_SWEEP)
	$(VENV)/bin/umtune report sweeps/$(ABLATION_SWEEP) --clips 1 -o reports/$(ABLATION_SWEEP).html --table results/ablation.md

# The GPU check (benchmarks/gpu_check.py): the paper preset's step, generation, DDP over nccl
# and the fast tests on this machine's NVIDIA GPUs; on a CPU-only machine its CPU part, then it
# says the GPU part was skipped (exit 0). It installs nothing and needs no Ray: it runs with
# .venv's python where `make setup` made one, else with python3 and the torch already there.
GPU_CHECK_PY := $(if $(wildcard $(PY)),$(PY),python3)

gpu-check:
	$(GPU_CHECK_PY) benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
