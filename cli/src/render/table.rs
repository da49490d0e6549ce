//! Aligned tables (`ant marketplace`, `ant list`), key/value blocks (`ant daemon status`), and the
//! short summaries of other one-shot results (`ant update`, `ant install`, `ant whoami`).
//!
//! Every function returns the finished text, each line ending in `\n`. Text from the server is
//! put on one line and stripped of control characters first.

use aniate_proto::ipc::{
    InstallResult, InstalledTool, MarketplaceEntry, StatusResult, UninstallResult, UpdateResult, WhoamiResult,
};
use anstyle::Style;

use super::style::{Palette, paint, sanitize_line};

/// The width tables fit when the terminal's is unknown.
pub const DEFAULT_WIDTH: usize = 100;

/// The narrowest a truncated column gets, even if the table then overflows the width.
const MIN_FLEXIBLE_WIDTH: usize = 16;

/// Spaces between columns.
const GAP: &str = "  ";

/// The terminal width from `COLUMNS`, else [`DEFAULT_WIDTH`].
pub fn terminal_width(columns_env: Option<&std::ffi::OsStr>) -> usize {
    columns_env
        .and_then(|columns| columns.to_str())
        .and_then(|columns| columns.trim().parse::<usize>().ok())
        .filter(|columns| *columns >= 20)
        .unwrap_or(DEFAULT_WIDTH)
}

/// How many terminal columns `text` takes.
///
/// An approximation without a Unicode table: East Asian wide characters and emoji take two
/// columns, combining marks and zero-width characters none, everything else one.
pub fn display_width(text: &str) -> usize {
    text.chars().map(char_width).sum()
}

fn char_width(c: char) -> usize {
    match u32::from(c) {
        _ if c.is_control() => 0,
        0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x200B..=0x200F | 0x20D0..=0x20FF => 0,
        0xFE00..=0xFE0F | 0xFE20..=0xFE2F => 0,
        0x1100..=0x115F
        | 0x2E80..=0x303E
        | 0x3041..=0x33FF
        | 0x3400..=0x4DBF
        | 0x4E00..=0x9FFF
        | 0xA000..=0xA4CF
        | 0xAC00..=0xD7A3
        | 0xF900..=0xFAFF
        | 0xFE30..=0xFE4F
        | 0xFF00..=0xFF60
        | 0xFFE0..=0xFFE6
        | 0x1F300..=0x1F64F
        | 0x1F900..=0x1F9FF
        | 0x20000..=0x3FFFD => 2,
        _ => 1,
    }
}

/// `text` cut to at most `max_width` columns, ending in `…` when cut.
pub fn truncate(text: &str, max_width: usize) -> String {
    if display_width(text) <= max_width {
        return text.to_owned();
    }
    let mut cut = String::new();
    let mut width = 0;
    for c in text.chars() {
        let char_width = char_width(c);
        if width + char_width + 1 > max_width {
            break;
        }
        cut.push(c);
        width += char_width;
    }
    let mut cut = cut.trim_end().to_owned();
    if max_width > 0 {
        cut.push('…');
    }
    cut
}

/// One cell: its text and style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub style: Style,
}

impl Cell {
    pub fn new(text: &str) -> Cell {
        Cell { text: sanitize_line(text).into_owned(), style: Style::new() }
    }

    pub fn styled(text: &str, style: Style) -> Cell {
        Cell { style, ..Cell::new(text) }
    }
}

