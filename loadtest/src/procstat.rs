//! CPU time and memory of a process, read from Linux `/proc`: how the load generator reports
//! what the server (and itself) cost during a run.

use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Failure to read or parse a `/proc` file.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read (the process is gone, or this is not Linux).
    #[error("read {path}: {source}")]
    Read {
        /// The `/proc` file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file did not have the expected layout.
    #[error("unexpected layout of {path}: {what}")]
    Layout {
        /// The `/proc` file.
        path: PathBuf,
        /// What was missing.
        what: &'static str,
    },
}

/// One reading of a process's counters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProcessSample {
    /// User + system CPU time since the process started, seconds.
    pub cpu_seconds: f64,
    /// Resident set size now, bytes (`VmRSS`).
    pub rss_bytes: u64,
    /// Peak resident set size so far, bytes (`VmHWM`).
    pub peak_rss_bytes: u64,
}

/// Reads [`ProcessSample`]s of one process and turns pairs of them into CPU percentages.
#[derive(Debug)]
pub struct ProcessMonitor {
    pid: u32,
    ticks_per_second: f64,
    first: Option<(Instant, ProcessSample)>,
}

impl ProcessMonitor {
    /// A monitor of process `pid` (`std::process::id()` for this one).
    pub fn new(pid: u32) -> Self {
        let ticks = rustix::param::clock_ticks_per_second();
        Self { pid, ticks_per_second: if ticks == 0 { 100.0 } else { ticks as f64 }, first: None }
    }

    /// The process's counters now. The first call is the baseline of [`Self::cpu_percent_since_start`].
    pub fn sample(&mut self) -> Result<ProcessSample, ProcError> {
        let stat_path = PathBuf::from(format!("/proc/{}/stat", self.pid));
        let stat = std::fs::read_to_string(&stat_path)
            .map_err(|source| ProcError::Read { path: stat_path.clone(), source })?;
        let (utime, stime) = parse_stat_cpu_ticks(&stat)
            .ok_or(ProcError::Layout { path: stat_path, what: "utime/stime after the command name" })?;
        let status_path = PathBuf::from(format!("/proc/{}/status", self.pid));
        let status = std::fs::read_to_string(&status_path)
            .map_err(|source| ProcError::Read { path: status_path.clone(), source })?;
        let rss_kib = status_kib(&status, "VmRSS:")
            .ok_or(ProcError::Layout { path: status_path.clone(), what: "VmRSS" })?;
        let peak_kib =
            status_kib(&status, "VmHWM:").ok_or(ProcError::Layout { path: status_path, what: "VmHWM" })?;
        let sample = ProcessSample {
            cpu_seconds: (utime + stime) as f64 / self.ticks_per_second,
            rss_bytes: rss_kib * 1024,
            peak_rss_bytes: peak_kib * 1024,
        };
        self.first.get_or_insert((Instant::now(), sample));
        Ok(sample)
    }

    /// CPU use between the first sample and `now`, in percent of one core (200% = two cores
    /// busy).
    pub fn cpu_percent_since_start(&self, now: &ProcessSample) -> f64 {
        match self.first {
            Some((at, first)) => {
                let wall = at.elapsed().as_secs_f64();
                if wall <= 0.0 { 0.0 } else { 100.0 * (now.cpu_seconds - first.cpu_seconds) / wall }
            }
            None => 0.0,
        }
    }
}

/// `utime` and `stime` (clock ticks) from the text of `/proc/<pid>/stat`. The command name (field
/// 2) is in parentheses and may hold spaces and parentheses, so fields are counted from the
/// last `)`: state is field 3, utime field 14, stime field 15.
pub fn parse_stat_cpu_ticks(stat: &str) -> Option<(u64, u64)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace().skip(11);
    let utime = fields.next()?.parse().ok()?;
    let stime = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// The value in KiB of a `Name:   1234 kB` line of `/proc/<pid>/status`.
pub fn status_kib(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    let mut parts = line[name.len()..].split_ascii_whitespace();
    let value = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (blue wave) (x)) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 9 0 100 \
                    123456789 2500 18446744073709551615";
        assert_eq!(parse_stat_cpu_ticks(stat), Some((1234, 567)));
        assert_eq!(parse_stat_cpu_ticks("4242 (x) S 1 2"), None);
        assert_eq!(parse_stat_cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn status_values_in_kib() {
        let status = "Name:\tbluewave\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n";
        assert_eq!(status_kib(status, "VmRSS:"), Some(102_400));
        assert_eq!(status_kib(status, "VmHWM:"), Some(204_800));
        assert_eq!(status_kib(status, "Threads:"), None, "no unit: not a size");
        assert_eq!(status_kib(status, "VmSwap:"), None);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let mut monitor = ProcessMonitor::new(std::process::id());
        let first = monitor.sample().unwrap();
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed().as_millis() < 50 {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let second = monitor.sample().unwrap();
        assert!(second.cpu_seconds >= first.cpu_seconds);
        assert!(second.rss_bytes > 0 && second.peak_rss_bytes >= second.rss_bytes);
        assert!(monitor.cpu_percent_since_start(&second) >= 0.0);
    }
}
