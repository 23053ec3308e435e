# Two commands matter: `make demo` and `make test`. Both set up .venv on their own.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench install clean

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

DEMO_BBOX ?= -105.95,35.68,-105.90,35.72

demo: $(VENV)/.installed
	mkdir -p $(DEMO_DIR)
	$(BIN)/tfchips tiles --bbox $(DEMO_BBOX) --resolution 10 --tilesize 256 --pad 8 \
		--format geojson > $(DEMO_DIR)/tiles.geojson
	@echo "demo: $$(grep -o '"key"' $(DEMO_DIR)/tiles.geojson | wc -l) tiles in $(DEMO_DIR)/tiles.geojson"

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(DEMO_DIR) build dist *.egg-info .pytest_cache .hypothesis
