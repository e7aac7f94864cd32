#!/bin/sh
# .ci/deb.sh VERSION ARCH BINARY DOCS OUT: the Debian package of the static BINARY for
# ARCH (amd64, arm64), with the man page and the completions that envharness-docs wrote in
# DOCS, as OUT/envharness_VERSION_ARCH.deb. `make dist` runs it once per architecture.
#
# The files go where Debian's own packages put them: /usr/bin, the man page gzipped, bash's
# completion where bash-completion loads it on demand, zsh's in vendor-completions (on zsh's
# fpath in Debian), fish's in vendor_completions.d. The binary is static, so the package
# depends on nothing. dpkg-deb --root-owner-group makes every file root's without fakeroot.
set -eu
version=$1 arch=$2 binary=$3 docs=$4 out=$5
# Set DEB_MAINTAINER to the name and address of whoever publishes the package.
maintainer=${DEB_MAINTAINER:-envharness developers <envharness@localhost>}
root=target/deb/$arch
rm -rf "$root"
install -D -m 0755 "$binary" "$root/usr/bin/envharness"
install -D -m 0644 "$docs/man/man1/envharness.1" "$root/usr/share/man/man1/envharness.1"
gzip -9n "$root/usr/share/man/man1/envharness.1"
install -D -m 0644 "$docs/bash-completion/completions/envharness" \
	"$root/usr/share/bash-completion/completions/envharness"
install -D -m 0644 "$docs/zsh/site-functions/_envharness" \
	"$root/usr/share/zsh/vendor-completions/_envharness"
install -D -m 0644 "$docs/fish/vendor_completions.d/envharness.fish" \
	"$root/usr/share/fish/vendor_completions.d/envharness.fish"
mkdir -p "$root/usr/share/doc/envharness" "$root/DEBIAN"
cat >"$root/usr/share/doc/envharness/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: envharness

Files: *
License: MIT or Apache-2.0
COPYRIGHT
cat >"$root/DEBIAN/control" <<CONTROL
Package: envharness
Version: $version
Architecture: $arch
Maintainer: $maintainer
Installed-Size: $(du -sk "$root/usr" | cut -f1)
Section: admin
Priority: optional
Description: container entrypoint: announce, discover the environment, exec
 envharness is the first thing a container (or a shebang script) runs: it
 runs the scripts of an export directory, turns the entries of an environment
 directory into environment variables, then execs the command. With --init it
 stays as the command's PID 1, forwards signals, reaps zombies, follows
 changes and publishes the service in a registry (a shared directory or etcd).
CONTROL
dpkg-deb --root-owner-group -Zxz --build "$root" "$out/envharness_${version}_${arch}.deb" >/dev/null
