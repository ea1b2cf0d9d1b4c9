# The two commands a new user needs: `make demo` and `make test`. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The SSH tests start their own sshd processes; they need the openssh-server package. The
# database tests start a password-protected PostgreSQL cluster; they need its server binaries.
# The HTML export is rendered by Chromium.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq

.PHONY: demo test lint sshd postgres redis chromium zstd bench

$(BIN)/golive: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	# Bytecode now, for machines that never write it (PYTHONDONTWRITEBYTECODE): every golive
	# command would otherwise compile its modules again (a tenth of `golive validate`).
	$(BIN)/python -m compileall -q golive flows tasks blocks > /dev/null
	touch $(BIN)/golive

demo: $(BIN)/golive
	$(BIN)/golive demo

lint: $(BIN)/golive
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

sshd:
	@test -x /usr/sbin/sshd || { $(SUDO) apt-get update -qq && $(APT_INSTALL) openssh-server; }

postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(APT_INSTALL) postgresql; }

# The test of the distributed set-up (compose.yaml's, without Docker) uses the machine's Redis
# when it answers, otherwise starts its own.
redis:
	@command -v redis-server >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) redis-server; }

# The HTML export is checked in headless Chromium (Debian's package; no browser download).
chromium:
	@command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) chromium; }

# Host backups are packed by zstd where this machine and the host have it (gzip otherwise);
# the tests check both.
zstd:
	@command -v zstd >/dev/null || { $(SUDO) apt-get update -qq && $(APT_INSTALL) zstd; }

test: lint sshd postgres redis chromium zstd
	$(BIN)/pytest

bench: $(BIN)/golive sshd zstd
	$(BIN)/pip install --quiet -r bench/requirements.txt
	$(BIN)/python bench/startup.py
	$(BIN)/python bench/rollout.py
	$(BIN)/python bench/backup.py
	$(BIN)/python bench/approval.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/rollback.py
	$(BIN)/python bench/fleet.py
