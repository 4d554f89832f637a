# One entry point for people and CI. `make up` runs the pipeline locally, `make test` tests it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The Pythons the project is tested on (CI: the whole suite on 3.11, the tests without Kafka on
# 3.12 and 3.13); pyproject.toml's requires-python says the same.
PYTHONS := 3.11 3.12 3.13
PYTHON_VERSION := $(shell $(PYTHON) -c 'import sys; print(*sys.version_info[:3], sep=".")' 2>/dev/null)
ifneq ($(filter-out clean clean-data,$(or $(MAKECMDGOALS),install)),)
ifeq ($(filter $(PYTHONS),$(basename $(PYTHON_VERSION))),)
$(error $(PYTHON) is $(if $(PYTHON_VERSION),Python $(PYTHON_VERSION),not a Python that runs); nxcloud-connector needs Python 3.11, 3.12 or 3.13: make PYTHON=python3.13 (or python3.11, python3.12))
endif
endif
# Where `up` and `kafka` keep their data (connector.settings.default_state_dir).
DATA_DIR := $(or $(XDG_DATA_HOME),$(HOME)/.local/share)/nxcloud-connector
# The venv remembers the Python that made it: made by another (or half made), it is made anew.
VENV_MADE := $(VENV)/made-by-python-$(PYTHON_VERSION)
# kustomize renders deploy/ in the tests; built from its Go module, pinned here only.
KUSTOMIZE_VERSION := v5.7.1
KUSTOMIZE := .tools/kustomize-$(KUSTOMIZE_VERSION)/kustomize
# promtool checks and unit-tests deploy/monitoring's rules in the tests; built from its Go module, pinned here only.
PROMTOOL_VERSION := v0.316.0
PROMTOOL := .tools/promtool-$(PROMTOOL_VERSION)/promtool
# The validators generated from the CRDs of Strimzi, cert-manager, the Gateway API and the
# Prometheus Operator (npm, pinned by tests/strimzi/package-lock.json) check deploy/'s custom
# resources in the tests.
STRIMZI_CHECK := .tools/strimzi-check
# The Strimzi cluster and the namespace its Topic Operator watches, for the KafkaTopics.
KAFKA_CLUSTER ?= my-cluster
KAFKA_NAMESPACE ?= kafka

.PHONY: install tools up test test-fast test-python check image sbom lock manifests bench-receiver bench-spool bench-backfill bench-worker bench-topic-size bench-recovery bench-smoke clean clean-data

$(VENV_MADE):
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	touch $@

$(BIN)/nxcloud-connector: pyproject.toml $(VENV_MADE)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --editable '.[dev]'
	touch $@

install: $(BIN)/nxcloud-connector

$(KUSTOMIZE):
	GOBIN=$(CURDIR)/$(dir $(KUSTOMIZE)) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(PROMTOOL):
	GOBIN=$(CURDIR)/$(dir $(PROMTOOL)) go install github.com/prometheus/prometheus/cmd/promtool@$(PROMTOOL_VERSION)

$(STRIMZI_CHECK)/node_modules: tests/strimzi/package.json tests/strimzi/package-lock.json
	rm -rf $(STRIMZI_CHECK)
	mkdir -p $(STRIMZI_CHECK)
	cp tests/strimzi/package.json tests/strimzi/package-lock.json $(STRIMZI_CHECK)/
	cd $(STRIMZI_CHECK) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

tools: $(KUSTOMIZE) $(PROMTOOL) $(STRIMZI_CHECK)/node_modules

# UP_FLAGS: `up`'s options, e.g. UP_FLAGS=--host=0.0.0.0 to listen beyond this machine.
up: install
	$(BIN)/nxcloud-connector up $(UP_FLAGS)

test: install tools
	KUSTOMIZE=$(CURDIR)/$(KUSTOMIZE) PROMTOOL=$(CURDIR)/$(PROMTOOL) STRIMZI_CHECK=$(CURDIR)/$(STRIMZI_CHECK) $(BIN)/pytest

# The tests that need no Kafka (no broker, no Java): about two minutes.
test-fast: install tools
	KUSTOMIZE=$(CURDIR)/$(KUSTOMIZE) PROMTOOL=$(CURDIR)/$(PROMTOOL) STRIMZI_CHECK=$(CURDIR)/$(STRIMZI_CHECK) $(BIN)/pytest -m "not kafka"

# The tests whose outcome depends on the Python that runs them: neither Kafka's (Java) nor the
# image's (its Python is its own). CI runs them on 3.12 and 3.13 too: make test-python PYTHON=...
test-python: install tools
	KUSTOMIZE=$(CURDIR)/$(KUSTOMIZE) PROMTOOL=$(CURDIR)/$(PROMTOOL) STRIMZI_CHECK=$(CURDIR)/$(STRIMZI_CHECK) $(BIN)/pytest -m "not kafka and not image"

