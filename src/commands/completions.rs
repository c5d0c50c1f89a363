//! `housekeep completions SHELL` and `housekeep man`: shell completions and the manual page,
//! generated from the command line's own definition, on stdout. Neither reads the
//! configuration, so both work on a machine that has none.
//!
//! ```sh
//! housekeep completions bash > /etc/bash_completion.d/housekeep
//! housekeep man > /usr/local/share/man/man1/housekeep.1
//! ```

use clap::Args;

use crate::error::{Error, Result};

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to complete in
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// Completions of `cmd` (the whole command line) for the shell asked.
pub fn completions(a: CompletionsArgs, mut cmd: clap::Command) -> Result<()> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "housekeep", &mut out);
    print(&out, "completions")
}

/// Write `out` to stdout; a reader that stopped reading (`| head`) is not an error.
fn print(out: &[u8], what: &str) -> Result<()> {
    match std::io::Write::write_all(&mut std::io::stdout(), out) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::other(format!("writing the {what}: {e}"))),
        _ => Ok(()),
    }
}

/// The manual page of `cmd`, with a section per subcommand, as roff.
pub fn man(cmd: clap::Command) -> Result<()> {
    let mut out = Vec::new();
    let fail = |e: std::io::Error| Error::other(format!("writing the manual page: {e}"));
    let cmd = cmd.version(env!("CARGO_PKG_VERSION"));
    clap_mangen::Man::new(cmd.clone()).render(&mut out).map_err(fail)?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("housekeep {}", sub.get_name());
        let page = sub.clone().bin_name(name);
        roff_section(&mut out, &page).map_err(fail)?;
    }
    print(&out, "manual page")
}

/// A subcommand as a SUBCOMMAND section of the page: its usage, description and options.
fn roff_section(out: &mut Vec<u8>, sub: &clap::Command) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(sub.clone());
    out.extend_from_slice(format!(".SH \"{}\"\n", sub.get_name().to_uppercase()).as_bytes());
    man.render_synopsis_section(out)?;
    man.render_description_section(out)?;
    man.render_options_section(out)
}
