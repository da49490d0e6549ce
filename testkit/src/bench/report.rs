//! The parts of a bench report that every bench shares: the machine and revision it ran on,
//! number formatting, and rewriting one bench's part of `docs/benchmarks.md` in place.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};

use super::procfs;

/// Where and when a bench ran.
#[derive(Clone, Debug)]
pub struct Machine {
    pub n_cpus: usize,
    pub cpu_model: String,
    /// UTC, `YYYY-MM-DD`.
    pub date: String,
    /// `git rev-parse --short HEAD`, plus a note when the work tree has uncommitted changes;
    /// `None` outside a git checkout.
    pub commit: Option<String>,
}

impl Machine {
    pub fn detect() -> Machine {
        Machine {
            n_cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model: procfs::cpu_model().unwrap_or_else(|| "unknown CPU".to_owned()),
            date: utc_date(SystemTime::now()),
            commit: git_commit(),
        }
    }

    /// One line for a report: CPU, count, date, commit.
    pub fn describe(&self) -> String {
        let commit =
            self.commit.as_deref().map_or_else(|| "outside git".to_owned(), |commit| format!("commit {commit}"));
        format!("{} × {} CPUs, {}, {commit}", self.n_cpus, self.cpu_model, self.date)
    }
}

fn git_commit() -> Option<String> {
    let run = |args: &[&str]| -> Option<String> {
        let output = Command::new("git").args(args).output().ok().filter(|output| output.status.success())?;
        Some(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let commit = run(&["rev-parse", "--short", "HEAD"]).filter(|commit| !commit.is_empty())?;
    let dirty = run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|status| !status.is_empty());
    Some(if dirty { format!("`{commit}` with uncommitted changes") } else { format!("`{commit}`") })
}

/// `YYYY-MM-DD` (UTC) of `time`; 1970-01-01 for times before the epoch.
pub fn utc_date(time: SystemTime) -> String {
    let days = time.duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_secs() / 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// A duration in milliseconds with about three significant digits.
pub fn format_ms(duration: Duration) -> String {
    format_ms_value(duration.as_secs_f64() * 1000.0, false)
}

/// A difference in milliseconds, always signed.
pub fn format_signed_ms(ms: f64) -> String {
    format_ms_value(ms, true)
}

fn format_ms_value(ms: f64, signed: bool) -> String {
    let decimals = match ms.abs() {
        magnitude if magnitude < 1.0 => 3,
        magnitude if magnitude < 10.0 => 2,
        magnitude if magnitude < 100.0 => 1,
        _ => 0,
    };
    if signed { format!("{ms:+.decimals$} ms") } else { format!("{ms:.decimals$} ms") }
}

/// Bytes as megabytes (10^6 bytes), one decimal.
pub fn format_mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1e6)
}

/// `pass` or a bold `miss`, for a figure checked against its target.
pub fn verdict(pass: bool) -> &'static str {
    if pass { "pass" } else { "**miss**" }
}

/// One bench's part of a Markdown file: a heading and the text its bench writes between two
/// marker comments, which it replaces on every run. Everything else in the file is left as is.
#[derive(Clone, Copy, Debug)]
pub struct Section<'a> {
    /// The whole heading line, e.g. `## ant-server: streaming overhead`; only used when the
    /// section has to be added.
    pub heading: &'a str,
    pub start_marker: &'a str,
    pub end_marker: &'a str,
}

