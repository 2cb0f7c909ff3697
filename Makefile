# mlaas4hep-dask — set-up and everyday commands.  `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PIP    := $(PY) -m pip --disable-pip-version-check -q
DEMO   := demo-output

.PHONY: install test demo docs bench lint image xrootd-server postgres-server sandbox browser wrk slurm slurm-up slurm-down clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
	$(PIP) install -e ".[test,ml,docs]" 2>&1 | grep -v "^WARNING: Location" || true
	$(PY) -c "import mlaas4hep_dask, pytest, skhep_testdata, torch, xgboost, keras, sklearn, onnxruntime, skl2onnx, onnxmltools, tritonclient.http, orjson, swagger_ui, uvloop, sphinx, myst_nb, pydata_sphinx_theme, numpydoc, importlinter, grimp"
	@touch $(STAMP)

# The XRootD tests run a real server: Debian's xrootd-server, installed here when missing.
xrootd-server:
	@command -v xrootd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's xrootd-server for the XRootD tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xrootd-server >/dev/null; \
	  else echo "xrootd not found and cannot apt-get install it: the XRootD tests will be skipped"; fi; }

# The job store is tested on a real PostgreSQL too: Debian's postgresql, installed here when missing.
postgres-server:
	@command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's postgresql for the job-store tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; \
	  else echo "postgresql not found and cannot apt-get install it: the PostgreSQL tests will be skipped"; fi; }

# Service jobs run in a bubblewrap sandbox: Debian's bubblewrap, installed here when missing.
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's bubblewrap for the job sandbox"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null; \
	  else echo "bwrap not found and cannot apt-get install it: the sandbox tests will be skipped"; fi; }

# The API pages are rendered offline in a real browser: Debian's chromium, installed here when missing.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the API-page tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "chromium not found and cannot apt-get install it: the browser tests will be skipped"; fi; }

# --cluster slurm is tested on a real Slurm: Debian's slurmctld, slurmd and munge, installed here when missing.
slurm:
	@command -v slurmd >/dev/null 2>&1 || ls /usr/sbin/slurmd >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's Slurm and munge for the Slurm tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null; \
	  else echo "slurmd not found and cannot apt-get install it: the Slurm tests will be skipped"; fi; }

# A one-node Slurm on 127.0.0.1 to try --cluster slurm on (as root): then export the SLURM_CONF it prints.
SLURM_DIR ?= /tmp/mlaas4hep-slurm
slurm-up: install slurm
	$(PY) -m tests._slurm up $(SLURM_DIR)

slurm-down:
	$(PY) -m tests._slurm down $(SLURM_DIR)

test: install xrootd-server postgres-server sandbox browser slurm
	$(PY) -m pytest $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/mlaas4hep generate --out $(DEMO)/data --events 50000 --files 2 --seed 1
	$(VENV)/bin/mlaas4hep specs --files $(DEMO)/data/files.txt --params configs/params.json \
	  --preproc configs/preproc.json --out $(DEMO)/specs.json --scheduler local
	$(VENV)/bin/mlaas4hep train --files $(DEMO)/data/files.txt --labels $(DEMO)/data/labels.txt \
	  --model configs/models/torch_model.py --params configs/params.json --preproc configs/preproc.json \
	  --specs $(DEMO)/specs.json --out $(DEMO)/run-torch --scheduler local
	$(VENV)/bin/mlaas4hep train --files $(DEMO)/data/files.txt --labels $(DEMO)/data/labels.txt \
	  --model configs/models/xgboost_model.py --params configs/params.json --preproc configs/preproc.json \
	  --specs $(DEMO)/specs.json --out $(DEMO)/run-xgboost --scheduler local

# The documentation site (Sphinx): warnings are errors, the tutorial notebook runs at every build.
docs: install
	$(PY) -m sphinx -W --keep-going -b html docs docs/_build/html
	@echo "docs written to docs/_build/html/index.html"

# The serving benchmark's load generator: Debian's wrk (native, so the client is not the bottleneck).
wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; \
	  else echo "wrk not found and cannot apt-get install it: benchmarks/serve.py will stop"; fi; }

bench: install wrk slurm
	$(PY) benchmarks/specs.py
	$(PY) benchmarks/loader.py
	$(PY) benchmarks/serve.py
	$(PY) benchmarks/scaling.py
	$(PY) benchmarks/layouts.py
	$(PY) benchmarks/loader_costs.py
	$(PY) benchmarks/train_scaling.py
	$(PY) benchmarks/prepared.py
	$(PY) benchmarks/slurm.py

lint: install
	$(VENV)/bin/ruff check mlaas4hep_dask tests benchmarks docs
	$(VENV)/bin/ruff format --check mlaas4hep_dask tests benchmarks docs
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(PY) tests/_layout.py

# The image shared by the Dask workers, the submit service and the inference server.
IMAGE ?= mlaas4hep-dask:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
image:
	docker build -t $(IMAGE) .

clean:
	rm -rf $(VENV) $(DEMO) bench-output .pytest_cache .ruff_cache .mypy_cache docs/_build docs/api docs/jupyter_execute
