//! CPU time and resident memory of processes, from `/proc` (Linux).
//!
//! CPU is `utime + stime` of `/proc/PID/stat` in clock ticks (100 per second on Linux), which
//! includes the softirq work the kernel charges to the process (the loopback receive path).

use std::path::PathBuf;

/// Clock ticks per second of `/proc/PID/stat` (`USER_HZ`, 100 on every Linux architecture
/// this runs on).
pub const TICKS_PER_SECOND: f64 = 100.0;

/// Which process: a pid, or this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pid {
    /// Another process.
    Id(u32),
    /// The calling process.
    OurSelf,
}

impl Pid {
    fn dir(self) -> PathBuf {
        match self {
            Pid::Id(pid) => PathBuf::from(format!("/proc/{pid}")),
            Pid::OurSelf => PathBuf::from("/proc/self"),
        }
    }

    /// CPU seconds used so far (user + system), if the process exists.
    pub fn cpu_seconds(self) -> Option<f64> {
        let stat = std::fs::read_to_string(self.dir().join("stat")).ok()?;
        // The command name may contain spaces and parentheses: fields start after the last ')'.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        // After ')': state is field 3 of the man page, so utime (14) and stime (15) are 11, 12.
        let utime: f64 = fields.get(11)?.parse().ok()?;
        let stime: f64 = fields.get(12)?.parse().ok()?;
        Some((utime + stime) / TICKS_PER_SECOND)
    }

    /// Resident set size in KiB (`VmRSS`), if the process exists.
    pub fn rss_kib(self) -> Option<u64> {
        let status = std::fs::read_to_string(self.dir().join("status")).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// Busy seconds of each core so far (user, nice, system, irq, softirq, steal), from
/// `/proc/stat`; the difference of two readings over a wall-clock interval tells how busy each
/// core was, whoever kept it busy.
pub fn core_busy_seconds() -> Vec<f64> {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return Vec::new();
    };
    text.lines()
        .filter(|line| line.starts_with("cpu") && !line.starts_with("cpu "))
        .map(|line| {
            let fields: Vec<f64> = line
                .split_ascii_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let at = |i: usize| fields.get(i).copied().unwrap_or(0.0);
            // user nice system idle iowait irq softirq steal
            (at(0) + at(1) + at(2) + at(5) + at(6) + at(7)) / TICKS_PER_SECOND
        })
        .collect()
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_our_own_process() {
        assert!(Pid::OurSelf.cpu_seconds().is_some());
        assert!(Pid::OurSelf.rss_kib().unwrap() > 0);
        assert!(load_average().is_some());
        assert!(!core_busy_seconds().is_empty());
        assert_eq!(Pid::Id(u32::MAX).cpu_seconds(), None);
    }
}
