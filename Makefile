# Two commands for a new machine:  `make demo` (the main job on the embedded local stack)
# and `make test` (the test suite). Both create .venv and install everything first.

# The first interpreter that actually runs and is 3.11/3.12 (a pyenv shim can exist for a
# version that is not selected, so `command -v` alone is not enough).
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do \
	$$p -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12)' >/dev/null 2>&1 \
	&& { command -v $$p; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test test-all bench lint lock schemas clean

$(BIN)/.installed: pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "bytewax 0.21.1 needs Python 3.11 or 3.12; set PYTHON=/path/to/python3.12"; exit 1; }
	@$(PYTHON) -c 'import sys; assert (3, 11) <= sys.version_info[:2] <= (3, 12), \
		"bytewax 0.21.1 needs Python 3.11 or 3.12 (found %s); set PYTHON=/path/to/python3.12" % sys.version.split()[0]'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/jukebox demo

# Everything but the fault suite on two workers; then the fault suite alone, one test at a
# time (it measures recovery times and memory, which a busy machine would distort).
test: install
	@bash tests/faults/ensure_redis_tls.sh || echo "no TLS-capable redis-server: the Redis TLS test will be skipped"
	$(BIN)/python -m pytest -m "not slow" -p no:cacheprovider -n 2 --durations=12 --ignore=tests/faults
	$(BIN)/python -m pytest -m "not slow" -p no:cacheprovider --durations=12 tests/faults

test-all: install
	$(BIN)/python -m pytest -p no:cacheprovider

# The live flow against raw Kafka (new jukeboxes), then at steady state (day-old jukeboxes),
# then what each recovery snapshot costs; bench.replay, bench.state_memory,
# bench.store_write, bench.anomaly and bench.restart run on their own.
bench: install
	$(BIN)/python -m bench.feature_flow
	$(BIN)/python -m bench.steady_flow
	$(BIN)/python -m bench.recovery

# Re-resolve the newest versions pyproject.toml allows into constraints.txt (then run the tests).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ sed -n 1,2p constraints.txt; .lock-venv/bin/pip freeze --exclude-editable | grep -v '^jukebox'; } > constraints.new
	mv constraints.new constraints.txt && rm -rf .lock-venv

lint: install
	$(BIN)/ruff check .

schemas: install
	$(BIN)/jukebox schemas export

clean:
	rm -rf $(VENV) build *.egg-info
