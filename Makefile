# Two commands matter: `make demo` and `make test`. Both set up .venv on their own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test test-arcgis test-remote bench bench-odc install clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall only when the package metadata changes.
$(VENV)/.installed: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(VENV)/.installed $@

install: $(VENV)/.installed

# The embedded default: a synthetic STAC catalog and labels generated offline.
demo: $(VENV)/.installed
	$(BIN)/tfchips demo-data --out $(DEMO_DIR)/data
	$(BIN)/tfchips create-samples --config $(DEMO_DIR)/data/job.yaml --out $(DEMO_DIR)/chips
	@# Splits are drawn per chip by hash: seed 2 splits the 16 demo chips 12 / 4.
	$(BIN)/tfchips to-tfrecords $(DEMO_DIR)/chips --out $(DEMO_DIR)/records --encoding array \
		--split train=0.75,val=0.25 --seed 2 --shards 1 --overwrite
	$(BIN)/tfchips preview $(DEMO_DIR)/chips --out $(DEMO_DIR)/preview.png
	$(BIN)/tfchips report $(DEMO_DIR)/chips --out $(DEMO_DIR)/report.html
	$(BIN)/python examples/train_unet.py $(DEMO_DIR)/records --epochs 10 --out $(DEMO_DIR)/predictions
	@echo "demo: chips in $(DEMO_DIR)/chips, shards in $(DEMO_DIR)/records, predictions in $(DEMO_DIR)/predictions,"
	@echo "      preview $(DEMO_DIR)/preview.png, report $(DEMO_DIR)/report.html"

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

# Opt-in: ESRI's own arcgis.learn.prepare_data on tfchips chip folders, in a venv of its own
# (arcgis, torch, fastai 1.0.61, GDAL bindings; several GB, root for Debian's libgdal-dev).
ARCGIS_VENV := .venv-arcgis
$(ARCGIS_VENV)/.installed: tests/arcgis/setup_venv.sh
	PYTHON=$(PYTHON) tests/arcgis/setup_venv.sh $(ARCGIS_VENV)

test-arcgis: $(VENV)/.installed-test $(ARCGIS_VENV)/.installed
	TFCHIPS_REQUIRE_ARCGIS=1 $(BIN)/python -m pytest -q -rs tests/test_esri.py

# Opt-in: create-samples against real components on 127.0.0.1 (scripts/real_components.sh):
# stac-fastapi-pgstac on PostgreSQL 15 + PostGIS (Debian packages, root), nginx with byte ranges;
# the Python side in a venv of its own. TFCHIPS_REMOTE_SCENE_PX sets the scene size (7000).
REMOTE_VENV := .venv-remote
$(REMOTE_VENV)/.installed: scripts/real_components.sh
	PYTHON=$(PYTHON) scripts/real_components.sh install $(REMOTE_VENV)
	touch $@

test-remote: $(VENV)/.installed-test $(REMOTE_VENV)/.installed
	TFCHIPS_REQUIRE_REMOTE=1 $(BIN)/python -m pytest -q -rs -s tests/test_remote.py

$(VENV)/.installed-bench: $(BIN)/python setup.cfg pyproject.toml
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(VENV)/.installed $(VENV)/.installed-test $@

bench: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks

# tfchips against odc-stac on the same 500 local-COG tiles (TFCHIPS_BENCH_ODC_* in benchmarks/bench_odc.py).
bench-odc: $(VENV)/.installed-bench
	$(BIN)/python -m benchmarks odc

clean:
	rm -rf $(VENV) $(DEMO_DIR) build dist *.egg-info .pytest_cache .hypothesis
