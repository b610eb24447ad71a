# netdiag: `make run` checks this host; `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint system-deps probe-deps wheel-smoke bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Exit codes 1 and 2 mean warning/critical findings, not a failed make.
run: $(STAMP)
	@$(BIN)/netdiag check; rc=$$?; [ $$rc -le 2 ] || exit $$rc

# System packages the scenario tests use (as root only; otherwise they must be present): the
# real servers and clients users have (nginx, redis, wrk, iperf3, socat), bpftrace as the
# probes' referee, nftables/iptables to make peers vanish, promtool and the Prometheus server
# (it scrapes `netdiag serve` over TLS), openssl (test certificates).
SYSTEM_TOOLS := ip:iproute2 runuser:util-linux promtool:prometheus nginx:nginx-light \
	redis-server:redis-server redis-benchmark:redis-tools wrk:wrk iperf3:iperf3 socat:socat \
	bpftrace:bpftrace nft:nftables iptables:iptables curl:curl unshare:util-linux \
	openssl:openssl prometheus:prometheus man:man-db
system-deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=""; \
	  for pair in $(SYSTEM_TOOLS); do \
	    tool=$${pair%%:*}; pkg=$${pair#*:}; \
	    command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$pkg"; \
	  done; \
	  if [ -n "$$missing" ]; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	      --no-install-recommends $$missing; \
	  fi; \
	fi

# bcc, bpftool, kernel headers (linked where the kernel ships none), tracefs: test setup only.
probe-deps:
	@bash tests/setup/probe-deps.sh

lint: $(STAMP)
	$(BIN)/ruff check netdiag tests bench

# Ship what is tested: build the sdist and, from it, the wheel; install the wheel (not
# editable) into a fresh venv made by the distribution's python3; run the smoke suite
# against that installed console script, from /, with nothing from the checkout on the path.
SMOKE_PYTHON ?= /usr/bin/python3
SMOKE_DIR    := build/smoke
wheel-smoke: $(STAMP) system-deps
	@$(SMOKE_PYTHON) -c 'import ensurepip' 2>/dev/null || { [ "$$(id -u)" = 0 ] && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends python3-venv; }
	rm -rf $(SMOKE_DIR)
	$(BIN)/python -m build --quiet --outdir $(SMOKE_DIR)/dist .
	$(SMOKE_PYTHON) -m venv $(SMOKE_DIR)/venv
	$(SMOKE_DIR)/venv/bin/python -m pip install --quiet --disable-pip-version-check \
	  $(SMOKE_DIR)/dist/netdiag-*.whl
	$(SMOKE_DIR)/venv/bin/python tests/smoke/smoke.py $(SMOKE_DIR)/venv \
	  $$(ls $(SMOKE_DIR)/dist/netdiag-*.whl) $(CURDIR)/tests/fixtures/hosts/linux-6.18-busy

test: $(STAMP) system-deps probe-deps lint wheel-smoke
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/census.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache
