//! Templates (docs/reference.md §9): `-t SRC:DEST` renders SRC with Jinja syntax (the `minijinja`
//! crate) to DEST. The context is the final environment: every variable as a top-level name, and
//! all of them in the map `env`.
//!
//! Invariants:
//! - Rendering is strict (an undefined name is an error naming the template, its line and the
//!   name; `default` and `is defined` still work), nothing is auto-escaped whatever the file
//!   name, and the template's final newline is kept: the output is what Jinja2 would write.
//! - Every template is rendered into memory (each output at most [`OUTPUT_LIMIT`] bytes)
//!   before any file is written; then every changed output is staged as a temporary file in
//!   its DEST's directory before any is renamed over its DEST. So one failure writes nothing,
//!   and a reader of DEST sees the old file or the new one, never a part. An output equal to
//!   DEST's content leaves DEST untouched (its mtime stays).
//! - Values never reach a message. Errors are built from minijinja's error kind, the
//!   template's name and line and the variable names involved; never from the detail of a
//!   failed operation (which may quote a value) nor from minijinja's debug display (the
//!   `debug` feature, not enabled, would print the context).
//!
//! Every failure is an [`Error`] naming SRC or DEST and the reason: exit 125 at start, a
//! warning and no file written under `--watch` (see `watch.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Enumerator, Object, Value};
use minijinja::{AutoEscape, ErrorKind, UndefinedBehavior};

use super::entries::{self, Kind};
use crate::error::Error;
use crate::os::read_at_most;
use crate::variables::Environment;

/// The largest template source and the largest output, in bytes. Config files are kilobytes;
/// a render past this is a runaway loop, and all outputs are held in memory until written.
pub const OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// The work one render may do, in minijinja's fuel (about one unit per instruction, one per 64
/// bytes of data): about 25 ms here, and at most about 64 MB of data. A config file of 100
/// upstream lines takes under 1,000; a template that needs a thousand times that is a loop
/// that would hold up the start (or a re-run) for good.
pub const FUEL: u64 = 1_000_000;

/// Suffixes a directory SRC's entries lose in DEST (`nginx.conf.j2` -> `nginx.conf`).
const SUFFIXES: [&str; 2] = [".template", ".j2"];

/// One `-t SRC:DEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub src: PathBuf,
    pub dest: PathBuf,
}

impl Template {
    /// `SRC:DEST`, split at the first `:` (so DEST may hold one, SRC may not).
    pub fn parse(text: &OsStr) -> Result<Template, Error> {
        let bytes = text.as_bytes();
        let shown = text.to_string_lossy();
        let Some(colon) = bytes.iter().position(|byte| *byte == b':') else {
            return Err(Error::Usage(format!(
                "--template {shown:?}: no ':' between SRC and DEST (use SRC:DEST)"
            )));
        };
        let (src, dest) = (&bytes[..colon], &bytes[colon + 1..]);
        if src.is_empty() || dest.is_empty() {
            return Err(Error::Usage(format!(
                "--template {shown:?}: SRC and DEST must both be given (use SRC:DEST)"
            )));
        }
        Ok(Template {
            src: OsStr::from_bytes(src).into(),
            dest: OsStr::from_bytes(dest).into(),
        })
    }
}

/// One file to render: a file SRC, or one entry of a directory SRC.
struct Source {
    src: PathBuf,
    /// SRC as minijinja's template name (what its errors carry).
    name: String,
    text: String,
    dest: PathBuf,
    mode: u32,
    /// DEST's directory may be created (a directory SRC's DEST).
    create_dir: bool,
}

/// The outputs of one rendering of every template, not yet written.
#[derive(Default)]
pub struct Rendered {
    outputs: Vec<Output>,
    owner: Option<Owner>,
}

/// Who the written DESTs belong to: `--user`'s USER:GROUP when the harness runs as root (the
/// command reads them as that user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

struct Output {
    dest: PathBuf,
    mode: u32,
    content: Vec<u8>,
    create_dir: bool,
    /// The content differed from DEST's when it was rendered.
    changed: bool,
}

// Written by hand: the derived one would print the contents, which hold values.
impl fmt::Debug for Rendered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.outputs.iter().map(|output| &output.dest))
            .finish()
    }
}

