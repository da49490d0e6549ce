//! `--help` and the docs say the same (issue 20): every subcommand, alias, long flag and
//! `ANIATE_*` variable that a program's `--help` names is in README.md or docs/, and every
//! `ANIATE_*` variable or admin/daemon/brew/files/config subcommand the docs name exists.
//!
//! The programs are walked through their real `--help` output, subcommand by subcommand.

use std::{collections::BTreeSet, path::Path, process::Command};

use aniate_testkit::stack::workspace_bin;

/// Variables the docs name that are not the programs' own: the test suite's (besides every
/// `ANIATE_TEST_*`) and the benches'.
const DOCS_ONLY_VARIABLES: &[&str] = &[
    "ANIATE_SOAK_RUNS",
    "ANIATE_SOAK_CONCURRENCY",
    "ANIATE_SOAK_MIN_RUNS_PER_S",
    "ANIATE_SCHEMATHESIS_MAX_EXAMPLES",
    "ANIATE_SCHEMATHESIS_SEED",
];

/// What one program's `--help` tree names.
#[derive(Default, Debug)]
struct HelpTree {
    /// Command paths, e.g. `ant brew create`, and aliases as paths, e.g. `ant ls`.
    commands: BTreeSet<String>,
    /// `(command path, --flag)`.
    flags: BTreeSet<(String, String)>,
    variables: BTreeSet<String>,
}

fn help_of(program: &Path, path: &[String]) -> String {
    let output = Command::new(program).args(path).arg("--help").env("NO_COLOR", "1").output().unwrap();
    assert!(output.status.success(), "{} {} --help failed", program.display(), path.join(" "));
    String::from_utf8(output.stdout).unwrap()
}

fn walk(program: &Path, name: &str, path: Vec<String>, tree: &mut HelpTree) {
    let help = help_of(program, &path);
    let here = std::iter::once(name.to_owned()).chain(path.iter().cloned()).collect::<Vec<_>>().join(" ");
    tree.commands.insert(here.clone());
    for word in help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        if word.starts_with("ANIATE_") && word.len() > "ANIATE_".len() {
            tree.variables.insert(word.to_owned());
        }
    }
    let mut in_commands = false;
    let mut subcommands = Vec::new();
    for line in help.lines() {
        if line.trim_end() == "Commands:" {
            in_commands = true;
            continue;
        }
        if in_commands {
            if line.trim().is_empty() || !line.starts_with("  ") {
                in_commands = false;
            } else if line.starts_with("   ") {
                // A wrapped description.
                continue;
            } else if let Some(sub) = line.split_whitespace().next().filter(|sub| *sub != "help") {
                subcommands.push(sub.to_owned());
                if let Some(alias) = line.split("[alias: ").nth(1).and_then(|rest| rest.split(']').next()) {
                    for alias in alias.split(", ") {
                        tree.commands.insert(format!("{here} {alias}"));
                    }
                }
                continue;
            }
        }
        let trimmed = line.trim_start();
        let flag_part = trimmed.strip_prefix("-").map(|_| trimmed).unwrap_or("");
        for token in flag_part.split([' ', ',']).take_while(|token| token.starts_with('-') || token.is_empty()) {
            if let Some(flag) = token.strip_prefix("--").filter(|flag| !flag.is_empty()) {
                let flag = flag.split(['=', '<', '[']).next().unwrap();
                if !["help", "version"].contains(&flag) {
                    tree.flags.insert((here.clone(), format!("--{flag}")));
                }
            }
        }
    }
    for sub in subcommands {
        let mut next = path.clone();
        next.push(sub);
        walk(program, name, next, tree);
    }
}

/// Whether `text` holds `needle` as a whole word: not followed by a letter, digit or `-`
/// (so `ant market` is not found in `ant marketplace`).
fn names(text: &str, needle: &str) -> bool {
    text.match_indices(needle).any(|(idx, _)| {
        !text[idx + needle.len()..].chars().next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

fn docs_text() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut text = std::fs::read_to_string(root.join("README.md")).unwrap();
    let mut pages: Vec<_> = std::fs::read_dir(root.join("docs")).unwrap().map(|entry| entry.unwrap().path()).collect();
    pages.sort();
    for page in pages.iter().filter(|page| page.extension().is_some_and(|ext| ext == "md")) {
        text.push_str(&std::fs::read_to_string(page).unwrap());
    }
    text
}

#[test]
fn help_and_docs_name_the_same_commands_flags_and_variables() {
    let docs = docs_text();
    let mut missing = Vec::new();
    let mut all_variables = BTreeSet::new();
    let mut trees = Vec::new();
    for program in ["ant", "ant-server", "aniated", "ant-lsp"] {
        let mut tree = HelpTree::default();
        walk(&workspace_bin(program), program, Vec::new(), &mut tree);
        for command in &tree.commands {
            if !names(&docs, command) {
                missing.push(format!("command `{command}`"));
            }
        }
        let mut reported = BTreeSet::new();
        for (command, flag) in &tree.flags {
            if !names(&docs, flag) && reported.insert(flag) {
                missing.push(format!("flag `{flag}` of `{command}`"));
            }
        }
        for variable in &tree.variables {
            if !names(&docs, variable) {
                missing.push(format!("variable `{variable}` of `{program} --help`"));
            }
        }
        all_variables.extend(tree.variables.iter().cloned());
        trees.push((program, tree));
    }
    assert!(missing.is_empty(), "in --help but in no doc:\n{}", missing.join("\n"));

    // The other way: what the docs name must exist.
    let mut unknown = BTreeSet::new();
    for word in docs.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
        let is_variable = word.starts_with("ANIATE_") && word.len() > "ANIATE_".len() && !word.ends_with('_');
        let test_only = word.starts_with("ANIATE_TEST_") || DOCS_ONLY_VARIABLES.contains(&word);
        if is_variable && !all_variables.contains(word) && !test_only {
            unknown.insert(format!("variable `{word}`"));
        }
    }
    let commands: BTreeSet<&str> =
        trees.iter().flat_map(|(_, tree)| tree.commands.iter().map(String::as_str)).collect();
    for group in ["ant-server admin tools", "ant-server admin", "ant daemon", "ant brew", "ant files", "ant config"] {
        for (idx, _) in docs.match_indices(&format!("{group} ")) {
            let next = docs[idx + group.len() + 1..].split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')).next();
            let Some(next) = next.filter(|next| next.chars().next().is_some_and(|c| c.is_ascii_lowercase())) else {
                continue;
            };
            let candidate = format!("{group} {next}");
            // `ant-server admin tools` is itself a group of `ant-server admin`.
            let is_group = ["ant-server admin tools"].contains(&candidate.as_str());
            if !commands.contains(candidate.as_str()) && !is_group {
                unknown.insert(format!("command `{candidate}`"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "in the docs but in no --help:\n{}",
        unknown.iter().cloned().collect::<Vec<_>>().join("\n")
    );
}
