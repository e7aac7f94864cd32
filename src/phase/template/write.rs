//! Writing rendered templates: every output that differs from its DEST is staged as a
//! temporary file in DEST's directory before any is renamed over its DEST, so one failure
//! writes nothing and a reader sees the old file or the new one, never a part. An output equal
//! to DEST's content leaves DEST untouched (its mtime stays).

use std::fmt;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use super::parent_dir;
use crate::error::Error;

/// The outputs of one rendering of every template, not yet written.
#[derive(Default)]
pub struct Rendered {
    pub(super) outputs: Vec<Output>,
    pub(super) owner: Option<Owner>,
}

/// Who the written DESTs belong to: `--user`'s USER:GROUP when the harness runs as root (the
/// command reads them as that user).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

pub(super) struct Output {
    pub(super) dest: PathBuf,
    pub(super) mode: u32,
    pub(super) content: Vec<u8>,
    pub(super) create_dir: bool,
    /// The content differed from DEST's when it was rendered.
    pub(super) changed: bool,
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
pub(super) fn same_content(dest: &Path, content: &[u8]) -> bool {
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