/// A table with a header row and columns padded to their widest cell.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
    /// The column cut with `…` so that the table fits the width.
    flexible: Option<usize>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|title| (*title).to_owned()).collect(), rows: Vec::new(), flexible: None }
    }

    /// Makes `column` the one that is truncated to fit the width.
    pub fn flexible(mut self, column: usize) -> Table {
        self.flexible = Some(column);
        self
    }

    /// Adds a row; missing cells are empty, extra cells are ignored.
    pub fn row(&mut self, mut cells: Vec<Cell>) {
        cells.resize(self.header.len(), Cell::new(""));
        self.rows.push(cells);
    }

    /// The table, fitted to `width` columns where the flexible column allows. Columns with an
    /// empty header and no text in any row are left out; trailing spaces are trimmed.
    pub fn render(&self, width: usize, palette: &Palette) -> String {
        let n_columns = self.header.len();
        let visible: Vec<usize> = (0..n_columns)
            .filter(|&column| {
                !self.header[column].is_empty() || self.rows.iter().any(|row| !row[column].text.is_empty())
            })
            .collect();
        let mut widths: Vec<usize> = (0..n_columns)
            .map(|column| {
                let cells = self.rows.iter().map(|row| display_width(&row[column].text));
                cells.fold(display_width(&self.header[column]), usize::max)
            })
            .collect();
        if let Some(flexible) = self.flexible.filter(|column| visible.contains(column)) {
            let others: usize =
                visible.iter().filter(|&&column| column != flexible).map(|&column| widths[column]).sum();
            let gaps = GAP.len() * visible.len().saturating_sub(1);
            let available = width.saturating_sub(others + gaps).max(MIN_FLEXIBLE_WIDTH);
            widths[flexible] = widths[flexible].min(available);
        }

        let mut out = String::new();
        let header: Vec<Cell> = self.header.iter().map(|title| Cell::styled(title, palette.bold)).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (position, &column) in visible.iter().enumerate() {
                let cell = &row[column];
                let text = truncate(&cell.text, widths[column]);
                if position > 0 {
                    line.push_str(GAP);
                }
                line.push_str(&paint(cell.style, &text));
                if position + 1 < visible.len() {
                    line.push_str(&" ".repeat(widths[column].saturating_sub(display_width(&text))));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `ant marketplace`: SLUG, NAME, DESCRIPTION and a mark (`installed` or `update v3→v4`).
pub fn render_marketplace(entries: &[MarketplaceEntry], width: usize, colored: bool) -> String {
    if entries.is_empty() {
        return "No tools on the server yet\n".to_owned();
    }
    let palette = Palette::new(colored);
    let mut entries: Vec<&MarketplaceEntry> = entries.iter().collect();
    entries.sort_by(|a, b| a.meta.slug.cmp(&b.meta.slug));
    let mut table = Table::new(&["SLUG", "NAME", "DESCRIPTION", ""]).flexible(2);
    for entry in entries {
        let mark = match entry.installed_version {
            Some(installed) if entry.update_available() => {
                Cell::styled(&format!("update v{installed}→v{}", entry.meta.version), palette.warning)
            }
            Some(_) => Cell::styled("installed", palette.added),
            None => Cell::new(""),
        };
        table.row(vec![
            Cell::styled(&entry.meta.slug, palette.bold),
            Cell::new(&entry.meta.name),
            Cell::new(&entry.meta.description),
            mark,
        ]);
    }
    table.render(width, &palette)
}

/// `ant list`: SLUG, VERSION, OUTPUT, DESCRIPTION and an `update available` mark.
pub fn render_installed(tools: &[InstalledTool], width: usize, colored: bool) -> String {
    if tools.is_empty() {
        return "No tools installed; see them with `ant marketplace`, then `ant install SLUG`\n".to_owned();
    }
    let palette = Palette::new(colored);
    let mut tools: Vec<&InstalledTool> = tools.iter().collect();
    tools.sort_by(|a, b| a.meta.slug.cmp(&b.meta.slug));
    let mut table = Table::new(&["SLUG", "VERSION", "OUTPUT", "DESCRIPTION", ""]).flexible(3);
    for tool in tools {
        let mark = match tool.update_available {
            Some(version) if version > tool.meta.version => Cell::styled("update available", palette.warning),
            _ => Cell::new(""),
        };
        table.row(vec![
            Cell::styled(&tool.meta.slug, palette.bold),
            Cell::new(&format!("v{}", tool.meta.version)),
            Cell::new(tool.meta.output.as_str()),
            Cell::new(&tool.meta.description),
            mark,
        ]);
    }
    table.render(width, &palette)
}

/// `ant daemon status`: one `key  value` line per fact.
pub fn render_status(status: &StatusResult, colored: bool) -> String {
    let palette = Palette::new(colored);
    let reachable =
        if status.server_reachable { paint(palette.added, "reachable") } else { paint(palette.error, "unreachable") };
    let logged_in = if status.logged_in { "yes".to_owned() } else { paint(palette.warning, "no (run `ant login`)") };
    let mut tools = format!("{} installed", status.installed_tools);
    if !status.updates_available.is_empty() {
        let slugs: Vec<String> = status.updates_available.iter().map(|slug| sanitize_line(slug).into_owned()).collect();
        tools.push_str(&format!("; updates for {} (run `ant update`)", slugs.join(", ")));
    }
    let pairs = [
        (
            "daemon",
            format!("aniated {}, pid {}, protocol {}", sanitize_line(&status.version), status.pid, status.protocol),
        ),
        ("uptime", format_duration(status.uptime_secs)),
        ("server", format!("{} ({reachable})", sanitize_line(&status.server))),
        ("logged in", logged_in),
        ("tools", tools),
        ("requests", format!("{} served, {} from the cache", status.requests_served, status.cache_hits)),
    ];
    render_pairs(&pairs, &palette)
}

/// `key  value` lines with the values aligned.
pub fn render_pairs(pairs: &[(&str, String)], palette: &Palette) -> String {
    let key_width = pairs.iter().map(|(key, _)| display_width(key)).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let padding = " ".repeat(key_width - display_width(key));
        out.push_str(format!("{}{padding}{GAP}{value}", paint(palette.bold, key)).trim_end());
        out.push('\n');
    }
    out
}

/// `3725` → `1h 2m`: the two largest units.
pub fn format_duration(secs: u64) -> String {
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (days, hours, minutes) {
        (0, 0, 0) => format!("{seconds}s"),
        (0, 0, _) => format!("{minutes}m {seconds}s"),
        (0, _, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

/// `ant update`: what moved, what went, and how many were current.
pub fn render_update(update: &UpdateResult) -> String {
    let mut out = String::new();
    let mut updated: Vec<_> = update.updated.iter().collect();
    updated.sort_by(|a, b| a.slug.cmp(&b.slug));
    for tool in updated {
        out.push_str(&format!("{}: v{} → v{}\n", sanitize_line(&tool.slug), tool.from_version, tool.to_version));
    }
    for slug in &update.removed {
        out.push_str(&format!("removed {} (deactivated on the server)\n", sanitize_line(slug)));
    }
    let n_changed = update.updated.len() + update.removed.len();
    match (n_changed, update.unchanged) {
        (0, 0) => out.push_str("No tools installed\n"),
        (0, 1) => out.push_str("The installed tool is up to date\n"),
        (0, n) => out.push_str(&format!("All {n} installed tools are up to date\n")),
        (_, 0) => {}
        (_, 1) => out.push_str("1 tool up to date\n"),
        (_, n) => out.push_str(&format!("{n} tools up to date\n")),
    }
    out
}

/// `ant install`: one line per installed tool.
pub fn render_install(install: &InstallResult) -> String {
    install
        .installed
        .iter()
        .map(|tool| {
            format!(
                "installed {} v{} ({}); run it with `ant {} --help`\n",
                sanitize_line(&tool.slug),
                tool.version,
                tool.output,
                sanitize_line(&tool.slug)
            )
        })
        .collect()
}

/// `ant uninstall`.
pub fn render_uninstall(uninstall: &UninstallResult) -> String {
    format!("uninstalled {}\n", sanitize_line(&uninstall.slug))
}

/// `ant whoami` (and the answer to `ant login` / `ant signup`).
pub fn render_whoami(whoami: &WhoamiResult) -> String {
    format!(
        "{} ({}, {} plan) on {}\n",
        sanitize_line(&whoami.me.email),
        whoami.me.role.as_str(),
        sanitize_line(&whoami.me.plan),
        sanitize_line(&whoami.server)
    )
}

#[cfg(test)]
mod tests {
    use aniate_proto::{
        api::{Me, Role},
        ipc::ToolUpdate,
        tool::{OutputKind, ToolMeta},
    };

    use super::*;

    fn meta(slug: &str, description: &str, output: OutputKind, version: i64) -> ToolMeta {
        ToolMeta {
            slug: slug.into(),
            name: format!("{}{}", slug[..1].to_uppercase(), &slug[1..]),
            description: description.into(),
            model: "m".into(),
            requires_file: output == OutputKind::Code,
            output,
            version,
            updated_at: "2026-01-01T00:00:00Z".into(),
        }
    }

    fn marketplace() -> Vec<MarketplaceEntry> {
        vec![
            MarketplaceEntry {
                meta: meta("what", "Answers a question about code or the shell", OutputKind::Text, 1),
                installed_version: None,
            },
            MarketplaceEntry {
                meta: meta("fix", "Fixes the bugs of one file and returns it whole", OutputKind::Code, 4),
                installed_version: Some(3),
            },
            MarketplaceEntry {
                meta: meta("review", "Reviews a file: bugs, risks, style", OutputKind::Findings, 2),
                installed_version: Some(2),
            },
        ]
    }

    #[test]
    fn marketplace_table() {
        let expected = "\
SLUG    NAME    DESCRIPTION
fix     Fix     Fixes the bugs of one file and returns it whole  update v3→v4
review  Review  Reviews a file: bugs, risks, style               installed
what    What    Answers a question about code or the shell
";
        assert_eq!(render_marketplace(&marketplace(), 100, false), expected);
    }

    #[test]
    fn marketplace_descriptions_are_truncated_to_fit() {
        let out = render_marketplace(&marketplace(), 60, false);
        let expected = "\
SLUG    NAME    DESCRIPTION
fix     Fix     Fixes the bugs of one file an…  update v3→v4
review  Review  Reviews a file: bugs, risks,…   installed
what    What    Answers a question about code…
";
        assert_eq!(out, expected);
        for line in out.lines() {
            assert!(display_width(line) <= 60, "{line}");
        }
    }

    #[test]
    fn marketplace_without_marks_has_no_mark_column() {
        let entries =
            vec![MarketplaceEntry { meta: meta("what", "Answers", OutputKind::Text, 1), installed_version: None }];
        assert_eq!(render_marketplace(&entries, 100, false), "SLUG  NAME  DESCRIPTION\nwhat  What  Answers\n");
        assert_eq!(render_marketplace(&[], 100, false), "No tools on the server yet\n");
    }

    #[test]
    fn coloured_table_pads_outside_the_escapes() {
        let entries =
            vec![MarketplaceEntry { meta: meta("fix", "Fixes", OutputKind::Code, 2), installed_version: Some(2) }];
        let out = render_marketplace(&entries, 100, true);
        let bold = Style::new().bold();
        let green = anstyle::AnsiColor::Green.on_default();
        let expected = format!(
            "{bold}SLUG{bold:#}  {bold}NAME{bold:#}  {bold}DESCRIPTION{bold:#}\n{bold}fix{bold:#}   Fix   Fixes        {green}installed{green:#}\n"
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn server_text_cannot_break_the_table() {
        let entries = vec![MarketplaceEntry {
            meta: meta("x", "line one\nline two \u{1b}[31mred", OutputKind::Text, 1),
            installed_version: None,
        }];
        assert_eq!(
            render_marketplace(&entries, 100, false),
            "SLUG  NAME  DESCRIPTION\nx     X     line one line two \u{FFFD}[31mred\n"
        );
    }

    #[test]
    fn installed_table() {
        let tools = vec![
            InstalledTool { meta: meta("review", "Reviews a file", OutputKind::Findings, 2), update_available: None },
            InstalledTool { meta: meta("fix", "Fixes a file", OutputKind::Code, 3), update_available: Some(4) },
        ];
        let expected = "\
SLUG    VERSION  OUTPUT    DESCRIPTION
fix     v3       code      Fixes a file    update available
review  v2       findings  Reviews a file
";
        assert_eq!(render_installed(&tools, 100, false), expected);
        assert_eq!(
            render_installed(&[], 100, false),
            "No tools installed; see them with `ant marketplace`, then `ant install SLUG`\n"
        );
    }

    #[test]
    fn status_block() {
        let status = StatusResult {
            version: "0.1.0".into(),
            protocol: 1,
            pid: 4242,
            uptime_secs: 3725,
            server: "https://aniate.example.com".into(),
            server_version: Some("0.1.0".into()),
            server_reachable: true,
            logged_in: false,
            installed_tools: 4,
            requests_served: 12,
            cache_hits: 3,
            updates_available: vec!["fix".into(), "sql".into()],
        };
        let expected = "\
daemon     aniated 0.1.0, pid 4242, protocol 1
uptime     1h 2m
server     https://aniate.example.com (reachable)
logged in  no (run `ant login`)
tools      4 installed; updates for fix, sql (run `ant update`)
requests   12 served, 3 from the cache
";
        assert_eq!(render_status(&status, false), expected);
    }

    #[test]
    fn durations() {
        assert_eq!(format_duration(0), "0s");
        assert_eq!(format_duration(59), "59s");
        assert_eq!(format_duration(61), "1m 1s");
        assert_eq!(format_duration(7200), "2h 0m");
        assert_eq!(format_duration(90_061), "1d 1h");
    }

    #[test]
    fn update_summaries() {
        let update = UpdateResult {
            updated: vec![ToolUpdate { slug: "fix".into(), from_version: 1, to_version: 2 }],
            removed: vec!["sql".into()],
            unchanged: 3,
        };
        assert_eq!(
            render_update(&update),
            "fix: v1 → v2\nremoved sql (deactivated on the server)\n3 tools up to date\n"
        );
        let update = UpdateResult {
            updated: vec![ToolUpdate { slug: "fix".into(), from_version: 1, to_version: 2 }],
            removed: vec![],
            unchanged: 0,
        };
        assert_eq!(render_update(&update), "fix: v1 → v2\n");
        let current = |unchanged| render_update(&UpdateResult { updated: vec![], removed: vec![], unchanged });
        assert_eq!(current(4), "All 4 installed tools are up to date\n");
        assert_eq!(current(1), "The installed tool is up to date\n");
        assert_eq!(current(0), "No tools installed\n");
    }

    #[test]
    fn one_line_results() {
        let install = InstallResult { installed: vec![meta("fix", "Fixes", OutputKind::Code, 3)] };
        assert_eq!(render_install(&install), "installed fix v3 (code); run it with `ant fix --help`\n");
        assert_eq!(render_uninstall(&UninstallResult { slug: "fix".into() }), "uninstalled fix\n");
        let whoami = WhoamiResult {
            me: Me { email: "ada@example.com".into(), role: Role::Admin, plan: "free".into() },
            server: "http://127.0.0.1:8787".into(),
        };
        assert_eq!(render_whoami(&whoami), "ada@example.com (admin, free plan) on http://127.0.0.1:8787\n");
    }

    #[test]
    fn widths_and_truncation() {
        assert_eq!(display_width("abc"), 3);
        assert_eq!(display_width("日本"), 4);
        assert_eq!(display_width("e\u{301}"), 1);
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("ab def", 4), "ab…");
        assert_eq!(truncate("日本語", 4), "日…");
        assert_eq!(truncate("abc", 0), "");
        assert_eq!(truncate("abc", 1), "…");
    }

    #[test]
    fn terminal_widths() {
        use std::ffi::OsStr;
        assert_eq!(terminal_width(None), DEFAULT_WIDTH);
        assert_eq!(terminal_width(Some(OsStr::new("132"))), 132);
        assert_eq!(terminal_width(Some(OsStr::new("wide"))), DEFAULT_WIDTH);
        assert_eq!(terminal_width(Some(OsStr::new("3"))), DEFAULT_WIDTH);
    }

    #[test]
    fn a_table_with_ragged_rows_does_not_panic() {
        let mut table = Table::new(&["A", "B"]).flexible(7);
        table.row(vec![Cell::new("1")]);
        table.row(vec![Cell::new("1"), Cell::new("2"), Cell::new("3")]);
        assert_eq!(table.render(10, &Palette::plain()), "A  B\n1\n1  2\n");
    }
}