impl Rendered {
    /// The DESTs whose content differed from the output when it was rendered, in the order
    /// the templates were given.
    pub fn changed(&self) -> Vec<PathBuf> {
        self.outputs
            .iter()
            .filter(|output| output.changed)
            .map(|output| output.dest.clone())
            .collect()
    }

    /// Writes every output that differs from its DEST now ([`Rendered::stage`], then
    /// [`Staged::commit`]).
    pub fn write(&self) -> Result<(), Error> {
        self.stage()?.commit()
    }

    /// Writes every output that differs from its DEST now to a temporary file next to it;
    /// when one cannot be written, the others are removed and nothing is left behind.
    pub fn stage(&self) -> Result<Staged, Error> {
        let mut staged = Staged::default();
        for output in &self.outputs {
            if !same_content(&output.dest, &output.content) {
                // On an error, dropping `staged` removes the files staged so far.
                let temporary = stage(output, self.owner)?;
                staged.files.push((temporary, output.dest.clone()));
            }
        }
        Ok(staged)
    }
}

/// Temporary files that hold the outputs, each in its DEST's directory, not yet renamed over
/// their DESTs. Dropped uncommitted (a restart that was cancelled), they are removed.
#[derive(Debug, Default)]
pub struct Staged {
    /// (temporary file, DEST)
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    /// Renames each temporary file over its DEST. A rename within one directory fails only
    /// when the directory changed under envharness; the rest are then removed.
    pub fn commit(&mut self) -> Result<(), Error> {
        for (temporary, dest) in std::mem::take(&mut self.files) {
            if let Err(err) = fs::rename(&temporary, &dest) {
                let _ = fs::remove_file(&temporary);
                return Err(Error::io(
                    &dest,
                    "replacing it with the rendered template",
                    err,
                ));
            }
            log::debug!("wrote {}", dest.display());
        }
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (temporary, _) in &self.files {
            let _ = fs::remove_file(temporary);
        }
    }
}

/// Renders every template with `env` (the final environment); writes nothing.
pub fn render_all(
    templates: &[Template],
    env: &Environment,
    owner: Option<Owner>,
) -> Result<Rendered, Error> {
    if templates.is_empty() {
        return Ok(Rendered::default());
    }
    let mut sources = Vec::new();
    for template in templates {
        sources.extend(expand(template, true)?);
    }
    one_source_per_dest(&sources)?;
    let engine = engine();
    let globals: HashSet<String> = engine.globals().map(|(name, _)| name.to_owned()).collect();
    let vars = Arc::new(Vars::new(env));
    let mut outputs = Vec::with_capacity(sources.len());
    for source in &sources {
        let content = render(&engine, &vars, &globals, source)?;
        outputs.push(Output {
            changed: !same_content(&source.dest, &content),
            dest: source.dest.clone(),
            mode: source.mode,
            content,
            create_dir: source.create_dir,
        });
    }
    Ok(Rendered { outputs, owner })
}

/// `--plan`'s lines: `template SRC -> DEST`, once per `-t`, each with the first error found
/// (a missing SRC, a syntax error, a DEST that cannot be); nothing is rendered or written.
pub fn describe(templates: &[Template]) -> Vec<(String, Option<Error>)> {
    templates
        .iter()
        .map(|template| {
            let head = format!(
                "template {} -> {}",
                template.src.display(),
                template.dest.display()
            );
            match check(template) {
                Ok(()) => (head, None),
                Err(err) => (format!("{head}: error ({err})"), Some(err)),
            }
        })
        .collect()
}

fn check(template: &Template) -> Result<(), Error> {
    let engine = engine();
    for source in expand(template, false)? {
        engine
            .template_from_named_str(&source.name, &source.text)
            .map_err(|err| template_error(&source, &err, &[]))?;
    }
    Ok(())
}

