#!/usr/bin/env python3
"""Writes bench/hot-text.ld: the functions that start-up, the scripts' runs and an idle
supervisor execute, gathered at the start of the static binary's code, in that order, and
after them those that a harness holding a lease on etcd, then on etcd over TLS, adds; and the
read-only data those functions refer to, in the same order, at the start of .rodata.

Why: the kernel maps a binary's code 64 KiB around each page a process touches (fault-around),
so code that runs scattered over 2 MiB of text makes most of the binary resident. Gathered, the
running code fills a few 64 KiB windows and the code for TLS, etcd, templates and `kv` is paged
in only by the processes that run it (a supervisor's peak RSS: 2.0 MiB before, 1.1 MiB after).
The registry's code gathered in turn: a lease holder on the file store 1.88 -> 1.14 MiB, over
TLS 2.66 -> 1.78 MiB, each of 100 harnesses on etcd 1.91 -> 1.23 MiB (bench/watch.py).

The same holds for .rodata (the constants, strings, jump tables and vtables the code reads),
which the linker lays out in no useful order: a supervisor had 320-380 KiB of it resident,
one 64 KiB window for each of the few constants it read. Gathered: 188 KiB, and three page
faults fewer at each start.

How: builds the static binary with its symbols (target/hot-text), runs it in the scenarios
below under bench/trace_text.c, which puts a one-shot breakpoint on every function of it (in
the children it vforks too, until they exec), and writes one linker-script line per function
that was entered. The link keeps its relocations (--emit-relocs) and writes a map: each
constant is an input section of its own (`.rodata..Lanon.CRATE.N`), so the sections the
entered functions' relocations point into, and those these point into in turn, become the
lines of .rodata.hot. Constants are not traced, only referred to: a function's error
messages come along with the constants it reads. `make static` builds with the same cargo
profile (unstripped, then stripped), since the strip setting is part of those names. The
registry's scenarios need etcd and openssl (bench/watch.py starts them).
`make static` links with the script (GNU ld and lld read it with `INSERT BEFORE .text`). The
patterns leave out what a rebuild changes (the hash of a legacy symbol, a crate's
disambiguator), so the script stays useful as the code changes; a function that is new on the
path is only placed elsewhere. Run again (`make hot-text`) when the start-up or supervision
path changes much: `make bench` shows the supervisor's file-backed RSS.

    python3 bench/hot_text.py
"""

import bisect
import contextlib
import glob
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = "x86_64-unknown-linux-musl"
TARGET_DIR = os.path.join(ROOT, "target", "hot-text")
BINARY = os.path.join(TARGET_DIR, TARGET, "release", "envharness")
SCRIPT = os.path.join(ROOT, "bench", "hot-text.ld")
MAP = os.path.join(TARGET_DIR, "envharness.map")

# The scenarios, most important first: the supervisor's code comes first so that its pages are
# the fewest. EMPTY and TEN are directories: none and ten environment scripts; EXPORT has one
# export script.
SCENARIOS = [
    ["-e", "EMPTY", "-x", "EMPTY", "--init", "--", "sleep", "0.3"],
    ["-e", "EMPTY", "-x", "EMPTY", "--user", "nobody", "--", "true"],
    ["-e", "TEN", "-x", "TEN", "--init", "--", "sleep", "0.3"],
    ["-e", "EMPTY", "-x", "EMPTY", "--init", "--", "sh", "-c", "kill -TERM $PPID; sleep 1"],
    ["-e", "EMPTY", "-x", "EMPTY", "--init", "--watch", "0.1", "--", "sleep", "0.5"],
    ["-e", "TEN", "-x", "TEN", "--", "true"],
    ["-e", "EMPTY", "-x", "EMPTY", "--", "true"],
    ["-e", "TEN", "--print"],
]

