# One entry point for people and CI. `make up` runs the pipeline locally, `make test` tests it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# kustomize renders deploy/ in the tests; built from its Go module, pinned here only.
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := .tools/kustomize-$(KUSTOMIZE_VERSION)/kustomize
# The Strimzi cluster and the namespace its Topic Operator watches, for the KafkaTopics.
KAFKA_CLUSTER ?= my-cluster
KAFKA_NAMESPACE ?= kafka

.PHONY: install tools up test check manifests bench-receiver bench-spool bench-backfill bench-worker clean

$(BIN)/nxcloud-connector: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $@

install: $(BIN)/nxcloud-connector

$(KUSTOMIZE):
	GOBIN=$(CURDIR)/$(dir $(KUSTOMIZE)) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

tools: $(KUSTOMIZE)

up: install
	$(BIN)/nxcloud-connector up

test: install tools
	KUSTOMIZE=$(CURDIR)/$(KUSTOMIZE) $(BIN)/pytest

# The KafkaTopics under deploy/, from connector/topics.py and each overlay's settings.
manifests: install
	$(BIN)/python -m connector.manifests --cluster $(KAFKA_CLUSTER) --namespace $(KAFKA_NAMESPACE) \
		--env-file deploy/base/settings.env > deploy/base/topics.yaml
	$(BIN)/python -m connector.manifests --cluster $(KAFKA_CLUSTER) --namespace $(KAFKA_NAMESPACE) \
		--env-file deploy/base/settings.env --env-file deploy/overlays/production/settings.env \
		> deploy/overlays/production/topics.yaml

# The image's pinned dependencies: a clean install of the project, frozen.
deploy/requirements.txt: pyproject.toml
	rm -rf .tools/lock-venv
	$(PYTHON) -m venv .tools/lock-venv
	.tools/lock-venv/bin/pip install --quiet .
	{ echo "# The image's exact dependency versions: \`make deploy/requirements.txt\` (pip freeze of a clean"; \
	  echo "# install of the project, Python 3.11). deploy/Dockerfile installs these, then the project"; \
	  echo "# with --no-deps."; \
	  .tools/lock-venv/bin/pip freeze --exclude nxcloud-connector; } > $@.new
	mv $@.new $@
	rm -rf .tools/lock-venv

check: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench-receiver: install
	$(BIN)/python -m bench.receiver --seconds 30

bench-spool: install
	$(BIN)/python -m bench.spool

bench-backfill: install
	$(BIN)/python -m bench.backfill

bench-worker: install
	$(BIN)/python -m bench.worker

clean:
	rm -rf $(VENV) .tools .mypy_cache .pytest_cache .ruff_cache