/// minijinja configured as Jinja2 renders a config file: strict, no escaping, the final
/// newline kept.
fn engine<'source>() -> minijinja::Environment<'source> {
    let mut engine = minijinja::Environment::new();
    engine.set_undefined_behavior(UndefinedBehavior::Strict);
    // minijinja escapes by the template's extension (.html, .xml, .json...); Jinja2 does not.
    engine.set_auto_escape_callback(|_| AutoEscape::None);
    engine.set_syntax(
        SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    engine.set_fuel(Some(FUEL));
    engine
}

/// The files one `-t` renders, read and checked: SRC exists; for a file SRC, DEST is not a
/// directory and its directory exists; for a directory SRC, DEST is not a file.
fn expand(template: &Template, warn: bool) -> Result<Vec<Source>, Error> {
    let Template { src, dest } = template;
    let meta = match fs::metadata(src) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(Error::entry(src, "no such template (SRC of --template)"))
        }
        Err(err) => return Err(Error::io(src, "reading the template", err)),
    };
    if !meta.is_dir() {
        if dest.is_dir() {
            return Err(Error::entry(
                dest,
                format!(
                    "is a directory; the template {} is a file, so DEST must name a file",
                    src.display()
                ),
            ));
        }
        let dir = parent_dir(dest);
        if !dir.is_dir() {
            return Err(Error::entry(
                dest,
                format!(
                    "its directory {} does not exist (only a directory SRC creates DEST)",
                    dir.display()
                ),
            ));
        }
        return Ok(vec![read_source(src, dest.clone(), false)?]);
    }
    if dest.exists() && !dest.is_dir() {
        return Err(Error::entry(
            dest,
            format!(
                "not a directory; the template {} is a directory, so DEST must be one",
                src.display()
            ),
        ));
    }
    let mut sources = Vec::new();
    for entry in entries::template_entries(src)? {
        match entry.kind {
            Kind::Ignored(_) => {}
            Kind::Skipped(reason) => {
                if warn {
                    log::warn!("{}: {reason}, skipped", entry.path.display());
                }
            }
            Kind::Invalid(reason) => return Err(Error::entry(&entry.path, reason)),
            Kind::Run | Kind::Literal | Kind::Dotenv { .. } => {
                let name = rendered_name(&entry.name);
                sources.push(read_source(&entry.path, dest.join(name), true)?);
            }
        }
    }
    Ok(sources)
}

/// An entry's name minus a trailing `.template` or `.j2` (kept when nothing would be left).
fn rendered_name(name: &OsStr) -> &OsStr {
    let bytes = name.as_bytes();
    for suffix in SUFFIXES {
        if let Some(stem) = bytes.strip_suffix(suffix.as_bytes()) {
            if !stem.is_empty() {
                return OsStr::from_bytes(stem);
            }
        }
    }
    name
}

/// A file's directory: `app.conf` is in `.`.
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn read_source(src: &Path, dest: PathBuf, create_dir: bool) -> Result<Source, Error> {
    let reading = |err| Error::io(src, "reading the template", err);
    let file = File::open(src).map_err(reading)?;
    let meta = file.metadata().map_err(reading)?;
    let too_large = || {
        Error::entry(
            src,
            format!("larger than {OUTPUT_LIMIT} bytes, the limit for a template"),
        )
    };
    if meta.len() > OUTPUT_LIMIT as u64 {
        return Err(too_large());
    }
    let bytes = read_at_most(file, OUTPUT_LIMIT)
        .map_err(reading)?
        .ok_or_else(too_large)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::entry(src, "not UTF-8 text, so not a template"))?;
    Ok(Source {
        name: src.to_string_lossy().into_owned(),
        src: src.to_owned(),
        text,
        dest,
        mode: meta.permissions().mode() & 0o777,
        create_dir,
    })
}

/// Two templates rendering to one DEST would make the result depend on their order.
fn one_source_per_dest(sources: &[Source]) -> Result<(), Error> {
    let mut seen: BTreeMap<&Path, &Path> = BTreeMap::new();
    for source in sources {
        if let Some(first) = seen.insert(&source.dest, &source.src) {
            return Err(Error::entry(
                &source.dest,
                format!(
                    "rendered from both {} and {}; give each DEST once",
                    first.display(),
                    source.src.display()
                ),
            ));
        }
    }
    Ok(())
}