# Then what a harness holding a lease runs, on the file store, on etcd and on etcd over TLS
# with a client certificate (a renewal every 0.67 s, the lease revoked at the end), so that the
# registry's code fills a few windows of its own after the supervisor's. STORE is the store's
# URL.
REGISTRY_SCENARIOS = [
    ("file", ["--init", "--kv", "STORE", "--ttl", "2", "-x", "EXPORT", "-e", "EMPTY",
              "--", "sleep", "2.5"]),
    ("etcd", ["--init", "--kv", "STORE", "--ttl", "2", "-x", "EXPORT", "-e", "EMPTY",
              "--", "sleep", "2.5"]),
    ("tls", ["--init", "--kv", "STORE", "--ttl", "2", "-x", "EXPORT", "-e", "EMPTY",
             "--", "sleep", "2.5"]),
]


def log(text):
    print(f"hot-text: {text}", file=sys.stderr, flush=True)


def build():
    env = dict(os.environ, CARGO_TARGET_DIR=TARGET_DIR, CARGO_PROFILE_RELEASE_STRIP="false",
               CC_x86_64_unknown_linux_musl="musl-gcc",
               CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS=
               "-C relocation-model=static -C target-feature=+crt-static"
               f" -C link-arg=-Wl,--emit-relocs -C link-arg=-Wl,-Map={MAP}")
    # The layout traced does not matter: addresses are mapped with this binary's symbols. The
    # relocations the link keeps, and its map, say which read-only data the code refers to.
    subprocess.run(["cargo", "build", "-q", "--release", "--target", TARGET], cwd=ROOT, env=env,
                   check=True)


def directories(work):
    empty, ten = os.path.join(work, "empty"), os.path.join(work, "ten")
    os.makedirs(empty)
    os.makedirs(ten)
    for i in range(10):
        path = os.path.join(ten, f"V{i}")
        with open(path, "w") as f:
            f.write("#!/bin/sh\necho value\n")
        os.chmod(path, 0o755)
    export = os.path.join(work, "export")
    os.makedirs(export)
    with open(os.path.join(export, "db"), "w") as f:
        f.write("#!/bin/sh\necho postgres://db:5432/app\n")
    os.chmod(os.path.join(export, "db"), 0o755)
    return {"EMPTY": empty, "TEN": ten, "EXPORT": export}


@contextlib.contextmanager
def registry(work, kind):
    """A store of `kind`: the file store, or a fresh etcd ("tls": requiring a client
    certificate) started with bench/watch.py's helpers: its URL and the variables that reach
    it."""
    if kind == "file":
        yield "file://" + os.path.join(work, "store"), {}
        return
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import watch
    tls = watch.make_certificates(work) if kind == "tls" else None
    proc, endpoint = watch.start_etcd(work, tls)
    if proc is None:
        raise SystemExit("hot-text: etcd is needed (apt-get install etcd-server)")
    try:
        scheme = "etcds" if tls else "etcd"
        yield f"{scheme}://{endpoint}/hot-text", watch.tls_env(tls) if tls else {}
    finally:
        proc.kill()
        proc.wait()


def traced(tracer, work, args, env=None):
    """The addresses of the functions the binary entered in one scenario."""
    out = os.path.join(work, "addresses")
    subprocess.run([tracer, out, os.path.join(work, "functions"), BINARY, *args], check=True,
                   timeout=600,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=dict(os.environ, **(env or {})))
    with open(out) as f:
        return [int(line, 16) for line in f]


def functions():
    """(start, size, name) of every function symbol, by address. A function written in
    assembly may have no size: it then reaches to the next symbol."""
    out = subprocess.run(["nm", "-S", "-n", BINARY], check=True, capture_output=True,
                         text=True).stdout
    symbols = []
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            symbols.append([int(fields[0], 16), int(fields[1], 16), fields[3]])
        elif len(fields) == 3 and fields[1] in "tTwW":
            symbols.append([int(fields[0], 16), None, fields[2]])
    symbols.sort(key=lambda symbol: symbol[0])
    for symbol, following in zip(symbols, symbols[1:] + [[None, 0, ""]]):
        if symbol[1] is None:
            symbol[1] = following[0] - symbol[0] if following[0] else 1
    return [tuple(symbol) for symbol in symbols]


def names_at(symbols, starts, address):
    """Every name of the function holding `address` (identical functions share one body)."""
    i = bisect.bisect_right(starts, address) - 1
    names = []
    j = i
    while j >= 0 and symbols[j][0] == symbols[i][0]:
        start, size, name = symbols[j]
        if start <= address < start + max(size, 1):
            names.append(name)
        j -= 1
    return names


