# envharness: build, test and try it.
#   make demo     print the variables of environments/development (builds first)
#   make test     format check, clippy and every test, podman's containers included;
#                 installs what is missing on Debian
#   make build    debug build            make release   optimized build
#   make static   static musl binary     make bench     benchmarks (bench/startup.py, bench/run.sh,
#                                        bench/watch.py, bench/templates.sh, bench/loadbalancer.py)
#   make bench-templates                 only the templates and --environment-root benchmark
#   make bench-loadbalancer              only the load balancer's benchmark (nginx, wrk)

CARGO ?= cargo
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/envharness

# rustup installs cargo here; make it visible to the recipes even in a fresh shell.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build release test demo bench bench-templates bench-loadbalancer hot-text static deps engine toolchain clean

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
	python3 bench/startup.py
	bash bench/run.sh
	python3 bench/watch.py
	bash bench/templates.sh
	python3 bench/loadbalancer.py

bench-templates: static
	bash bench/templates.sh

bench-loadbalancer: static
	python3 bench/loadbalancer.py

# Writes bench/hot-text.ld from traces of the start-up and supervision paths (valgrind is not
# needed: bench/trace_text.c single-steps the binary with ptrace).
hot-text: deps
	python3 bench/hot_text.py

# Non-PIE and fully static: `file` says "statically linked", and start-up skips the
# self-relocation a static-pie binary does. rustls' crypto (ring) has C and assembly parts,
# built for musl with Debian's musl-gcc (musl-tools). bench/hot-text.ld gathers the code that
# start-up and supervision run (bench/hot_text.py says why); cargo does not see a linker
# script change, so the binary is linked again when the script is newer.
static: deps
	@if [ bench/hot-text.ld -nt $(STATIC_BIN) ]; then touch src/main.rs; fi
	CC_x86_64_unknown_linux_musl=musl-gcc \
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static -C link-arg=-Wl,-T,$(CURDIR)/bench/hot-text.ld" \
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
# rustfmt, clippy and the musl target; musl-tools (musl-gcc) for ring's C code in the static
# build; etcd-server for the etcd store's tests, which start their own etcd processes (never
# the service the package may start); openssl for the tests of client keys in PKCS#1 and SEC1
# form (the TLS tests make their certificates with rcgen); gosu, tini and dumb-init, which the
# --user, --remap-exit and --rewrite tests compare envharness with; nginx (nginx-light where
# Debian still has it), python3 and wrk for the load balancer's test and benchmark
# (examples/loadbalancer; they start nginx processes of their own, never the service).
deps: toolchain
	@missing=""; \
	command -v file >/dev/null 2>&1 || missing="$$missing file"; \
	command -v musl-gcc >/dev/null 2>&1 || missing="$$missing musl-tools"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	command -v script >/dev/null 2>&1 || missing="$$missing bsdutils"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	command -v gosu >/dev/null 2>&1 || missing="$$missing gosu"; \
	command -v tini >/dev/null 2>&1 || missing="$$missing tini"; \
	command -v dumb-init >/dev/null 2>&1 || missing="$$missing dumb-init"; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$$missing $$(apt-cache show nginx-light >/dev/null 2>&1 && echo nginx-light || echo nginx)"; \
	[ -x /usr/bin/python3 ] || missing="$$missing python3"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
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
