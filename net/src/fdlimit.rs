//! File descriptors for the connection caps: every running listener reserves its cap, and
//! the soft `RLIMIT_NOFILE` is raised (never lowered, never above the hard limit) to cover
//! all reservations plus a reserve for the process's own files and sockets.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use nix::sys::resource::{getrlimit, setrlimit, Resource};

use crate::NetError;

/// Descriptors kept for everything but client connections (logs, audit files, Redis, the
/// enclave, the listeners themselves).
pub(crate) const RESERVE: u64 = 256;

static RESERVED: AtomicU64 = AtomicU64::new(0);
static ADJUST: Mutex<()> = Mutex::new(());

/// A reservation, released on drop.
pub(crate) struct Reservation(u64);

impl Drop for Reservation {
    fn drop(&mut self) {
        RESERVED.fetch_sub(self.0, Ordering::SeqCst);
    }
}

/// Reserves `n` descriptors, raising the soft limit if needed.
pub(crate) fn reserve(n: usize) -> Result<Reservation, NetError> {
    let n = n as u64;
    let _g = ADJUST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let needed = RESERVED.load(Ordering::SeqCst) + n + RESERVE;
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| NetError::Rlimit(e.to_string()))?;
    if soft < needed {
        if hard < needed {
            return Err(NetError::FdLimit { needed, hard });
        }
        setrlimit(Resource::RLIMIT_NOFILE, needed, hard)
            .map_err(|e| NetError::Rlimit(e.to_string()))?;
        tracing::info!(
            from = soft,
            to = needed,
            "raised the open-file soft limit for the connection caps"
        );
    }
    RESERVED.fetch_add(n, Ordering::SeqCst);
    Ok(Reservation(n))
}