def pattern(name):
    """The section name pattern of a function, without what changes from build to build."""
    name = re.sub(r"\.llvm\.\d+$", "", name)
    name = re.sub(r"17h[0-9a-f]{16}E$", "17h*", name)
    name = re.sub(r"Cs[0-9a-zA-Z]+_", "*", name)
    return name if name.endswith("*") else name + "*"


def ring_members():
    """The member of ring's archive that defines each of its functions, without the hash the
    build puts before its name: an assembly file's functions are all in its object's .text,
    which no function name selects."""
    members = {}
    build = os.path.join(TARGET_DIR, TARGET, "release", "build")
    for archive in glob.glob(os.path.join(build, "ring-*", "out", "libring_core_*.a")):
        if archive.endswith("_test.a"):
            continue
        out = subprocess.run(["nm", "-A", "--defined-only", archive], check=True,
                             capture_output=True, text=True).stdout
        for line in out.splitlines():
            where, _, name = line.rpartition(" ")
            member = where.split(":")[1]
            members[name] = member.split("-", 1)[-1]
    return members


def rodata_sections():
    """(address, size, name, object) of every input section of .rodata, from the link map, by
    address. A long name is on a line of its own, its address and size on the next."""
    sections = []
    with open(MAP) as f:
        lines = f.read().split("\n")
    inside = False
    for i, line in enumerate(lines):
        if line.startswith(".rodata "):
            inside = True
        elif inside and line and not line.startswith(" "):
            break
        match = inside and re.match(r"^ (\.rodata\S*)(?:\s+(0x\S+)\s+(0x\S+)\s+(\S+))?$", line)
        if not match:
            continue
        name, address, size, obj = match.groups()
        if address is None:
            following = re.match(r"^\s+(0x\S+)\s+(0x\S+)\s+(\S+)", lines[i + 1])
            if not following:
                continue
            address, size, obj = following.groups()
        sections.append((int(address, 16), int(size, 16), name, obj))
    sections.sort()
    return sections


def relocations(*sections):
    """For each of `sections`, (where, address referred to) of each relocation the binary kept
    for it, by where: one read of readelf's output. A PC-relative one's addend counts from the
    end of its 4-byte field."""
    out = subprocess.run(["readelf", "-rW", BINARY], check=True, capture_output=True,
                         text=True).stdout
    found = {section: [] for section in sections}
    current = None
    for line in out.splitlines():
        header = re.match(r"Relocation section '(\S+)'", line)
        if header:
            current = found.get(header.group(1))
            continue
        fields = line.split()
        if current is None or len(fields) < 4 or not re.fullmatch(r"[0-9a-f]{16}", fields[0]):
            continue
        addend = re.search(r"([+-]) ([0-9a-f]+)$", line)
        target = int(fields[3], 16)
        if addend:
            target += int(addend.group(2), 16) * (1 if addend.group(1) == "+" else -1)
        if "PC" in fields[2] or "PLT" in fields[2]:
            target += 4
        current.append((int(fields[0], 16), target))
    return [sorted(found[section]) for section in sections]


def rodata_lines(functions_entered):
    """The read-only data the entered functions refer to, in their order, and the data that
    data refers to (a vtable's strings): one linker-script line per input section. The
    compiler gives each constant a section of its own (`.rodata..Lanon.CRATE.N`, a jump
    table's `.rodata.FUNCTION`); a C library object's `.rodata` goes whole, and the merged
    constants (`.cst16`, `.str1.1`) stay where the linker merges them."""
    sections = rodata_sections()
    starts = [section[0] for section in sections]
    code, data = relocations(".rela.text", ".rela.rodata")
    code_at = [where for where, _ in code]
    data_at = [where for where, _ in data]
    order, seen = [], set()

    def section_of(address):
        i = bisect.bisect_right(starts, address) - 1
        if i >= 0 and address < starts[i] + max(sections[i][1], 1):
            return i
        return None

    def gather(i):
        if i is None or i in seen:
            return
        seen.add(i)
        order.append(i)
        start, size = sections[i][:2]
        for _, target in data[bisect.bisect_left(data_at, start):
                              bisect.bisect_left(data_at, start + size)]:
            gather(section_of(target))

    for start, size in functions_entered:
        for _, target in code[bisect.bisect_left(code_at, start):
                              bisect.bisect_left(code_at, start + size)]:
            gather(section_of(target))
    lines = []
    for i in order:
        name, obj = sections[i][2], sections[i][3]
        member = re.search(r"libc\.a\((\S+)\)$", obj)
        if member and name == ".rodata":
            lines.append(f"    *libc.a:{member.group(1)}(.rodata)")
        elif name != ".rodata" and not re.match(r"\.rodata\.(cst\d+|str\d\.\d+)$", name):
            name = re.sub(r"17h[0-9a-f]{16}E", "17h*E", name)
            lines.append(f"    *({re.sub(r'Cs[0-9a-zA-Z]+_', '*', name)})")
    return list(dict.fromkeys(lines)), sum(sections[i][1] for i in order)


