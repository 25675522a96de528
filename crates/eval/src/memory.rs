//! Peak resident memory of this process and of child processes (Linux).
//!
//! This process: `VmHWM` ("high water mark") from `/proc/self/status`. A child:
//! the kernel's `ru_maxrss` for exactly that child, from `wait4`, which is exact
//! even for a child that peaks just before it exits (polling `/proc/<pid>` could
//! miss that).

use std::path::Path;
use std::process::Command;
#[cfg(target_os = "linux")]
use std::process::ExitStatus;
use std::time::Duration;
#[cfg(target_os = "linux")]
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Peak resident set size of the current process in bytes (`VmHWM`).
pub fn peak_rss_bytes() -> Result<u64> {
    status_field_bytes(Path::new("/proc/self/status"), "VmHWM:")
}

/// Current resident set size of the current process in bytes (`VmRSS`).
pub fn current_rss_bytes() -> Result<u64> {
    status_field_bytes(Path::new("/proc/self/status"), "VmRSS:")
}

/// Reads a `kB` field of a `/proc/<pid>/status` file.
fn status_field_bytes(path: &Path, field: &str) -> Result<u64> {
    if !cfg!(target_os = "linux") {
        return Err(Error::Unsupported);
    }
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_status_kib(&text, field)
        .map(|kib| kib.saturating_mul(1024))
        .ok_or(Error::Unsupported)
}

/// The value in KiB of `field` (for example `VmHWM:`) in `/proc/*/status` text.
fn parse_status_kib(text: &str, field: &str) -> Option<u64> {
    let rest = text.lines().find_map(|l| l.strip_prefix(field))?;
    let mut parts = rest.split_whitespace();
    let value = parts.next()?.parse().ok()?;
    (parts.next() == Some("kB")).then_some(value)
}

/// What running a child process measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildRun {
    /// The exit code, if it exited normally.
    pub exit_code: Option<i32>,
    /// Whether it exited with status 0.
    pub success: bool,
    /// Its peak resident set size in bytes.
    pub peak_rss_bytes: u64,
    /// Wall-clock time from spawn to exit.
    pub wall: Duration,
}

/// Runs `command` to completion and measures its peak resident memory and wall
/// time. Its standard streams are inherited unless `command` says otherwise.
#[cfg(target_os = "linux")]
pub fn run_and_measure(command: &mut Command) -> Result<ChildRun> {
    use std::os::unix::process::ExitStatusExt;

    let program = command.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let child = command.spawn().map_err(|source| Error::Child {
        program: program.clone(),
        source,
    })?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| Error::Child {
        program: program.clone(),
        source: std::io::Error::other("pid out of range"),
    })?;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: the pointers are to live locals of the right types; `pid` is our
        // own child, which has not been waited for (we own `child` and never call
        // its `wait`), so this reaps exactly that process.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(Error::Child {
                program,
                source: error,
            });
        }
    }
    let wall = start.elapsed();
    // Reaped above; dropping a `Child` neither waits nor kills.
    drop(child);
    let status = ExitStatus::from_raw(status);
    // Linux reports ru_maxrss in KiB.
    let kib = u64::try_from(usage.ru_maxrss).unwrap_or(0);
    Ok(ChildRun {
        exit_code: status.code(),
        success: status.success(),
        peak_rss_bytes: kib.saturating_mul(1024),
        wall,
    })
}

/// Runs `command` to completion and measures its peak resident memory (not
/// supported on this platform).
#[cfg(not(target_os = "linux"))]
pub fn run_and_measure(_command: &mut Command) -> Result<ChildRun> {
    Err(Error::Unsupported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text = "Name:\tx\nVmPeak:\t  2000 kB\nVmHWM:\t  1234 kB\nVmRSS:\t 1000 kB\n";
        assert_eq!(parse_status_kib(text, "VmHWM:"), Some(1234));
        assert_eq!(parse_status_kib(text, "VmSwap:"), None);
        assert_eq!(parse_status_kib("VmHWM: 12 MB", "VmHWM:"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn own_peak_grows_with_a_large_allocation() {
        let before = peak_rss_bytes().unwrap();
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let after = peak_rss_bytes().unwrap();
        assert!(after >= before && after >= 64 << 20, "{before} -> {after}");
        assert!(current_rss_bytes().unwrap() > 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn child_peak_is_measured() {
        // Python is not needed: `head -c` into `sort` makes the child hold ~40 MB.
        let mut small = Command::new("true");
        let small = run_and_measure(&mut small).unwrap();
        let mut big = Command::new("sh");
        big.args([
            "-c",
            "head -c 40000000 /dev/zero | tr '\\0' 'a' | sort > /dev/null",
        ]);
        let big_run = run_and_measure(&mut big).unwrap();
        assert!(small.success && big_run.success);
        // ru_maxrss of a shell covers its largest waited-for descendant too.
        assert!(
            big_run.peak_rss_bytes > small.peak_rss_bytes,
            "{big_run:?} vs {small:?}"
        );
        let mut failing = Command::new("sh");
        failing.args(["-c", "exit 3"]);
        assert_eq!(run_and_measure(&mut failing).unwrap().exit_code, Some(3));
        assert!(run_and_measure(&mut Command::new("/nonexistent/program")).is_err());
    }
}