impl Section<'_> {
    /// `existing` with the text between the markers replaced by `body`. Adds the section at
    /// the end (or a new file with a title) when the markers are missing; fails when only one
    /// is there or they are out of order, rather than guess what to overwrite.
    pub fn splice(&self, existing: Option<&str>, body: &str) -> anyhow::Result<String> {
        let body = body.trim_end_matches('\n');
        let block = format!("{}\n{body}\n{}", self.start_marker, self.end_marker);
        let Some(existing) = existing else {
            return Ok(format!("# Benchmarks\n\n{}\n\n{block}\n", self.heading));
        };
        match (existing.find(self.start_marker), existing.find(self.end_marker)) {
            (Some(start), Some(end)) if start < end => {
                let after = &existing[end + self.end_marker.len()..];
                Ok(format!("{}{block}{after}", &existing[..start]))
            }
            (None, None) => {
                let existing = existing.trim_end_matches('\n');
                Ok(format!("{existing}\n\n{}\n\n{block}\n", self.heading))
            }
            _ => bail!(
                "found `{}` and `{}` out of order or only one of them; fix the file by hand",
                self.start_marker,
                self.end_marker
            ),
        }
    }

    /// Rewrites this section of the file at `path` (created if missing) with `body`.
    pub fn write(&self, path: &Path, body: &str) -> anyhow::Result<()> {
        let existing = match std::fs::read_to_string(path) {
            Ok(text) => Some(text),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(err).with_context(|| format!("reading {}", path.display())),
        };
        let updated = self.splice(existing.as_deref(), body).with_context(|| format!("updating {}", path.display()))?;
        // Write a sibling and rename it over, so an interrupted run never leaves half a file.
        let mut temp_name = path.file_name().unwrap_or_default().to_os_string();
        temp_name.push(".tmp");
        let temp = path.with_file_name(temp_name);
        std::fs::write(&temp, updated).with_context(|| format!("writing {}", temp.display()))?;
        std::fs::rename(&temp, path).with_context(|| format!("renaming {} to {}", temp.display(), path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECTION: Section<'static> =
        Section { heading: "## B", start_marker: "<!-- b:start -->", end_marker: "<!-- b:end -->" };

    #[test]
    fn replaces_only_between_the_markers() {
        let existing =
            "# Benchmarks\n\n## A\n\nkeep\n\n## B\n\nprose\n\n<!-- b:start -->\nold\n<!-- b:end -->\n\n## C\n";
        let updated = SECTION.splice(Some(existing), "new\n").unwrap();
        assert_eq!(
            updated,
            "# Benchmarks\n\n## A\n\nkeep\n\n## B\n\nprose\n\n<!-- b:start -->\nnew\n<!-- b:end -->\n\n## C\n"
        );
        assert_eq!(SECTION.splice(Some(&updated), "new").unwrap(), updated);
    }

    #[test]
    fn adds_a_missing_section() {
        assert_eq!(SECTION.splice(None, "x").unwrap(), "# Benchmarks\n\n## B\n\n<!-- b:start -->\nx\n<!-- b:end -->\n");
        assert_eq!(
            SECTION.splice(Some("# Benchmarks\n\n## A\n"), "x").unwrap(),
            "# Benchmarks\n\n## A\n\n## B\n\n<!-- b:start -->\nx\n<!-- b:end -->\n"
        );
    }

    #[test]
    fn refuses_broken_markers() {
        assert!(SECTION.splice(Some("<!-- b:start -->\n"), "x").is_err());
        assert!(SECTION.splice(Some("<!-- b:end -->\n<!-- b:start -->\n"), "x").is_err());
    }

    #[test]
    fn dates_and_numbers() {
        assert_eq!(utc_date(UNIX_EPOCH), "1970-01-01");
        assert_eq!(utc_date(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29");
        assert_eq!(utc_date(UNIX_EPOCH + Duration::from_secs(1_786_838_400)), "2026-08-16");
        assert_eq!(format_ms(Duration::from_micros(214)), "0.214 ms");
        assert_eq!(format_ms(Duration::from_micros(3_456)), "3.46 ms");
        assert_eq!(format_ms(Duration::from_micros(34_567)), "34.6 ms");
        assert_eq!(format_signed_ms(-0.5), "-0.500 ms");
        assert_eq!(format_signed_ms(12.0), "+12.0 ms");
        assert_eq!(format_mb(12_500_000), "12.5 MB");
    }
}
