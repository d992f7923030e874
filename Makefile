# Tandem's developer entry points. `make install && make test` works on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
COMPONENTS := api cli devcluster load operator planner router sim

.PHONY: install test lint crds typecheck-tree clean demo e2e-kind

$(BIN)/tandem: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/tandem

# KUBEBUILDER_ASSETS defaults to the control plane in ../shared when present (through
# devcluster/envtest/assets.sh, which refuses an old ../shared whose apiserver cannot serve CRs).
ASSETS_DEFAULT = if [ -z "$$KUBEBUILDER_ASSETS" ] && [ -x ../shared/envtest/setup.sh ]; then \
		KUBEBUILDER_ASSETS="$$(devcluster/envtest/assets.sh)" || exit 1; export KUBEBUILDER_ASSETS; fi

# The whole suite, in TEST_WORKERS processes (pytest-xdist; each its own control plane). Most of
# the suite waits on clusters and engines rather than computing, so 3 workers on 2 cores run it in
# about 57 % of one worker's time. A module's tests stay on one worker (its fixtures are built once).
# TEST_WORKERS=0 runs it in this process.
TEST_WORKERS ?= 3
test: install
	@$(ASSETS_DEFAULT); \
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# mypy cannot follow setuptools' editable finder, so it checks a symlink tree shaped like the
# installed package (tandem/<component> -> <component>).
typecheck-tree:
	@mkdir -p .mypy-tree/tandem
	@for c in $(COMPONENTS); do ln -sfn ../../$$c .mypy-tree/tandem/$$c; done

# Tests mypy checks too: the operator's in-memory API and the tests that hand it to the controller,
# so the fake keeps satisfying kube.KubeApi with no `type: ignore`.
TYPED_TESTS := operator_memory_api operator/test_controller_reconcile operator/test_object_cache \
	operator/test_sync_plan operator/autoscale/test_reconcile operator/autoscale/test_decision

lint: install typecheck-tree
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	cd .mypy-tree && ../$(BIN)/mypy --config-file ../pyproject.toml -p tandem
	cd .mypy-tree && ../$(BIN)/mypy --config-file ../pyproject.toml $(TYPED_TESTS:%=../tests/%.py)

# The local demo (README): a devcluster (KUBEBUILDER_ASSETS, defaulting like `test`) or else kind,
# the chart, the simulator pool, a short and a long prompt. DEMO_ONCE=1 exits after the prompts.
demo: install
	@$(ASSETS_DEFAULT); \
	$(BIN)/tandem demo

# The e2e tests on a kind cluster (needs kind, Docker and kubectl): create it, build and load the
# tandem image, run e2e/, delete the cluster whatever the result.
KIND_CLUSTER ?= tandem-e2e
E2E_IMAGE ?= ghcr.io/tandem-dev/tandem:e2e
e2e-kind: install
	kind create cluster --name $(KIND_CLUSTER) --wait 120s
	@trap 'kind delete cluster --name $(KIND_CLUSTER)' EXIT; set -e; \
	kind get kubeconfig --name $(KIND_CLUSTER) > $(VENV)/kind-kubeconfig; \
	docker build -f images/tandem/Dockerfile -t $(E2E_IMAGE) .; \
	kind load docker-image $(E2E_IMAGE) --name $(KIND_CLUSTER); \
	TANDEM_TEST_KUBECONFIG=$(VENV)/kind-kubeconfig TANDEM_E2E_IMAGE=$(E2E_IMAGE) \
		$(BIN)/python -m pytest e2e $(PYTEST_ARGS)

# The chart ships the same CRD file (a test keeps the two identical).
crds: install
	$(BIN)/tandem crds > crds/tandem.dev_inferencepools.yaml
	cp crds/tandem.dev_inferencepools.yaml charts/tandem/crds/tandem.dev_inferencepools.yaml

clean:
	rm -rf $(VENV) .mypy-tree .mypy_cache .pytest_cache .ruff_cache
