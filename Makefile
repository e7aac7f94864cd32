# envharness: build, test and try it.
#   make demo     print the variables of environments/development (builds first)
#   make test     format check, clippy and every test, podman's containers included;
#                 installs what is missing on Debian
#   make build    debug build            make release   optimized build
#   make static   static musl binary     make bench     benchmarks (bench/run.sh, bench/watch.py,
#                                        bench/templates.sh)
#   make bench-templates                 only the templates and --environment-root benchmark
#   make chaos    faults across hosts (bench/chaos.py, as root; not part of make test):
#                 network namespaces, an etcd cluster, partitions, frozen and killed members,
#                 a 10-minute soak of 50 harnesses (CHAOS_SOAK_SECS=120 for a shorter one)

CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/envharness

# rustup installs cargo here; make it visible to the recipes even in a fresh shell.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build release test demo bench bench-templates chaos static deps engine toolchain clean

all: build

build: toolchain
	$(CARGO) build

release: toolchain
	$(CARGO) build --release

# The scratch-root and container tests run the static binary, so it is built first (after
# deps). --nocapture because libtest hides what a passing test prints, and the container tests
# print that podman ran ("containers: podman built ..."). deps and engine installed etcd,
# podman and the util-linux tools, and the tests run as root: so the etcd, container and
# namespace tests must run, and fail where they cannot (the *_required variables), never skip.
test: static engine
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	ENVHARNESS_STATIC_BIN=$(CURDIR)/$(STATIC_BIN) ENVHARNESS_TEST_ETCD=required \
		ENVHARNESS_TEST_PODMAN=required ENVHARNESS_TEST_SYSTEM=required $(CARGO) test -- --nocapture

demo: toolchain
	$(CARGO) run -q -- -e environments/development -x examples/export --print

bench: static
	bash bench/run.sh
	python3 bench/watch.py
	bash bench/templates.sh

bench-templates: static
	bash bench/templates.sh

# Hosts are network namespaces (iproute2's ip), each with an etcd member (etcd-server) and
# harnesses; etcdctl (etcd-client) finds the leader and changes the membership. Writes
# bench/results-chaos.md. Every process it starts is killed and every namespace deleted at
# the end, also on failure or Ctrl-C.
chaos: static
	@missing=""; \
	[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	command -v etcdctl >/dev/null 2>&1 || missing="$$missing etcd-client"; \
	command -v python3 >/dev/null 2>&1 || missing="$$missing python3"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	PATH=/usr/sbin:/sbin:$$PATH python3 bench/chaos.py

# Non-PIE and fully static: `file` says "statically linked", and start-up skips the
# self-relocation a static-pie binary does.
static: deps
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static" \
		$(CARGO) build --release --target $(MUSL_TARGET)
	@file $(STATIC_BIN)
	@ls -l $(STATIC_BIN)

# Building needs Rust (rustup's toolchain: it cannot be fetched by this Makefile) and a C
# linker, installed from Debian when missing.
toolchain:
	@command -v $(CARGO) >/dev/null 2>&1 || { \
		echo "cargo not found: install Rust with rustup, then run make again" >&2; exit 1; }
	@command -v cc >/dev/null 2>&1 || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev; }

# What the tests need besides, installed only when missing (a fresh Debian machine, as root):
# file(1), a static busybox for the scratch-root test, util-linux's unshare and script,
# rustfmt, clippy and the musl target; etcd-server for the etcd store's tests, which start
# their own etcd processes (never the service the package may start); iproute2 for the
# partition test's network namespaces (tests/integration/partition.rs); gosu, tini and
# dumb-init, which the --user, --remap-exit and --rewrite tests compare envharness with.
deps: toolchain
	@missing=""; \
	command -v file >/dev/null 2>&1 || missing="$$missing file"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	command -v script >/dev/null 2>&1 || missing="$$missing bsdutils"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v gosu >/dev/null 2>&1 || missing="$$missing gosu"; \
	command -v tini >/dev/null 2>&1 || missing="$$missing tini"; \
	command -v dumb-init >/dev/null 2>&1 || missing="$$missing dumb-init"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)

# The container tests' engine, installed only when missing: podman builds examples/
# Dockerfile.prebuilt (FROM scratch, nothing pulled) with buildah's code and runs it with runc.
engine:
	@missing=""; \
	command -v podman >/dev/null 2>&1 || missing="$$missing podman"; \
	command -v buildah >/dev/null 2>&1 || missing="$$missing buildah"; \
	command -v runc >/dev/null 2>&1 || missing="$$missing runc"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

clean:
	$(CARGO) clean
