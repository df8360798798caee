//! Raising the open-file limit a command needs (one descriptor per
//! connection), and saying so.
//!
//! Linux starts processes with a soft `RLIMIT_NOFILE` that is often 1024
//! while the hard limit allows far more; a hub with 10,000 devices (or a
//! fleet simulator) needs the soft limit raised up to what the hard limit
//! permits. This does not raise the hard limit (that needs privileges:
//! `LimitNOFILE=` in systemd, `ulimit -Hn`, /etc/security/limits.conf).

/// Descriptors a process needs besides its connections (sled's files,
/// the listener, stdio, certificates, the blocking pool's work).
pub const FD_RESERVE_MAX: u64 = 256;

/// Raises the soft open-file limit so that `connections` sockets fit.
/// Returns `Some((before, after))` when it raised it, `None` when it was
/// high enough; an `Err` names the fix when the hard limit is too low.
pub fn ensure_for_connections(
    connections: usize,
    what: &str,
) -> Result<Option<(u64, u64)>, String> {
    let needed = u64::try_from(connections)
        .unwrap_or(u64::MAX)
        .saturating_add(FD_RESERVE_MAX);
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE)
        .map_err(|e| format!("cannot read the open-file limit: {e}"))?;
    if soft >= needed {
        return Ok(None);
    }
    let raised = rlimit::increase_nofile_limit(needed)
        .map_err(|e| format!("cannot raise the open-file limit to {needed}: {e}"))?;
    if raised < needed {
        return Err(format!(
            "{what} needs {needed} open files but the hard limit is {hard}: raise it \
             (ulimit -Hn {needed} as root, or LimitNOFILE={needed} under systemd)"
        ));
    }
    Ok(Some((soft, raised)))
}
