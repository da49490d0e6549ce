//! What Linux says about a process and the machine: memory (`/proc/PID/status`), CPU time
//! (`/proc/PID/stat`, `/proc/stat`), CPU model (`/proc/cpuinfo`). Elsewhere these read as
//! `None`.

use std::process::Command;
use std::time::Duration;

/// Resident memory of a process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// `VmRSS`: resident now.
    pub rss: u64,
    /// `VmHWM`: the most that was ever resident.
    pub peak_rss: u64,
}

/// Reads `VmRSS` and `VmHWM` of process `pid`.
pub fn memory(pid: u32) -> Option<Memory> {
    parse_memory(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

fn parse_memory(status: &str) -> Option<Memory> {
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|line| line.starts_with(name))?;
        let kib: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kib * 1024)
    };
    Some(Memory { rss: field("VmRSS:")?, peak_rss: field("VmHWM:")? })
}

/// Resets the `VmHWM` of process `pid` to its current `VmRSS` (Linux 4.0 and later), so
/// that the peak covers only what follows.
pub fn reset_peak_rss(pid: u32) -> std::io::Result<()> {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
}

/// Clock ticks per second, the unit of `/proc/PID/stat` CPU times.
#[derive(Clone, Copy, Debug)]
pub struct ClockTicks(u64);

impl ClockTicks {
    /// Asks `getconf CLK_TCK` (the workspace denies the unsafe code `sysconf` needs); 100,
    /// the Linux value nearly everywhere, if that fails.
    pub fn detect() -> ClockTicks {
        let ticks = Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .filter(|output| output.status.success())
            .and_then(|output| String::from_utf8_lossy(&output.stdout).trim().parse::<u64>().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100);
        ClockTicks(ticks)
    }

    /// User plus system CPU time used so far by process `pid` (all its threads);
    /// `None` if it cannot be read.
    pub fn cpu_time(self, pid: u32) -> Option<Duration> {
        let ticks = parse_cpu_ticks(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
        Some(self.to_duration(ticks))
    }

    /// CPU time all CPUs of the machine spent so far; `None` if it cannot be read.
    pub fn machine_time(self) -> Option<MachineTime> {
        let (busy, interrupts) = parse_machine_ticks(&std::fs::read_to_string("/proc/stat").ok()?)?;
        Some(MachineTime { busy: self.to_duration(busy), interrupts: self.to_duration(interrupts) })
    }

    fn to_duration(self, ticks: u64) -> Duration {
        Duration::from_secs_f64(ticks as f64 / self.0 as f64)
    }
}

/// CPU time of the whole machine, summed over its CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTime {
    /// Not idle: processes, the kernel, interrupts, and time stolen by the hypervisor.
    pub busy: Duration,
    /// Hardware and software interrupts, which no process is charged for; on loopback this is
    /// mostly the kernel moving the streams' TCP segments.
    pub interrupts: Duration,
}

/// The busy ticks (everything but `idle` and `iowait`; `guest` is already in `user`) and the
/// interrupt ticks (`irq` + `softirq`) of the `cpu` line of `/proc/stat`.
fn parse_machine_ticks(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = line.split_whitespace().skip(1).map(|field| field.parse().ok()).collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let [user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = ticks[..] else {
        return None;
    };
    Some((user + nice + system + irq + softirq + steal, irq + softirq))
}

/// `utime + stime` from a `/proc/PID/stat` line. The command name (field 2) is in
/// parentheses and may hold spaces or parentheses itself, so fields count from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Field 3 (state) is fields[0], so fields 14 (utime) and 15 (stime) are [11] and [12].
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The first `model name` in `/proc/cpuinfo`.
pub fn cpu_model() -> Option<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(key, _)| key.trim() == "model name")
        .map(|(_, value)| value.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_peak() {
        let status = "Name:\tant-server\nVmPeak:\t  900000 kB\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\n";
        assert_eq!(parse_memory(status), Some(Memory { rss: 10240 * 1024, peak_rss: 20480 * 1024 }));
        assert_eq!(parse_memory("Name:\tx\n"), None);
    }

    #[test]
    fn reads_cpu_ticks_past_odd_names() {
        let stat = "1234 (odd) name)) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 17 0 0 20 0 3 0 100 0 0";
        assert_eq!(parse_cpu_ticks(stat), Some(267));
        assert_eq!(parse_cpu_ticks("1234 (short) S 1"), None);
        assert_eq!(parse_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn reads_machine_ticks() {
        let stat = "cpu  100 5 50 1000 7 3 2 1 0 0\ncpu0 50 2 25 500 3 1 1 0 0 0\n";
        assert_eq!(parse_machine_ticks(stat), Some((161, 5)));
        assert_eq!(parse_machine_ticks("cpu  1 2 3\n"), None);
        assert_eq!(parse_machine_ticks("intr 5\n"), None);
    }

    #[test]
    fn reads_this_process() {
        if cfg!(target_os = "linux") {
            let memory = memory(std::process::id()).unwrap();
            assert!(memory.rss > 0 && memory.peak_rss >= memory.rss);
            reset_peak_rss(std::process::id()).unwrap();
            assert!(ClockTicks::detect().cpu_time(std::process::id()).is_some());
            assert!(ClockTicks::detect().machine_time().is_some());
        }
    }
}
