# The README's two commands: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo tour test test-fast bench lint warmup clean notebook pictures

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Reinstall when the dependency list changes.
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The main job: compile the kernels, then the embedded digits folder -> lr_find -> fine_tune
# -> ONNX fp32 + int8 -> one photo through the torch-free Predictor; report in runs/demo/.
demo: $(STAMP)
	$(PY) -m fastcore_cv warmup
	$(PY) -m fastcore_cv demo --out runs/demo

# The maths: each kernel against NumPy/torch, the lesson's SGD three ways, the MLP diagnostics.
tour: $(STAMP)
	$(PY) -m fastcore_cv tour --out runs/tour
	$(PY) examples/lesson_pictures.py --out runs/tour --html
	$(PY) examples/sgd_lesson.py --out runs/tour
	$(PY) examples/digits_mlp.py --out runs/tour

# The benchmarks also run here, once each and untimed, so none can rot (the transfer suite,
# minutes of fine-tuning, is left to `make bench`).
test: lint
	$(PY) -m pytest -q tests
	$(PY) -m pytest -q -p no:cacheprovider bench --benchmark-disable --ignore=bench/test_bench_transfer.py

# BENCH=bench/test_bench_matmul.py narrows the run; tables land in bench/RESULTS.md.
BENCH ?= bench
# pytest loads numpy before fastcore_cv can set OpenBLAS's spin timeout (thread policy):
# set it here so numpy's 2-thread BLAS does not spin against the Numba kernels.
bench: export OPENBLAS_THREAD_TIMEOUT := 4
bench: $(STAMP)
	mkdir -p .benchmarks
	$(PY) -m pytest -q $(BENCH) --benchmark-enable --benchmark-only --benchmark-json=.benchmarks/latest.json
	$(PY) bench/report.py .benchmarks/latest.json "make bench BENCH=$(BENCH)"
ifeq ($(BENCH),bench)
	$(PY) bench/thread_policy.py
	$(PY) bench/compile_cost.py
	$(PY) bench/server_load.py
	$(PY) bench/server_abuse.py
	$(PY) bench/predict_profile.py
	$(PY) bench/batch_predict.py
	$(PY) bench/scale_throughput.py
	$(PY) bench/lr_suggestion.py
	$(PY) bench/rejection.py
	$(PY) bench/finetune_speed.py
	$(PY) bench/partial_finetune.py
	$(PY) bench/ddp_measure.py
	$(PY) bench/ray_scoring.py
	$(PY) bench/clean_scoring.py
	$(PY) bench/install_sizes.py
endif

# The edit-run loop: lint, then every test not marked slow (no browser, server load, demo...).
test-fast: lint
	$(PY) -m pytest -q -m "not slow" tests

# The lesson's notebooks in Jupyter from .venv, on 127.0.0.1, in runs/notebooks/ (copies:
# the data and models they write stay out of the repo; your edited copies are kept).
notebook: $(STAMP)
	$(PY) -m pip install --quiet -e '.[jupyter]'
	mkdir -p runs/notebooks && cp -n notebooks/*.ipynb runs/notebooks/
	$(PY) -m jupyter notebook --ip=127.0.0.1 --notebook-dir=runs/notebooks

# Refresh the small pictures the README shows (docs/pictures/, each < 300 kB).
pictures: $(STAMP)
	$(PY) examples/lesson_pictures.py --out docs/pictures

warmup: $(STAMP)
	$(PY) -m fastcore_cv warmup

lint: $(STAMP)
	$(PY) -m ruff check fastcore_cv tests bench examples notebooks
	$(PY) -m ruff format --check fastcore_cv tests bench examples notebooks

clean:
	rm -rf $(VENV) .pytest_cache .benchmarks build *.egg-info
