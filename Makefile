# `make demo` and `make test` create .venv on first use, install the package (editable) and run.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
DATASET ?= cifar10
DATA_DIR ?=

.PHONY: demo demo-photos test lab tensorboard reproduce clean-venv

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e '.[dev]'
	# Register the venv's kernel so JupyterLab and papermill run notebooks with this environment.
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (amdim workbook)"
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m amdim_lib demo --out runs/demo

# Training and evaluation (04, 05) on CIFAR-10 photographs at the demo preset: fetches CIFAR-10 (170 MB)
# into data/cifar10/ where a network allows; about 10 minutes of training on 2 CPU cores (float32).
demo-photos: $(STAMP)
	$(PY) -m amdim_lib demo --dataset cifar10 --download $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

test: $(STAMP)
	$(PY) -m pytest

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

# Every training run writes TensorBoard events in <run>/tensorboard/: watch them live at http://127.0.0.1:6006.
tensorboard: $(STAMP)
	$(VENV)/bin/tensorboard --logdir runs --host 127.0.0.1 --port 6006

reproduce: $(STAMP)
	$(PY) -m amdim_lib reproduce --dataset $(DATASET) $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

clean-venv:
	rm -rf $(VENV)
