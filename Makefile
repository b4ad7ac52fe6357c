# Two commands: `make run` starts the whole engine; `make test` runs every check.
# Both build .venv from pyproject.toml on first use (and again when it changes).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint typecheck pytest soak bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Sutra needs Python 3.11+: run make PYTHON=python3.11")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/python -m embedded

test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collects nothing; make treats that as the failure it is.
# Two workers, each with its own database, Temporal dev server and fake providers; a file's
# tests stay on one worker. The longest files go first (tests/conftest.py): xdist would
# otherwise sort files by how many tests they hold and start the long single-test ones
# last, leaving one worker busy while the other idles. Most slow tests wait on timers and
# processes, so this halves the run on 2 CPUs. PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The long runs: more journeys and kills, a one-minute Temporal outage, Temporal SIGKILLed
# six times under load, a one-minute PostgreSQL hang, a back-in-stock fan-out to 5,000
# subscribers, a fan-out and a sweep whose worker is SIGKILLed mid-batch five times, a
# four-minute SendGrid and Twilio storm, 100 seeded order interleavings, the extreme-timestamp
# fuzzing at ten times the examples. Rerun a crash schedule with SUTRA_CHAOS_SEED=<n> (the
# seed is printed).
SOAK_TESTS = tests/test_crash_safety.py tests/test_temporal_outage.py tests/test_temporal_kill.py \
	tests/test_db_outage.py tests/test_db_hang.py tests/test_product_fanout.py \
	tests/test_fanout_kill.py tests/test_sweep_kill.py tests/test_provider_storms.py \
	tests/test_order_interleavings.py tests/test_extreme_timestamps.py tests/test_dated_inputs.py \
	tests/test_fuzz_api.py
soak: $(STAMP)
	SUTRA_SOAK=1 $(BIN)/pytest -q -s -p no:logging $(SOAK_TESTS)

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
