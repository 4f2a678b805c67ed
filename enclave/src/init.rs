//! Running as PID 1 inside an enclave image: mount the pseudo-filesystems, load the kernel
//! modules in the image's order, tell the parent the enclave is up (the Nitro heartbeat:
//! byte 0xB7 to CID 3 port 9000, answered with 0xB7), then hand over to the signer.
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use crate::EnclaveError;

/// The Nitro boot heartbeat byte.
pub const HEARTBEAT: u8 = 0xB7;

fn err(detail: impl Into<String>) -> EnclaveError {
    EnclaveError::Platform {
        platform: "init",
        detail: detail.into(),
    }
}

/// Hardens this process at start, on every platform: not dumpable (`PR_SET_DUMPABLE` 0: no
/// ptrace attach and no `/proc/<pid>/mem`, `environ` or `cmdline` for other processes of the
/// same uid) and no core file (`RLIMIT_CORE` 0, soft and hard), so that a crash or a
/// same-uid process cannot copy the keys and installed secrets out of memory
/// (adversary22 finding 10). On `sim`/`sim-snp` root still can: those platforms keep their
/// keys in host memory and say so.
pub fn harden_process() -> Result<(), EnclaveError> {
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0)
        .map_err(|e| err(format!("setrlimit RLIMIT_CORE 0: {e}")))?;
    nix::sys::prctl::set_dumpable(false).map_err(|e| err(format!("prctl PR_SET_DUMPABLE 0: {e}")))
}

/// Mounts /proc, /sys and /dev (devtmpfs).
pub fn mount_pseudo_filesystems() -> Result<(), EnclaveError> {
    use nix::mount::{mount, MsFlags};
    for (src, target, fstype) in [
        ("proc", "/proc", "proc"),
        ("sysfs", "/sys", "sysfs"),
        ("devtmpfs", "/dev", "devtmpfs"),
    ] {
        let _ = std::fs::create_dir_all(target);
        mount(
            Some(src),
            target,
            Some(fstype),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            None::<&str>,
        )
        .or_else(|e| {
            if e == nix::errno::Errno::EBUSY {
                Ok(())
            } else {
                Err(e)
            }
        })
        .map_err(|e| err(format!("mount {target}: {e}")))?;
    }
    Ok(())
}

/// Loads the modules listed in `dir/order`, in that order.
pub fn load_modules(dir: &Path) -> Result<Vec<String>, EnclaveError> {
    let order = std::fs::read_to_string(dir.join("order"))
        .map_err(|e| EnclaveError::io("read module order", e))?;
    let mut loaded = Vec::new();
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = dir.join(name);
        let f = std::fs::File::open(&path)
            .map_err(|e| EnclaveError::io(format!("open {}", path.display()), e))?;
        match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => loaded.push(name.to_owned()),
            Err(e) => return Err(err(format!("load {name}: {e}"))),
        }
    }
    Ok(loaded)
}

/// Sends the heartbeat to `cid:port` and waits for its echo.
pub fn heartbeat(cid: u32, port: u32) -> Result<(), EnclaveError> {
    let addr = vsock::VsockAddr::new(cid, port);
    let mut last = String::new();
    for _ in 0..50 {
        match vsock::VsockStream::connect(&addr) {
            Ok(mut s) => {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                s.write_all(&[HEARTBEAT])
                    .map_err(|e| EnclaveError::io("send heartbeat", e))?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b)
                    .map_err(|e| EnclaveError::io("read heartbeat answer", e))?;
                return if b[0] == HEARTBEAT {
                    Ok(())
                } else {
                    Err(err(format!(
                        "heartbeat answered {:#x}, expected 0xb7",
                        b[0]
                    )))
                };
            }
            Err(e) => {
                last = e.to_string();
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
    Err(err(format!(
        "no heartbeat listener at {cid}:{port}: {last}"
    )))
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_is_not_dumpable_and_writes_no_core() {
        super::harden_process().unwrap();
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
        assert_eq!(
            nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_CORE).unwrap(),
            (0, 0)
        );
    }
}
