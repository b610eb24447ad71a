# netdiag: `make run` checks this host; `make test` installs what the tests need and runs them.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint system-deps probe-deps bench clean

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
	openssl:openssl prometheus:prometheus
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

test: $(STAMP) system-deps probe-deps lint
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/census.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
