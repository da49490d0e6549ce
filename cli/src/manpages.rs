//! `ant manpages DIR`: man pages generated from the clap definitions (clap_mangen), for
//! packagers: `ant.1`, one `ant-SUBCOMMAND.1` per command, and `aniated.1`.

use std::path::Path;

use clap::CommandFactory;

fn render(command: &clap::Command, dir: &Path, name: &str) -> std::io::Result<()> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command.clone()).render(&mut page)?;
    aniated::fsutil::write_atomic(&dir.join(format!("{name}.1")), &page, 0o644)
}

/// Writes the pages; returns how many.
pub fn write_all(dir: &Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(dir)?;
    let ant = crate::args::Cli::command();
    render(&ant, dir, "ant")?;
    let mut written = 1;
    for sub in ant.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        let name = format!("ant-{}", sub.get_name());
        render(&sub.clone().name(name.clone()), dir, &name)?;
        written += 1;
    }
    render(&aniated::cli::Args::command(), dir, "aniated")?;
    Ok(written + 1)
}
