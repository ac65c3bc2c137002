//! Starting and stopping DPDK's Environment Abstraction Layer.
//!
//! EAL arguments come first on hbgw's command line (`hbgw [EAL args] -- [app
//! args]`), as with testpmd and pktgen. Before handing them to EAL we check
//! what EAL reports badly: hugepages that are not there. EAL's own messages
//! still go to stderr; our error is the one line that names the fix.

use super::{ffi, rte_errno, strerror};
use std::ffi::{c_char, CString};
use std::path::Path;

/// Why EAL did not start.
#[derive(Debug, thiserror::Error)]
pub enum EalError {
    /// No hugepages are reserved and mounted, and `--no-huge` was not given.
    #[error("no hugepages mounted: run scripts/setup-hugepages.sh (as root), or pass --no-huge --no-shconf -m 512 for a functional run without them")]
    NoHugepages,
    /// An argument contained a NUL byte.
    #[error("EAL argument {0:?} contains a NUL byte: remove it")]
    BadArgument(String),
    /// `rte_eal_init` failed.
    #[error("EAL initialisation failed: {reason}: {fix}")]
    Init {
        /// rte_errno as text.
        reason: String,
        /// What to do.
        fix: &'static str,
    },
}

/// EAL is running; dropping this does not clean up (call [`Eal::cleanup`]
/// once every DPDK object is released).
pub struct Eal {
    _argv: Vec<CString>,
}

/// True if `args` contain any of `flags` (as `--flag` or `--flag=value`).
pub fn has_flag(args: &[String], flags: &[&str]) -> bool {
    args.iter().any(|a| flags.iter().any(|f| a == f || a.starts_with(&format!("{f}="))))
}

/// Whether hugepages can be used: a hugetlbfs mount and free pages of some size.
pub fn hugepages_available() -> bool {
    let mounted = std::fs::read_to_string("/proc/mounts")
        .map(|m| m.lines().any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs")))
        .unwrap_or(false);
    if !mounted {
        return false;
    }
    let Ok(sizes) = std::fs::read_dir("/sys/kernel/mm/hugepages") else { return false };
    sizes.flatten().any(|dir| {
        std::fs::read_to_string(dir.path().join("free_hugepages"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    })
}

impl Eal {
    /// Starts EAL with `args` (`args[0]` is the program name).
    pub fn init(args: &[String]) -> Result<Eal, EalError> {
        let no_huge = has_flag(args, &["--no-huge"]);
        if !no_huge && !hugepages_available() && Path::new("/proc/mounts").exists() {
            return Err(EalError::NoHugepages);
        }
        let argv: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| EalError::BadArgument(a.clone())))
            .collect::<Result<_, _>>()?;
        // EAL may permute the pointer array (getopt), never the strings.
        let mut ptrs: Vec<*mut c_char> = argv.iter().map(|c| c.as_ptr() as *mut c_char).collect();
        ptrs.push(std::ptr::null_mut());
        // SAFETY: argc/argv describe NUL-terminated strings that `argv` keeps
        // alive for as long as EAL runs (it is stored in the returned Eal);
        // the array is NULL-terminated as C's main() argv is. rte_eal_init is
        // called once per process: main() calls Eal::init once.
        let rc = unsafe { ffi::rte_eal_init((ptrs.len() - 1) as i32, ptrs.as_mut_ptr()) };
        if rc < 0 {
            let errno = rte_errno();
            let fix = match errno {
                libc::EINVAL => "check the EAL arguments before `--` (`hbgw --help`; EAL printed the one it rejected above)",
                libc::EACCES => "run as root, or give this user access to hugepages and /dev/vfio",
                libc::ENOMEM => "reserve more hugepages (scripts/setup-hugepages.sh 1024) or lower -m / dataplane.mempool_size",
                libc::EALREADY => "EAL was already started in this process",
                libc::ENOTSUP => "this machine lacks a CPU feature DPDK was built for",
                _ => "see EAL's messages above",
            };
            return Err(EalError::Init { reason: strerror(errno), fix });
        }
        Ok(Eal { _argv: argv })
    }

    /// EAL's runtime directory (`/var/run/dpdk/<file-prefix>`).
    pub fn runtime_dir(&self) -> Option<std::path::PathBuf> {
        // SAFETY: returns a pointer to EAL's static runtime-dir buffer, valid
        // while EAL runs; we copy it out at once.
        let ptr = unsafe { ffi::rte_eal_get_runtime_dir() };
        if ptr.is_null() {
            return None;
        }
        // SAFETY: non-null and NUL-terminated.
        let dir = unsafe { std::ffi::CStr::from_ptr(ptr) }.to_string_lossy().into_owned();
        (!dir.is_empty()).then(|| dir.into())
    }

    /// Releases EAL's resources and removes its runtime directory (sockets
    /// and memory maps that only this primary process uses). Every port,
    /// mempool and worker must be done.
    pub fn cleanup(self) {
        let runtime_dir = self.runtime_dir();
        // SAFETY: called once, after workers have returned and ports are
        // closed (the gateway's shutdown order), as rte_eal_cleanup requires.
        unsafe {
            ffi::rte_eal_cleanup();
        }
        if let Some(dir) = runtime_dir {
            // EAL 22.11 leaves the directory behind; nothing else uses it once
            // the primary process has cleaned up.
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found_with_and_without_values() {
        let args: Vec<String> = ["hbgw", "--no-pci", "--file-prefix=x", "-l", "0-1"].map(String::from).to_vec();
        assert!(has_flag(&args, &["--no-pci"]));
        assert!(has_flag(&args, &["--file-prefix"]));
        assert!(!has_flag(&args, &["--no-huge"]));
    }
}