# The KafkaTopics under deploy/, from connector/topics.py and each overlay's settings;
# the KafkaUsers, from connector/acls.py.
manifests: install
	$(BIN)/python -m connector.manifests --cluster $(KAFKA_CLUSTER) --namespace $(KAFKA_NAMESPACE) \
		--env-file deploy/base/settings.env > deploy/components/strimzi-topics/topics.yaml
	$(BIN)/python -m connector.manifests --cluster $(KAFKA_CLUSTER) --namespace $(KAFKA_NAMESPACE) \
		--env-file deploy/base/settings.env --env-file deploy/components/production/settings.env \
		> deploy/overlays/production/topics.yaml
	$(BIN)/python -m connector.manifests --users --cluster $(KAFKA_CLUSTER) --namespace $(KAFKA_NAMESPACE) \
		--env-file deploy/base/settings.env > deploy/components/kafka-strimzi-scram/users.yaml

# The image's pinned dependencies: a clean install of the project, frozen. Refreshed only when
# asked (`make lock`), never because pyproject.toml is newer: a checkout sets both times.
# The msk-iam image adds only packages: both files come from one resolution with both extras.
lock:
	rm -rf .tools/lock-venv .tools/lock-all-venv
	$(PYTHON) -m venv .tools/lock-all-venv
	.tools/lock-all-venv/bin/pip install --quiet '.[rocksdict,msk-iam]'
	.tools/lock-all-venv/bin/pip freeze --exclude nxcloud-connector > .tools/lock-all.txt
	$(PYTHON) -m venv .tools/lock-venv
	.tools/lock-venv/bin/pip install --quiet --constraint .tools/lock-all.txt '.[rocksdict]'
	.tools/lock-venv/bin/pip freeze --exclude nxcloud-connector > .tools/lock-base.txt
	{ echo "# The image's exact dependency versions: \`make lock\` (pip freeze of a clean"; \
	  echo "# install of the project with its rocksdict extra, Python 3.11). deploy/Dockerfile installs"; \
	  echo "# these, then the project with --no-deps."; \
	  cat .tools/lock-base.txt; } > deploy/requirements.txt.new
	{ echo "# The msk-iam extra's exact dependency versions, on top of requirements.txt (\`make lock\`:"; \
	  echo "# pip freeze of a clean install of the project with its rocksdict and msk-iam extras, less"; \
	  echo "# what requirements.txt holds, Python 3.11). deploy/Dockerfile installs these when built with"; \
	  echo "# --build-arg EXTRAS=msk-iam (\`make image EXTRAS=msk-iam\`)."; \
	  grep -vxFf .tools/lock-base.txt .tools/lock-all.txt; } > deploy/requirements-msk-iam.txt.new
	mv deploy/requirements.txt.new deploy/requirements.txt
	mv deploy/requirements-msk-iam.txt.new deploy/requirements-msk-iam.txt
	rm -rf .tools/lock-venv .tools/lock-all-venv .tools/lock-base.txt .tools/lock-all.txt

# The image, built with buildah (Debian's package) from deploy/Dockerfile, tagged and labelled
# with the package's version. BASE_IMAGE= a stand-in base (default: the Dockerfile's pinned
# one); BUILDAH= buildah with its storage options (tests/test_image.py passes its own);
# EXTRAS=msk-iam adds AWS's signer (for Amazon MSK with IAM), tagged VERSION-msk-iam.
IMAGE ?= nxcloud-connector
BASE_IMAGE ?=
BUILDAH ?= buildah --storage-driver vfs
BUILDAH_FLAGS ?=
EXTRAS ?=
image: install
	version=$$($(BIN)/nxcloud-connector --version) && \
	$(BUILDAH) build --isolation chroot --file deploy/Dockerfile $(BUILDAH_FLAGS) \
		$(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) --build-arg VERSION=$$version \
		$(if $(EXTRAS),--build-arg EXTRAS=$(EXTRAS)) \
		--tag $(IMAGE):$$version$(if $(EXTRAS),-$(EXTRAS)) .

# The image's SBOM (CycloneDX JSON) from its exact requirements as they are (it never refreshes
# them), with cyclonedx-bom pinned here: deploy/sbom.cdx.json.
CYCLONEDX_VERSION := 7.5.0
sbom:
	rm -rf .tools/sbom-venv
	$(PYTHON) -m venv .tools/sbom-venv
	.tools/sbom-venv/bin/pip install --quiet cyclonedx-bom==$(CYCLONEDX_VERSION)
	.tools/sbom-venv/bin/cyclonedx-py requirements --output-format JSON --output-reproducible \
		--pyproject pyproject.toml --output-file deploy/sbom.cdx.json deploy/requirements.txt
	rm -rf .tools/sbom-venv

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

bench-topic-size: install
	$(BIN)/python -m bench.topic_size

bench-recovery: install
	$(BIN)/python -m bench.recovery

# The ratios that matter in a few minutes (needs wrk): run before a change to the receiver,
# the worker or normalize lands (docs/benchmarks.md).
bench-smoke: install
	$(BIN)/python -m bench.smoke

# What make built here; the local data (Kafka's, the worker's, the spool, the logs) stays.
clean:
	@echo "Removing what make built: $(strip $(sort $(VENV) $(wildcard .venv-*)) .tools .mypy_cache .pytest_cache .ruff_cache)"
	@echo "(the local data stays: $(DATA_DIR); make clean-data removes it)"
	@rm -rf $(VENV) .venv-* .tools .mypy_cache .pytest_cache .ruff_cache

# The local run's data: Kafka's topics, the worker's state, the receiver's spool, the logs.
clean-data:
	@echo "Removing the local data: $(DATA_DIR)"
	@rm -rf $(DATA_DIR)
