# envharness: build, test, install and package it.
#   make demo     print the variables of environments/development (builds first)
#   make test     format check, clippy and every test, podman's containers, the aarch64 binary
#                 under qemu, the package and the compose files included; installs what is
#                 missing on Debian
#   make build    debug build            make release   optimized build
#   make static   static musl binary     make static-aarch64   the same for aarch64
#   make docs     the man page and the shell completions, in target/docs
#   make install  the static binary, the man page and the completions under PREFIX
#                 (/usr/local), DESTDIR honoured; make uninstall removes them
#   make image    the localhost/envharness and localhost/envharness-example images (podman)
#   make dist     both static binaries, Debian packages and SHA256SUMS in target/dist
#   make bench    benchmarks (bench/startup.py, bench/run.sh, bench/watch.py,
#                 bench/templates.sh, bench/loadbalancer.py)
#   make bench-templates                 only the templates and --environment-root benchmark
#   make bench-loadbalancer              only the load balancer's benchmark (nginx, wrk)
#   make fuzz     coverage-guided fuzzers (tests/fuzz), FUZZ_SECONDS each (default 60); not
#                 part of make test
#   make chaos    faults across hosts (bench/chaos.py, as root; not part of make test):
#                 network namespaces, an etcd cluster, partitions, frozen and killed members,
#                 a 10-minute soak of 50 harnesses (CHAOS_SOAK_SECS=120 for a shorter one)

CARGO ?= cargo
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
MUSL_TARGET := x86_64-unknown-linux-musl
STATIC_BIN := target/$(MUSL_TARGET)/release/envharness
AARCH64_TARGET := aarch64-unknown-linux-musl
AARCH64_BIN := target/$(AARCH64_TARGET)/release/envharness
# What envharness-docs writes: the tree share/ holds once installed (man/man1/envharness.1,
# bash-completion/, zsh/, fish/).
DOCS := target/docs
DIST := target/dist
PREFIX ?= /usr/local
DESTDIR ?=
PODMAN ?= podman
# The build context make image lays out: the static binary, busybox and examples/export.
IMAGE_CONTEXT ?= target/image
# podman-compose for the compose tests, from PyPI, in a virtual environment of the tree's own.
VENV := target/venv
PODMAN_COMPOSE := $(VENV)/bin/podman-compose
PODMAN_COMPOSE_VERSION := 1.6.0

# rustup installs cargo here; make it visible to the recipes even in a fresh shell.
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: all build release test demo bench bench-templates bench-loadbalancer hot-text static \
	static-aarch64 docs install uninstall image dist compose deps build-deps cross engine \
	toolchain clean fuzz chaos

all: build

build: toolchain
	$(CARGO) build

release: toolchain
	$(CARGO) build --release

# The scratch-root and container tests run the static binary, the qemu tests the aarch64 one,
# the packaging tests what make dist and make docs wrote, so those are built first (after deps).
# --nocapture because libtest hides what a passing test prints, and the container tests print
# that podman ran ("containers: make image built ..."). deps, cross, engine and compose installed
# etcd, qemu, podman, podman-compose and the util-linux tools, and the tests run as root: so
# the etcd, qemu, container, package and namespace tests must run, and fail where they cannot
# (the *_required variables), never skip. clippy sees the docs feature, so envharness-docs too.
test: deps dist engine compose
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --features docs -- -D warnings
	ENVHARNESS_STATIC_BIN=$(CURDIR)/$(STATIC_BIN) ENVHARNESS_AARCH64_BIN=$(CURDIR)/$(AARCH64_BIN) \
		ENVHARNESS_DIST=$(CURDIR)/$(DIST) ENVHARNESS_PODMAN_COMPOSE=$(CURDIR)/$(PODMAN_COMPOSE) \
		ENVHARNESS_TEST_ETCD=required ENVHARNESS_TEST_PODMAN=required \
		ENVHARNESS_TEST_SYSTEM=required ENVHARNESS_TEST_PACKAGING=required \
		$(CARGO) test -- --nocapture

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

# Writes bench/hot-text.ld from traces of the start-up, supervision and lease-holding paths
# (valgrind is not needed: bench/trace_text.c breaks once on each function with ptrace; the
# lease holders need etcd and openssl, from deps).
hot-text: deps
	python3 bench/hot_text.py

