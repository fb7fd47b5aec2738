# Two commands on a fresh machine: `make demo` and `make test`. Both set everything up first.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install system-deps demo test bench clean

install: $(STAMP) system-deps

# From Debian, when missing: Chromium for the dashboard's browser tests and screenshots, Java 17+
# for the Spark engine, the PostgreSQL server the outbox tests start in a temporary folder
# (tests/postgres_support.py; Debian puts initdb and pg_ctl in /usr/lib/postgresql/<version>/bin),
# and wrk, the load generator of benchmarks/bench_service_wrk.py.
# Each is checked again by the tests that need it.
system-deps:
	@command -v chromium >/dev/null || { echo "installing Debian's chromium (browser tests)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || { echo "could not install chromium: run 'apt-get install chromium' as root"; exit 1; }; }
	@java -version 2>&1 | grep -Eq 'version "(1[7-9]|2[0-9])' || { echo "installing Java 17 (Spark engine)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openjdk-17-jre-headless >/dev/null) \
	  || { echo "Spark needs Java 17 or later: run 'apt-get install openjdk-17-jre-headless' as root"; exit 1; }; }
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || { echo "installing Debian's postgresql (outbox tests)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	  || { echo "could not install postgresql: run 'apt-get install postgresql' as root"; exit 1; }; }
	@command -v wrk >/dev/null || { echo "installing Debian's wrk (the service's load benchmark)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null) \
	  || { echo "could not install wrk: run 'apt-get install wrk' as root"; exit 1; }; }

# Pinned: constraints.txt is the tested set (see README, "Pinned versions").
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[test]"
	# openapi-python-client (the generated-client test) pins an older typer for its command line,
	# which the test does not use: its library goes in without its dependencies, still pinned.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -c constraints.txt openapi-python-client
	touch $(STAMP)

# The main job on the bundled CDNOW log: features (checked against lifetimes), the classical
# models beside the published parameters, training into mlruns/ with registry promotion,
# the ranked win-back list, then the service started, called over HTTP and stopped.
demo: install
	$(BIN)/winback features --dataset cdnow --cutoff 1997-09-30 --freq W --check-lifetimes --out out/cdnow_features_1997-09-30.parquet
	$(BIN)/winback classical --dataset cdnow --cutoff 1997-09-30
	$(BIN)/winback train --dataset cdnow --cutoff 1997-12-31 --horizon-days 180
	$(BIN)/winback features --dataset cdnow --cutoff 1998-06-30 --model-uri models:/winback@champion --out out/cdnow_features.parquet
	$(BIN)/winback rank --features out/cdnow_features.parquet --top 20 --out out/winback_top20.csv
	$(BIN)/winback rank --features out/cdnow_features.parquet --top 20 --lang zh-TW --out out/winback_top20_zh-TW.csv
	$(BIN)/python -m serving.smoke --dataset cdnow --as-of 1998-06-30
	$(BIN)/python -m training.trigger_smoke --as-of 1998-06-30

# The habits first (ruff: style, imports, numpy docstrings; mypy: types), then every test.
test: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# Every benchmark at its small size, the comparisons printed as one table (out/bench/ keeps each
# script's output); `$(BIN)/python benchmarks/bench_all.py --large` runs the issue's sizes.
bench: install
	$(BIN)/python benchmarks/bench_all.py

clean:
	rm -rf $(VENV) out .pytest_cache .hypothesis