fn render(
    engine: &minijinja::Environment<'_>,
    vars: &Arc<Vars>,
    globals: &HashSet<String>,
    source: &Source,
) -> Result<Vec<u8>, Error> {
    let template = engine
        .template_from_named_str(&source.name, &source.text)
        .map_err(|err| template_error(source, &err, &[]))?;
    vars.start();
    let mut out = Bounded::default();
    let result = template.render_captured_to(Value::from_object(Root(vars.clone())), &mut out);
    let record = vars.finish();
    // Checked first: the template's output would hold bytes that are not the value.
    if let Some(name) = record.not_utf8 {
        return Err(Error::entry(
            &source.src,
            format!("uses {name}, whose value is not UTF-8"),
        ));
    }
    if out.over {
        return Err(Error::entry(
            &source.src,
            format!("renders to more than {OUTPUT_LIMIT} bytes, the limit"),
        ));
    }
    let missing: Vec<String> = record
        .missing
        .into_iter()
        .filter(|name| !globals.contains(name))
        .collect();
    match result {
        Ok(_) => Ok(out.bytes),
        Err(err) => Err(template_error(source, &err, &missing)),
    }
}

/// The one-line reason for a minijinja error: its kind, line and the names involved. Only
/// the details that come from the template's source (a syntax error, an unknown filter,
/// test or function) are shown; a failed operation's detail may quote a value.
fn template_error(source: &Source, err: &minijinja::Error, missing: &[String]) -> Error {
    let kind = err.kind();
    let what = match (kind, err.detail()) {
        (ErrorKind::UndefinedError, _) => undefined(&source.text, err.line(), missing),
        (ErrorKind::OutOfFuel, _) => {
            format!("exceeded its budget of {FUEL} units of work (an endless loop?)")
        }
        (
            ErrorKind::SyntaxError
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction,
            Some(detail),
        ) => format!("{kind}: {detail}"),
        _ => kind.to_string(),
    };
    let reason = match err.line() {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    };
    Error::entry(&source.src, reason)
}