# The parsers of untrusted input under libFuzzer (tests/fuzz/run.sh, which installs cargo-fuzz
# when missing): each target FUZZ_SECONDS, the summary in bench/results-fuzz.md.
FUZZ_SECONDS ?= 60
fuzz: toolchain
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash tests/fuzz/run.sh

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
# self-relocation a static-pie binary does. rustls' crypto (ring) has C and assembly parts,
# built for musl with Debian's musl-gcc (musl-tools). bench/hot-text.ld gathers the code that
# start-up and supervision run, and the constants they read (bench/hot_text.py says why);
# cargo does not see a linker script change, so the binary is linked again when the script is
# newer. It is linked with its symbols and stripped after, as hot_text.py builds the binary it
# traces: cargo's strip setting is part of the names the constants' sections get.
static: build-deps
	@if [ bench/hot-text.ld -nt $(STATIC_BIN) ]; then touch src/main.rs; fi
	CC_x86_64_unknown_linux_musl=musl-gcc CARGO_PROFILE_RELEASE_STRIP=false \
	CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static -C link-arg=-Wl,-T,$(CURDIR)/bench/hot-text.ld" \
		$(CARGO) build --release --target $(MUSL_TARGET)
	strip $(STATIC_BIN)
	@file $(STATIC_BIN)
	@ls -l $(STATIC_BIN)

# The same for aarch64, linked by rustc's own lld (no aarch64 linker or libc needed: musl's
# static libc comes with the Rust target). ring's C and assembly are compiled by clang, which
# ring builds for musl targets other than x86_64 without a target sysroot (-nostdlibinc).
static-aarch64: build-deps cross
	CC_aarch64_unknown_linux_musl=clang \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="-C relocation-model=static -C target-feature=+crt-static" \
		$(CARGO) build --release --target $(AARCH64_TARGET)
	@file $(AARCH64_BIN)
	@ls -l $(AARCH64_BIN)

# The man page and the completions, written from the clap definition by a build tool behind
# the docs feature (src/bin/envharness-docs.rs), never by the shipped binary.
docs: toolchain
	$(CARGO) run -q --features docs --bin envharness-docs -- $(DOCS)

