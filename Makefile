# Tandem's developer entry points. `make install && make test` works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COMPONENTS := api cli devcluster operator planner router sim

.PHONY: install test lint crds typecheck-tree clean

$(BIN)/tandem: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/tandem

# The whole suite. KUBEBUILDER_ASSETS defaults to the control plane in ../shared when present.
test: install
	@if [ -z "$$KUBEBUILDER_ASSETS" ] && [ -x ../shared/envtest/setup.sh ]; then \
		export KUBEBUILDER_ASSETS="$$(../shared/envtest/setup.sh)"; fi; \
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# mypy cannot follow setuptools' editable finder, so it checks a symlink tree shaped like the
# installed package (tandem/<component> -> <component>).
typecheck-tree:
	@mkdir -p .mypy-tree/tandem
	@for c in $(COMPONENTS); do ln -sfn ../../$$c .mypy-tree/tandem/$$c; done

lint: install typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd .mypy-tree && ../$(BIN)/mypy --config-file ../pyproject.toml -p tandem

crds: install
	$(BIN)/tandem crds > crds/tandem.dev_inferencepools.yaml

clean:
	rm -rf $(VENV) .mypy-tree .mypy_cache .pytest_cache .ruff_cache
