# carme-backend: `make test` and `make demo` do all set-up on a fresh Debian 12 machine (as root).

PYTHON   ?= python3
VENV     := .venv
BIN      := $(VENV)/bin
DEMO_DIR ?= $(CURDIR)/var/demo
# Debian packages the testbed and python-ldap's build need.
DEB_PACKAGES := slurm-wlm munge slapd ldap-utils libldap2-dev libsasl2-dev gcc

.PHONY: test demo deps venv bench clean

deps:
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages (run as root to install): $$missing"; exit 1; fi; \
	  echo "installing $$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(BIN)/.installed: pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: deps $(BIN)/.installed

test: venv
	$(BIN)/pytest

demo: venv
	$(BIN)/python -m testbed.demo $(DEMO_DIR)

bench: venv
	for script in bench/bench_*.py; do $(BIN)/python $$script || exit 1; done

clean:
	-$(BIN)/python -m testbed down $(DEMO_DIR)
	rm -rf $(VENV) var build *.egg-info