/// Which name was undefined. minijinja (without its `debug` feature) does not say, so: of the
/// names the render looked up and did not find, those on the error's line, preferring those
/// not guarded there by `default` or `is defined`.
fn undefined(text: &str, line: Option<usize>, missing: &[String]) -> String {
    let line_text = line
        .and_then(|line| text.lines().nth(line.saturating_sub(1)))
        .unwrap_or("");
    let on_line: Vec<&String> = missing
        .iter()
        .filter(|name| !occurrences(line_text, name).is_empty())
        .collect();
    let unguarded: Vec<&String> = on_line
        .iter()
        .copied()
        .filter(|name| {
            occurrences(line_text, name)
                .into_iter()
                .any(|at| !guarded(&line_text[at + name.len()..]))
        })
        .collect();
    let names: Vec<&String> = [unguarded, on_line, missing.iter().collect()]
        .into_iter()
        .find(|names| !names.is_empty())
        .unwrap_or_default();
    match names.as_slice() {
        [] => "undefined value".into(),
        [name] => format!("{name} is undefined"),
        names => format!(
            "undefined: one of {}",
            names
                .iter()
                .map(|name| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Where `name` occurs in `line` as a whole word.
fn occurrences(line: &str, name: &str) -> Vec<usize> {
    let word = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    let bytes = line.as_bytes();
    line.match_indices(name)
        .map(|(at, _)| at)
        .filter(|&at| {
            let before = at.checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(at + name.len()).copied();
            !before.is_some_and(word) && !after.is_some_and(word)
        })
        .collect()
}

/// Whether the text after a name makes it safe to be undefined (`X | default(...)`,
/// `env["X"] is defined`, ...).
fn guarded(after: &str) -> bool {
    let rest = after.trim_start_matches(['"', '\'', ']', ' ']);
    let filtered = rest.strip_prefix('|').map(str::trim_start);
    if let Some(filter) = filtered {
        return filter.starts_with("default") || filter.starts_with("d(");
    }
    let Some(test) = rest.strip_prefix("is ") else {
        return false;
    };
    let test = test.trim_start();
    let test = test
        .strip_prefix("not ")
        .map(str::trim_start)
        .unwrap_or(test);
    test.starts_with("defined") || test.starts_with("undefined")
}

/// Collects a render's output up to [`OUTPUT_LIMIT`]; past it, the write fails and the render
/// stops.
#[derive(Default)]
struct Bounded {
    bytes: Vec<u8>,
    over: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > OUTPUT_LIMIT {
            self.over = true;
            return Err(io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The final environment as template values, recording what a render looks up: the names it
/// did not find (for the undefined-name message) and the first one used whose value is not
/// UTF-8 (an error, since a template's output is text).
struct Vars {
    values: HashMap<String, Value>,
    not_utf8: HashSet<String>,
    /// Every name, in byte order: `env`'s keys.
    names: Vec<Value>,
    record: Mutex<Record>,
}

#[derive(Default)]
struct Record {
    missing: Vec<String>,
    not_utf8: Option<String>,
}

impl Vars {
    fn new(env: &Environment) -> Vars {
        let mut values = HashMap::with_capacity(env.len());
        let mut not_utf8 = HashSet::new();
        for (name, value) in env {
            // A name that is not UTF-8 cannot be written in a template.
            let Some(name) = name.to_str() else { continue };
            let text = match value.to_str() {
                Some(text) => text.to_owned(),
                None => {
                    not_utf8.insert(name.to_owned());
                    value.to_string_lossy().into_owned()
                }
            };
            values.insert(name.to_owned(), Value::from(text));
        }
        let mut names: Vec<&String> = values.keys().collect();
        names.sort();
        let names = names
            .into_iter()
            .map(|name| Value::from(name.as_str()))
            .collect();
        Vars {
            values,
            not_utf8,
            names,
            record: Mutex::default(),
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn start(&self) {
        *self.record() = Record::default();
    }

    fn finish(&self) -> Record {
        std::mem::take(&mut *self.record())
    }

    fn lookup(&self, name: &str) -> Option<Value> {
        match self.values.get(name) {
            Some(value) => {
                if self.not_utf8.contains(name) {
                    self.record()
                        .not_utf8
                        .get_or_insert_with(|| name.to_owned());
                }
                Some(value.clone())
            }
            None => {
                let mut record = self.record();
                if !record.missing.iter().any(|seen| seen == name) {
                    record.missing.push(name.to_owned());
                }
                None
            }
        }
    }
}

// Written by hand: minijinja may format an object, and this one holds values.
impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} variables>", self.values.len())
    }
}

/// The template's top level: every variable by name, and `env`.
#[derive(Debug)]
struct Root(Arc<Vars>);

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, name: &str) -> Option<Value> {
        // `env` is the map even if a variable is named `env`: templates can rely on it.
        if name == "env" {
            return Some(Value::from_object(EnvMap(self.0.clone())));
        }
        self.0.lookup(name)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }
}

/// `env`: a map of every variable, iterated in byte order of the names.
#[derive(Debug)]
struct EnvMap(Arc<Vars>);

impl Object for EnvMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.lookup(key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.names.clone())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.names.len())
    }
}

/// Writes `output` to a new temporary file next to its DEST, with SRC's permission bits.
fn stage(output: &Output, owner: Option<Owner>) -> Result<PathBuf, Error> {
    let dir = parent_dir(&output.dest);
    if output.create_dir {
        fs::create_dir_all(dir)
            .map_err(|err| Error::io(dir, "creating the template's DEST directory", err))?;
    }
    let writing = |err| Error::io(&output.dest, "writing the rendered template", err);
    let (temporary, mut file) = create_temporary(&output.dest, output.mode).map_err(writing)?;
    let owned = match owner {
        Some(owner) => std::os::unix::fs::fchown(&file, Some(owner.uid), Some(owner.gid)),
        None => Ok(()),
    };
    let written = owned
        // The mode given to open is reduced by the umask; SRC's bits are wanted exactly (set
        // after the chown, which would clear a setuid bit).
        .and_then(|()| file.set_permissions(Permissions::from_mode(output.mode)))
        .and_then(|()| file.write_all(&output.content));
    if let Err(err) = written {
        let _ = fs::remove_file(&temporary);
        return Err(writing(err));
    }
    Ok(temporary)
}

/// A new file `.NAME.envharness-PID-N` in DEST's directory: a dot-name, so a program reading
/// that directory (`conf.d/*.conf`) or envharness itself passes over it.
fn create_temporary(dest: &Path, mode: u32) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let name = dest
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tries = 0;
    loop {
        tries += 1;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let temporary =
            parent_dir(dest).join(format!(".{name}.envharness-{}-{n}", std::process::id()));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temporary)
        {
            Ok(file) => return Ok((temporary, file)),
            // Left by a harness that died with this pid: take the next name.
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists && tries < 1000 => continue,
            Err(err) => return Err(err),
        }
    }
}

