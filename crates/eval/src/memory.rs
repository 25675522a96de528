//! Peak resident memory of this process and of child processes (Linux).
//!
//! This process: `VmHWM` ("high water mark") from `/proc/self/status`.
//!
//! A child: the kernel's `ru_maxrss` from `wait4` is exact for that child, except
//! that Linux folds in the high-water mark of the memory the child had before
//! `exec`, which after `fork` or `vfork` is the parent's. So a child that never
//! outgrows its parent would be reported at the parent's peak. The child's
//! `VmHWM` is therefore also polled while it runs: when `ru_maxrss` exceeds the
//! parent's peak at spawn time it is the child's own (and exact); otherwise the
//! polled value is used, which can miss a peak reached just before exit.
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

/// Resets this process's peak resident size (`VmHWM`) to its current size, so that a later
/// [`peak_rss_bytes`] measures the peak of what runs in between (Linux 4.0 and later: writes
/// `5` to `/proc/self/clear_refs`).
pub fn reset_peak_rss() -> Result<()> {
    if !cfg!(target_os = "linux") {
        return Err(Error::Unsupported);
    }
    let path = Path::new("/proc/self/clear_refs");
    std::fs::write(path, b"5").map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Hands memory the allocator holds but nobody uses back to the kernel (glibc's
/// `malloc_trim`; nothing elsewhere). Freed blocks below glibc's mmap threshold stay resident
/// otherwise, and a model loaded after another one would reuse them without raising the
/// resident size: measure after this call.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> i32;
        }
        // SAFETY: malloc_trim only returns free pages of glibc's arenas to the kernel.
        unsafe {
            malloc_trim(0);
        }
    }
}

/// Starts measuring a peak from here: hands free memory back ([`release_free_memory`]),
/// resets the peak ([`reset_peak_rss`]) and returns the resident size now, which a later
/// [`peak_rss_bytes`] is to be compared with.
pub fn start_peak_measurement() -> Result<u64> {
    release_free_memory();
    reset_peak_rss()?;
    current_rss_bytes()
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
    /// Whether `peak_rss_bytes` is the kernel's exact figure (true) or the
    /// polled one (false; see the module documentation).
    pub peak_rss_exact: bool,
    /// Wall-clock time from spawn to exit.
    pub wall: Duration,
}

/// Runs `command` to completion and measures its peak resident memory and wall
/// time. Its standard streams are inherited unless `command` says otherwise.
#[cfg(target_os = "linux")]
pub fn run_and_measure(command: &mut Command) -> Result<ChildRun> {
    use std::os::unix::process::ExitStatusExt;

    let program = command.get_program().to_string_lossy().into_owned();
    let parent_peak = peak_rss_bytes()?;
    let start = Instant::now();
    let child = command.spawn().map_err(|source| Error::Child {
        program: program.clone(),
        source,
    })?;
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| Error::Child {
        program: program.clone(),
        source: std::io::Error::other("pid out of range"),
    })?;
    let status_file = std::path::PathBuf::from(format!("/proc/{pid}/status"));
    let mut polled = 0u64;
    let mut status: libc::c_int = 0;
    // SAFETY: `rusage` is plain old data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let mut pause = Duration::from_millis(1);
    loop {
        // Until it is reaped the child's /proc entry exists; once it has exited
        // (a zombie) it has no memory and no VmHWM line.
        if let Ok(hwm) = status_field_bytes(&status_file, "VmHWM:") {
            polled = polled.max(hwm);
        }
        // SAFETY: the pointers are to live locals of the right types; `pid` is our
        // own child, which nothing else waits for (we own `child` and never call
        // its `wait`), so this reaps exactly that process.
        let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
        if r == pid {
            break;
        }
        if r == -1 {
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(Error::Child {
                    program,
                    source: error,
                });
            }
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    let wall = start.elapsed();
    // Reaped above; dropping a `Child` neither waits nor kills.
    drop(child);
    let status = ExitStatus::from_raw(status);
    // Linux reports ru_maxrss in KiB.
    let kernel = u64::try_from(usage.ru_maxrss).unwrap_or(0).saturating_mul(1024);
    let exact = kernel > parent_peak;
    Ok(ChildRun {
        exit_code: status.code(),
        success: status.success(),
        peak_rss_bytes: if exact { kernel } else { polled },
        peak_rss_exact: exact,
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

    /// Held by the tests that measure this process's memory: another test allocating or
    /// resetting the peak at the same time would move their figures.
    fn own_memory() -> std::sync::MutexGuard<'static, ()> {
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        LOCK.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_reset_peak_measures_only_what_follows() {
        let _alone = own_memory();
        // A 256 MiB peak, freed and handed back, then a reset: the peak is the size now, and a
        // 64 MiB block touched afterwards raises it by at least that much.
        drop(std::hint::black_box(vec![1u8; 256 << 20]));
        release_free_memory();
        reset_peak_rss().unwrap();
        let (now, peak) = (current_rss_bytes().unwrap(), peak_rss_bytes().unwrap());
        assert!(peak < now + (32 << 20), "peak {peak} after a reset at {now}");
        let block = std::hint::black_box(vec![1u8; 64 << 20]);
        let grown = peak_rss_bytes().unwrap() - now;
        assert!(grown >= 60 << 20, "grew {grown} bytes for 64 MiB");
        drop(block);
    }

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
        let _alone = own_memory();
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
        // Its 32 MB input is built in this process, too.
        let _alone = own_memory();
        const MIB: u64 = 1 << 20;
        // `sort` holds its whole input (here 32 MB from a file) until it exits.
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("lines");
        std::fs::write(&input, "abcdefg\n".repeat(4 << 20)).unwrap();
        let mut small = Command::new("true");
        let small = run_and_measure(&mut small).unwrap();
        let mut big = Command::new("sort");
        big.stdin(std::fs::File::open(&input).unwrap())
            .stdout(std::process::Stdio::null());
        let big_run = run_and_measure(&mut big).unwrap();
        assert!(small.success && big_run.success);
        assert!(small.peak_rss_bytes < 16 * MIB, "{small:?}");
        assert!(big_run.peak_rss_bytes > 24 * MIB, "{big_run:?}");
        let mut failing = Command::new("sh");
        failing.args(["-c", "exit 3"]);
        assert_eq!(run_and_measure(&mut failing).unwrap().exit_code, Some(3));
        assert!(run_and_measure(&mut Command::new("/nonexistent/program")).is_err());
    }
}
