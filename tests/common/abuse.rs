//! What the abuse and churn tests read of a running process (resident memory, open descriptors and threads, from
//! /proc), the open-file limit, and the statistics they print: helpers over the real kernel's view, nothing imitated.

use std::time::Instant;

/// One reading of a process: resident memory, open file descriptors, threads.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Seconds since the sampler started.
    pub t: f64,
    pub rss_kib: u64,
    pub fds: u64,
    pub threads: u64,
}

/// A field of `/proc/PID/status` (`VmRSS`, `Threads`), its first number.
fn status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = text.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].split_whitespace().next()?.parse().ok()
}

/// Resident memory in KiB, or `None` when the process is gone.
pub fn rss_kib(pid: u32) -> Option<u64> {
    status_field(pid, "VmRSS")
}

pub fn threads(pid: u32) -> Option<u64> {
    status_field(pid, "Threads")
}

/// Open file descriptors (entries of `/proc/PID/fd`).
pub fn fds(pid: u32) -> Option<u64> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64)
}

pub fn sample(pid: u32, since: Instant) -> Option<Sample> {
    Some(Sample { t: since.elapsed().as_secs_f64(), rss_kib: rss_kib(pid)?, fds: fds(pid)?, threads: threads(pid)? })
}

/// Whether the process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().chars().next()))
        .flatten()
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// A process's open-file limit as `/proc/PID/limits` shows it: (soft, hard); `u64::MAX` for unlimited.
pub fn open_file_limits(pid: u32) -> Option<(u64, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut fields = line["Max open files".len()..].split_whitespace();
    let value = |s: Option<&str>| s.map(|s| s.parse().unwrap_or(u64::MAX));
    Some((value(fields.next())?, value(fields.next())?))
}

/// This process's open-file limit: (soft, hard).
pub fn own_open_file_limit() -> (u64, u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct passed to it.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0, "getrlimit");
    (limit.rlim_cur, limit.rlim_max)
}

/// Sets this process's soft open-file limit (children started afterwards inherit it).
pub fn set_own_open_file_soft_limit(soft: u64) {
    let (_, hard) = own_open_file_limit();
    let limit = libc::rlimit { rlim_cur: soft.min(hard), rlim_max: hard };
    // SAFETY: setrlimit reads only the struct passed to it.
    assert_eq!(
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) },
        0,
        "setrlimit: {}",
        std::io::Error::last_os_error()
    );
}

/// The `p`-th percentile (0..=100) of `values`, nearest rank; 0 for none.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// What a process holds, for a failure message: its threads by name and its descriptors by kind, with counts.
pub fn holdings(pid: u32) -> String {
    let mut threads = std::collections::BTreeMap::<String, u32>::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
        let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_owned();
        *threads.entry(name).or_default() += 1;
    }
    let mut fds = std::collections::BTreeMap::<String, u32>::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).into_iter().flatten().flatten() {
        let target = std::fs::read_link(fd.path()).map(|p| p.display().to_string()).unwrap_or_default();
        // socket:[123] and pipe:[456] by kind; files by path.
        let kind = target.split(":[").next().unwrap_or_default().to_owned();
        *fds.entry(kind).or_default() += 1;
    }
    format!("threads {threads:?}\nfds {fds:?}")
}
