# The user's verbs. Every target installs into .venv first if needed.
#   make train        build the default simulated dataset (if missing), train, evaluate
#                     (RUN_DIR=runs/uma2_default, TRAIN_ARGS='--nsdn=false --epochs=3' ...)
#   make train-distributed  the same on a local multi-worker job: WORKERS processes on 127.0.0.1
#                     (STRATEGY=parameter_server PS=2 for parameter servers; see pipelines/launch.py)
#   make test         the linter (ruff), then the test suite (tiny data) on TEST_WORKERS pytest
#                     processes (2; 0 = one process)
#   make data         build the simulated dataset DATASET (default: default); a world of your own:
#                     make data DATASET=noisy SIM_ARGS="--base=default --simulator.ranking_noise=2"
#   make export       SavedModels of RUN_DIR -> EXPORT_DIR/<version>/ (query, ScaNN, brute force)
#   make serve        REST server (TF Serving's API) for EXPORT_DIR on 127.0.0.1:8501
#   make bench        benchmarks -> reports/bench.json (ONLY=sampling runs one part; ONLY=paper,
#                     never run by default: make data/train/export DATASET=paper and serving,
#                     stage by stage, ~35 min -> reports/paper_scale.md)
#   make experiment   the paper's Table 1 on DATASET -> reports/experiment_<DATASET>[_quick]/
#                     (EXPERIMENT_ARGS=--quick: the ~30 min grid; the full one takes hours;
#                     --cost_only: what it would cost, measured per cell, in minutes)
#   make ablation     where UMA²'s gain comes from, across worlds whose legacy pipeline knows
#                     less and less of the truth (ABLATION_WORLDS; built if missing)
#                     -> reports/ablation[_quick]/ (EXPERIMENT_ARGS as for experiment)
#   make autosample   search the negative sampler DATASET and TOWER want among CANDIDATES
#                     (empty: the default set) within BUDGET epochs of training steps (empty:
#                     the search's default, 4), one
#                     search per seed of SEEDS -> reports/autosample_<DATASET>_<TOWER>/
#                     (seed<N>/ is an ordinary run dir: make export RUN_DIR=...; AUTOSAMPLE_ARGS
#                     e.g. --grid_dir=reports/samplers_default to compare with the candidates' grid)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= $(HOME)/tensorflow_datasets
DATASET ?= default
ONLY ?=
RUN_DIR ?= runs/uma2_$(DATASET)
EXPORT_DIR ?= exports/uma2_$(DATASET)
MODEL_NAME ?= uma2
# What a dataset's run needs beyond TrainConfig's defaults. `paper` (1.63M users, 6x default's
# positives per epoch): lazy Adam, since Adam's update of every user row is a third of the step;
# 3 epochs, each as many steps as 6 of default's; a backup every 500 steps, since one write of its
# tables takes 3 s (every 50 steps: a quarter of the training time). README, "Paper scale".
TRAIN_ARGS_paper := --optimizer=lazy_adam --epochs=3 --backup_every_steps=500
TRAIN_ARGS ?= $(TRAIN_ARGS_$(DATASET))
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
EXPERIMENT_ARGS ?=
SIM_ARGS ?=
TOWER ?= youtube_dnn
CANDIDATES ?=
BUDGET ?=
SEEDS ?= 0
AUTOSAMPLE_ARGS ?=
WORKERS ?= 2
PS ?= 2
STRATEGY ?= multi_worker
# The worlds of `make ablation`, from logs that know the true affinity to logs that know none of
# it; `learned` is a pipeline that learned its recall and ranking from its own clicks.
ABLATION_WORLDS ?= noise_0 default noise_2 noise_inf learned
WORLD_ARGS_noise_0 := --base=default --simulator.old_model_noise=0 --simulator.ranking_noise=0
WORLD_ARGS_noise_2 := --base=default --simulator.old_model_noise=2 --simulator.ranking_noise=2
WORLD_ARGS_noise_inf := --base=default --simulator.old_model_noise=inf --simulator.ranking_noise=inf
comma := ,
empty :=
space := $(empty) $(empty)

.PHONY: install data train train-distributed export serve test bench experiment ablation autosample \
	clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

data: install
	$(PY) -m pipelines.simulate --config=$(DATASET) --data_dir=$(DATA_DIR) $(SIM_ARGS)

train: data
	$(PY) -m pipelines.train --dataset=uma2_simulated/$(DATASET) --data_dir=$(DATA_DIR) \
	  --output_dir=$(RUN_DIR) $(TRAIN_ARGS)

train-distributed: data
	$(PY) -m pipelines.launch --strategy=$(STRATEGY) --workers=$(WORKERS) --ps=$(PS) -- \
	  --dataset=uma2_simulated/$(DATASET) --data_dir=$(DATA_DIR) --output_dir=$(RUN_DIR)_$(STRATEGY) \
	  $(TRAIN_ARGS)

export: install
	$(PY) -m pipelines.export --run_dir=$(RUN_DIR) --export_dir=$(EXPORT_DIR) --model_name=$(MODEL_NAME)

serve: install
	$(PY) -m pipelines.serve --export_dir=$(EXPORT_DIR) --model_name=$(MODEL_NAME)

test: install
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: install
	$(PY) -m pipelines.bench --data_dir=$(DATA_DIR) $(if $(ONLY),--only=$(ONLY))

experiment: data
	$(PY) -m pipelines.experiment --dataset=uma2_simulated/$(DATASET) --data_dir=$(DATA_DIR) \
	  $(EXPERIMENT_ARGS)

ablation: install
	$(foreach world,$(ABLATION_WORLDS),$(PY) -m pipelines.simulate --config=$(world) \
	  --data_dir=$(DATA_DIR) $(WORLD_ARGS_$(world)) &&) true
	$(PY) -m pipelines.experiment --table=ablation --data_dir=$(DATA_DIR) \
	  --datasets=$(subst $(space),$(comma),$(foreach world,$(ABLATION_WORLDS),uma2_simulated/$(world))) \
	  $(EXPERIMENT_ARGS)

autosample: data
	$(PY) -m pipelines.autosample --dataset=uma2_simulated/$(DATASET) --data_dir=$(DATA_DIR) \
	  --tower=$(TOWER) --seeds=$(SEEDS) $(if $(BUDGET),--budget=$(BUDGET)) \
	  $(if $(CANDIDATES),--candidates=$(CANDIDATES)) $(AUTOSAMPLE_ARGS)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