install: static docs
	install -D -m 0755 $(STATIC_BIN) $(DESTDIR)$(PREFIX)/bin/envharness
	install -D -m 0644 $(DOCS)/man/man1/envharness.1 $(DESTDIR)$(PREFIX)/share/man/man1/envharness.1
	install -D -m 0644 $(DOCS)/bash-completion/completions/envharness \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/envharness
	install -D -m 0644 $(DOCS)/zsh/site-functions/_envharness \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_envharness
	install -D -m 0644 $(DOCS)/fish/vendor_completions.d/envharness.fish \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/envharness.fish

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/envharness $(DESTDIR)$(PREFIX)/share/man/man1/envharness.1 \
		$(DESTDIR)$(PREFIX)/share/bash-completion/completions/envharness \
		$(DESTDIR)$(PREFIX)/share/zsh/site-functions/_envharness \
		$(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d/envharness.fish

# Nothing is pulled: both images are FROM scratch, the example one copies envharness from the
# first (COPY --from) and busybox from Debian's busybox-static. --network=none: a build that
# reached for the network would be a mistake. PODMAN may carry options (--root ...): the tests
# build into stores of their own that way.
image: static engine
	rm -rf $(IMAGE_CONTEXT)
	mkdir -p $(IMAGE_CONTEXT)/export
	cp $(STATIC_BIN) $(IMAGE_CONTEXT)/envharness
	cp /bin/busybox $(IMAGE_CONTEXT)/busybox
	cp examples/export/* $(IMAGE_CONTEXT)/export/
	$(PODMAN) build --pull=never --network=none --build-arg VERSION=$(VERSION) \
		-f examples/Dockerfile.envharness -t localhost/envharness:$(VERSION) -t localhost/envharness:latest \
		$(IMAGE_CONTEXT)
	$(PODMAN) build --pull=never --network=none -f examples/Dockerfile.prebuilt \
		-t localhost/envharness-example:$(VERSION) -t localhost/envharness-example:latest \
		$(IMAGE_CONTEXT)

# Both static binaries named with the version and the architecture, a Debian package for each
# (.ci/deb.sh), and SHA256SUMS of them all.
dist: static static-aarch64 docs
	rm -rf $(DIST)
	mkdir -p $(DIST)
	cp $(STATIC_BIN) $(DIST)/envharness-$(VERSION)-x86_64-linux-musl
	cp $(AARCH64_BIN) $(DIST)/envharness-$(VERSION)-aarch64-linux-musl
	sh .ci/deb.sh $(VERSION) amd64 $(STATIC_BIN) $(DOCS) $(DIST)
	sh .ci/deb.sh $(VERSION) arm64 $(AARCH64_BIN) $(DOCS) $(DIST)
	cd $(DIST) && sha256sum envharness-* envharness_* > SHA256SUMS
	@ls -l $(DIST)

# podman-compose, pinned, in a virtual environment under target/ (nothing of the machine's
# Python is touched).
compose: $(PODMAN_COMPOSE)
$(PODMAN_COMPOSE):
	@/usr/bin/python3 -c 'import ensurepip' 2>/dev/null || { apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends python3-venv; }
	/usr/bin/python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q podman-compose==$(PODMAN_COMPOSE_VERSION)

# Building needs Rust (rustup's toolchain: it cannot be fetched by this Makefile) and a C
# linker, installed from Debian when missing.
toolchain:
	@command -v $(CARGO) >/dev/null 2>&1 || { \
		echo "cargo not found: install Rust with rustup, then run make again" >&2; exit 1; }
	@command -v cc >/dev/null 2>&1 || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends gcc libc6-dev; }

# What the static build needs, installed only when missing (a fresh Debian machine, as root):
# musl-tools (musl-gcc) for ring's C code, file(1), which shows what was built, and the musl
# target. make install, make image and make dist need no more (make image: engine's too).
build-deps: toolchain
	@missing=""; \
	command -v file >/dev/null 2>&1 || missing="$$missing file"; \
	command -v musl-gcc >/dev/null 2>&1 || missing="$$missing musl-tools"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@rustup target list --installed | grep -qx $(MUSL_TARGET) || rustup target add $(MUSL_TARGET)

# What the tests need besides, installed only when missing: a static busybox for the
# scratch-root test, util-linux's unshare and script, rustfmt and clippy; etcd-server for the
# etcd store's tests, which start their own etcd processes (never the service the package may
# start); iproute2 for the partition test's network namespaces (tests/integration/partition.rs);
# openssl for the tests of client keys in PKCS#1 and SEC1 form (the TLS tests make
# their certificates with rcgen); gosu, tini and dumb-init, which the --user, --remap-exit and
# --rewrite tests compare envharness with; qemu-user-static, which runs the aarch64 binary in
# the tests; man-db, for the package test's `man envharness`; Debian's python3 and its venv,
# for podman-compose; nginx (nginx-light where Debian still has it) and wrk for the load
# balancer's test and benchmark (examples/loadbalancer; they start nginx processes of their
# own, never the service).
deps: build-deps
	@missing=""; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v unshare >/dev/null 2>&1 || missing="$$missing util-linux"; \
	command -v script >/dev/null 2>&1 || missing="$$missing bsdutils"; \
	dpkg -s busybox-static >/dev/null 2>&1 || missing="$$missing busybox-static"; \
	command -v etcd >/dev/null 2>&1 || missing="$$missing etcd-server"; \
	[ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v gosu >/dev/null 2>&1 || missing="$$missing gosu"; \
	command -v tini >/dev/null 2>&1 || missing="$$missing tini"; \
	command -v dumb-init >/dev/null 2>&1 || missing="$$missing dumb-init"; \
	command -v qemu-aarch64-static >/dev/null 2>&1 || missing="$$missing qemu-user-static"; \
	command -v man >/dev/null 2>&1 || missing="$$missing man-db"; \
	/usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	[ -x /usr/sbin/nginx ] || command -v nginx >/dev/null 2>&1 || missing="$$missing $$(apt-cache show nginx-light >/dev/null 2>&1 && echo nginx-light || echo nginx)"; \
	[ -x /usr/bin/python3 ] || missing="$$missing python3"; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy

# What the aarch64 build needs besides: clang for ring's C code, and the Rust target.
cross: toolchain
	@command -v clang >/dev/null 2>&1 || { \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends clang; }
	@rustup target list --installed | grep -qx $(AARCH64_TARGET) || rustup target add $(AARCH64_TARGET)

# The container tests' engine, installed only when missing: podman builds the images (FROM
# scratch, nothing pulled) with buildah's code and runs them with runc. Then
# .ci/podman-limits.sh makes sure a container runs with the machine's own podman
# configuration, as the README's commands and the compose files need, and where root may not
# raise resource limits writes the drop-in that lets one.
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
	@sh .ci/podman-limits.sh

clean:
	$(CARGO) clean