/// Whether DEST is a regular file holding exactly `content`.
fn same_content(dest: &Path, content: &[u8]) -> bool {
    let Ok(file) = File::open(dest) else {
        return false;
    };
    match file.metadata() {
        Ok(meta) if meta.is_file() && meta.len() == content.len() as u64 => {}
        _ => return false,
    }
    let mut current = Vec::with_capacity(content.len());
    file.take(content.len() as u64 + 1)
        .read_to_end(&mut current)
        .is_ok()
        && current == content
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn source(text: &str) -> Source {
        Source {
            src: "t.j2".into(),
            name: "t.j2".into(),
            text: text.into(),
            dest: "out".into(),
            mode: 0o644,
            create_dir: false,
        }
    }

    fn render_text(text: &str, pairs: &[(&str, &str)]) -> Result<String, Error> {
        let engine = engine();
        let globals = engine.globals().map(|(n, _)| n.to_owned()).collect();
        let vars = Arc::new(Vars::new(&env(pairs)));
        render(&engine, &vars, &globals, &source(text)).map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn split_at_the_first_colon() {
        let t = Template::parse(OsStr::new("a.j2:/etc/x:y")).unwrap();
        assert_eq!(t.src, PathBuf::from("a.j2"));
        assert_eq!(t.dest, PathBuf::from("/etc/x:y"));
        for bad in ["a.j2", ":b", "a:"] {
            assert!(matches!(
                Template::parse(OsStr::new(bad)),
                Err(Error::Usage(_))
            ));
        }
    }

    #[test]
    fn names_env_final_newline_and_no_escaping() {
        let out = render_text(
            "{{ A }} {{ env['B'] }} {{ A | upper }}\n",
            &[("A", "<a&>"), ("B", "b")],
        );
        assert_eq!(out.unwrap(), "<a&> b <A&>\n");
    }

    #[test]
    fn default_and_is_defined_work_under_strict() {
        let out = render_text(
            "{{ X | default('x') }}{% if Y is defined %}y{% else %}n{% endif %}",
            &[],
        );
        assert_eq!(out.unwrap(), "xn");
    }

    #[test]
    fn the_undefined_name_is_the_unguarded_one_on_the_line() {
        let err = render_text("ok\n{{ A | default('a') }} {{ B }}\n", &[]).unwrap_err();
        assert_eq!(err.to_string(), "t.j2: line 2: B is undefined");
        let err = render_text("{{ env['C'] }}", &[]).unwrap_err();
        assert_eq!(err.to_string(), "t.j2: line 1: C is undefined");
    }

    #[test]
    fn a_failed_operation_shows_no_value() {
        let err = render_text("{{ A + 1 }}", &[("A", "s3cret")]).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().starts_with("t.j2: line 1: "), "{err}");
    }

    #[test]
    fn directory_entries_lose_one_suffix() {
        assert_eq!(rendered_name(OsStr::new("a.conf.j2")), "a.conf");
        assert_eq!(rendered_name(OsStr::new("a.template")), "a");
        assert_eq!(rendered_name(OsStr::new("a.conf")), "a.conf");
        assert_eq!(rendered_name(OsStr::new("x.j2.template")), "x.j2");
    }

    #[test]
    fn guards() {
        assert!(guarded(" | default('x') }}"));
        assert!(guarded("|d('x')"));
        assert!(guarded("\"] is not defined %}"));
        assert!(guarded(" is undefined"));
        assert!(!guarded(" }}"));
        assert!(!guarded(" | upper }}"));
    }
}