def section_lines(patterns):
    lines = []
    members = ring_members()
    placed = set()
    for p in patterns:
        # Cold functions (#[cold], panics' paths) are in .text.unlikely.NAME; a C library
        # function written in assembly is in its object file's .text, and so is one of ring's.
        line = f"    *(.text.{p} .text.unlikely.{p})"
        if not p.startswith(("_R", "_ZN")):
            line += f"\n    *libc.a:{p[:-1]}.lo(.text)"
            member = members.get(p[:-1])
            if member is not None and member not in placed:
                placed.add(member)
                line += f"\n    *:*-{member}(.text)"
        lines.append(line)
    return lines


def main():
    log("building the static binary with symbols (target/hot-text)")
    build()
    symbols = functions()
    starts = [s[0] for s in symbols]
    with tempfile.TemporaryDirectory(prefix="envharness-hot-text.") as work:
        tracer = os.path.join(work, "trace_text")
        subprocess.run(["gcc", "-O2", "-o", tracer, os.path.join(ROOT, "bench", "trace_text.c")],
                       check=True)
        dirs = directories(work)
        with open(os.path.join(work, "functions"), "w") as f:
            f.writelines(f"{start:x}\n" for start in sorted(set(starts)))
        patterns = {}
        entered = {}

        def trace(scenario, env=None):
            args = [dirs.get(arg, arg) for arg in scenario]
            log(f"tracing envharness {' '.join(scenario)}")
            for address in traced(tracer, work, args, env):
                for name in names_at(symbols, starts, address):
                    patterns.setdefault(pattern(name), None)
                start, size, _ = symbols[bisect.bisect_right(starts, address) - 1]
                entered.setdefault((start, size), None)

        for scenario in SCENARIOS:
            trace(scenario)
        for kind, scenario in REGISTRY_SCENARIOS:
            with registry(work, kind) as (url, env):
                trace([{"STORE": url}.get(arg, arg) for arg in scenario], env)
    text = [
        "/* The functions start-up and supervision run, gathered at the start of the code, and",
        "   the read-only data they refer to at the start of .rodata, so that they fill few",
        "   pages (written by bench/hot_text.py: read why there). */",
        "SECTIONS",
        "{",
        "  .text.hot :",
        "  {",
        "    *crt1.o(.text .text.*)",
        "    /* exit calls _fini, which crti.o and crtn.o make in two halves of .fini; after all",
        "       the code, it was a 64 KiB window of its own, paged in at every exit. */",
        "    KEEP(*crti.o(.fini))",
        "    KEEP(*crtn.o(.fini))",
        *section_lines(patterns),
        "  }",
        "}",
        "INSERT BEFORE .text;",
    ]
    data, size = rodata_lines(entered)
    rodata = ["SECTIONS", "{", "  .rodata.hot :", "  {", *data, "  }", "}",
              "INSERT BEFORE .rodata;", ""]
    with open(SCRIPT, "w") as f:
        f.write("\n".join(text + rodata))
    log(f"{len(patterns)} functions and {len(data)} sections of read-only data ({size} bytes)"
        f" in {os.path.relpath(SCRIPT, ROOT)}")


if __name__ == "__main__":
    main()
