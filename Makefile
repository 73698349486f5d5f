# The menu: `make dev` runs the whole flow on this machine, `make test` proves it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST := $(BIN)/pytest
QUEUE ?= activation
ARGS ?=

.PHONY: help install dev test unit integration e2e migrate lint fmt bench chaos replay up down infra chromium clean

help:  ## this menu
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev,neonize]'
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install the project with its dev tools

infra:  ## make sure PostgreSQL and RabbitMQ are running (starts the local ones)
	./scripts/ensure-infra.sh

chromium:  ## install Debian's headless Chromium for the browser tests
	./scripts/ensure-chromium.sh

migrate: $(STAMP)  ## create the database if missing and apply migrations
	$(BIN)/python -m shared.db.migrate

dev: $(STAMP) infra  ## run gateway, workers and the YClients sandbox locally; prints the URL to click
	$(BIN)/python scripts/dev.py

test: $(STAMP) infra chromium  ## the whole suite: unit, integration, e2e (real PostgreSQL and RabbitMQ)
	$(PYTEST) -q tests $(ARGS)

unit: $(STAMP)  ## unit tests only
	$(PYTEST) -q tests/unit $(ARGS)

integration: $(STAMP) infra  ## integration tests on the real broker and database
	$(PYTEST) -q tests/integration $(ARGS)

e2e: $(STAMP) infra chromium  ## end-to-end tests with the services as processes
	$(PYTEST) -q tests/e2e $(ARGS)

lint: $(STAMP)  ## ruff and mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services sandbox scripts bench chaos

fmt: $(STAMP)  ## format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: $(STAMP) infra  ## benchmarks with ratios against references measured in the same run (writes docs/bench.md)
	./scripts/ensure-bench-tools.sh
	$(BIN)/python -m bench $(ARGS)

chaos: $(STAMP) infra  ## fault-injection runs; prints and writes the table to docs/
	$(BIN)/python -m chaos $(ARGS)

replay: $(STAMP)  ## list dead letters; move them back: make replay ARGS="move --salon 123 --no-dry-run"
	$(BIN)/python -m shared.bus.replay $(if $(ARGS),$(ARGS),list $(QUEUE))

up:  ## docker compose: build and start everything (needs a Docker engine)
	docker compose -f deploy/docker-compose.yml up --build -d

down:  ## docker compose: stop everything
	docker compose -f deploy/docker-compose.yml down

clean:  ## remove the virtualenv and test output
	rm -rf $(VENV) test-output .dev
