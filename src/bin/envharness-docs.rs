//! Writes envharness's man page and shell completions from its clap definition
//! ([`envharness::config::cli::command`]), for `make install` and `make dist`. It is a build
//! tool behind the `docs` feature, so the shipped binary carries neither clap_mangen nor
//! clap_complete, and its size does not change.
//!
//! `envharness-docs DIR` writes, under DIR, the tree that `share/` holds once installed:
//! `man/man1/envharness.1`, `bash-completion/completions/envharness`,
//! `zsh/site-functions/_envharness` and `fish/vendor_completions.d/envharness.fish`.
//! The man page is one page: the run's options, then a section for the `kv` subcommand made of
//! clap_mangen's pieces for each of its subcommands, then the examples and exit statuses.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::exit;

use clap::{Command, CommandFactory};
use clap_complete::Shell;
use clap_mangen::Man;
use envharness::config::cli::Cli;

const NAME: &str = "envharness";

fn main() {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [out] = args.as_slice() else {
        eprintln!(
            "usage: envharness-docs DIR (writes DIR/man/man1/envharness.1 and the completions)"
        );
        exit(2);
    };
    if let Err(err) = write_all(out) {
        eprintln!("envharness-docs: {err}");
        exit(1);
    }
}

fn write_all(out: &Path) -> Result<(), String> {
    let command = envharness::config::cli::command();
    write(
        out,
        "man/man1/envharness.1",
        &man_page(&command).map_err(|e| e.to_string())?,
    )?;
    for (shell, relative) in [
        (Shell::Bash, "bash-completion/completions/envharness"),
        (Shell::Zsh, "zsh/site-functions/_envharness"),
        (Shell::Fish, "fish/vendor_completions.d/envharness.fish"),
    ] {
        let mut script = Vec::new();
        clap_complete::generate(shell, &mut command.clone(), NAME, &mut script);
        write(out, relative, &script)?;
    }
    Ok(())
}

fn write(out: &Path, relative: &str, content: &[u8]) -> Result<(), String> {
    let path = out.join(relative);
    let parent = path
        .parent()
        .expect("the relative paths above have a parent");
    fs::create_dir_all(parent).map_err(|err| format!("{}: {err}", parent.display()))?;
    fs::write(&path, content).map_err(|err| format!("{}: {err}", path.display()))
}

/// What the page says before the options, besides clap's one-line `about`: the phases in
/// order, as `--help` has no room for them.
const DESCRIPTION: &str = "\
envharness is the first thing a container (or a shebang script) runs. It runs the scripts of \
the export directory (/export) to announce the service, turns the entries of the environment \
directory (/environment) into environment variables (a plain file is a literal value, an \
executable's output is the value, a .env file sets several), then replaces itself with \
COMMAND. With --init it stays as the command's parent and PID 1 instead: it forwards signals, \
reaps zombies, re-runs discovery under --watch, publishes the export scripts' output in a \
registry (--kv) and runs /export/teardown when the command has exited.";

/// clap_mangen's page of the run (the synopsis and options of `Cli`), then the `kv`
/// subcommand, the examples and the exit statuses.
fn man_page(command: &Command) -> io::Result<Vec<u8>> {
    let run = Man::new(Cli::command());
    let kv = command.find_subcommand("kv").expect("the command has kv");
    let mut page = Vec::new();
    run.render_title(&mut page)?;
    run.render_name_section(&mut page)?;
    run.render_synopsis_section(&mut page)?;
    writeln!(page, ".br")?;
    let kv_synopsis = Man::new(with_bin_name(kv, "envharness [--kv URL] kv"));
    page.extend(section_body(&kv_synopsis, Man::render_synopsis_section)?);
    writeln!(page, ".SH DESCRIPTION\n{}", roff_text(DESCRIPTION))?;
    run.render_options_section(&mut page)?;
    kv_section(kv, &mut page)?;
    let after_help = command
        .get_after_help()
        .expect("the command has examples after its help")
        .to_string();
    let (examples, status) = after_help
        .split_once("\nExit status: ")
        .expect("the text after the help ends with the exit statuses");
    let examples = examples
        .trim()
        .trim_start_matches("Examples:")
        .trim_matches('\n');
    writeln!(page, ".SH EXAMPLES\n.nf\n{}\n.fi", roff_text(examples))?;
    let status = status.split_whitespace().collect::<Vec<_>>().join(" ");
    writeln!(
        page,
        ".SH \"EXIT STATUS\"\n{}",
        roff_text(&capitalised(&status))
    )?;
    run.render_version_section(&mut page)?;
    Ok(page)
}

/// `.SH "THE KV SUBCOMMAND"`: what `kv` is, then each of its subcommands as a subsection
/// holding its synopsis, what it does and its arguments.
fn kv_section(kv: &Command, page: &mut Vec<u8>) -> io::Result<()> {
    writeln!(page, ".SH \"THE KV SUBCOMMAND\"")?;
    page.extend(section_body(
        &Man::new(kv.clone()),
        Man::render_description_section,
    )?);
    for sub in kv.get_subcommands() {
        let name = format!("envharness kv {}", sub.get_name());
        writeln!(page, ".SS \"{name}\"")?;
        let man = Man::new(with_bin_name(sub, &name));
        page.extend(section_body(&man, Man::render_synopsis_section)?);
        writeln!(page, ".PP")?;
        page.extend(section_body(&man, Man::render_description_section)?);
        if sub.get_arguments().next().is_some() {
            page.extend(section_body(&man, Man::render_options_section)?);
        }
    }
    Ok(())
}

/// Text for roff: a backslash is escaped, a line that would start with a control character
/// (`.` or `'`) is guarded with `\&`, and `-` is a minus sign, as options must be to be
/// searched for and copied.
fn roff_text(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.replace('\\', "\\e").replace('-', "\\-");
            if line.starts_with(['.', '\'']) {
                format!("\\&{line}")
            } else {
                line
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn capitalised(text: &str) -> String {
    let mut chars = text.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

fn with_bin_name(command: &Command, bin_name: &str) -> Command {
    command.clone().bin_name(bin_name).disable_help_flag(true)
}

/// What `render` writes, without its `.SH` heading: for a section of our own.
fn section_body(
    man: &Man,
    render: impl Fn(&Man, &mut dyn Write) -> io::Result<()>,
) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    render(man, &mut text)?;
    let body: String = String::from_utf8_lossy(&text)
        .lines()
        .filter(|line| !line.starts_with(".SH "))
        .flat_map(|line| [line, "\n"])
        .collect();
    Ok(body.into_bytes())
}
