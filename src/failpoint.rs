//! Named failpoints for the crash tests: with the `failpoints` cargo feature (which `make test`
//! enables) and `OUBLI_FAILPOINT=<name>` (or `<name>@<n>`: the n-th time it is reached) in the
//! environment, the process kills itself with SIGKILL at that point, as a power cut would: no
//! destructor, no flush. Without the feature, [`hit`] compiles to nothing.
//!
//! [`panic_here`] is the same for panics: with the feature and `OUBLI_PANIC=<name>`, the code
//! at that point panics, so a test can check that one failing request does not take the server
//! down.

/// Every failpoint, in the order a request meets them.
pub const ALL: [&str; 11] = [
    "enrol.before-write",
    "log.signed",
    "log.before-mirror",
    // With the keys in etcd (`--cluster`): after the ciphertext's write, before the keys' commit.
    "enrol.after-write",
    "erase.planned",
    "erase.deleted",
    "erase.unindexed",
    "erase.keys-purged",
    "erase.phase1-logged",
    "erase.rows-purged",
    "rotate.rewrapped",
];

/// Dies here if this failpoint is armed (and this is its n-th hit).
#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::{
        OnceLock,
        atomic::{AtomicU64, Ordering},
    };
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var("OUBLI_FAILPOINT").ok()?;
        match spec.split_once('@') {
            Some((name, n)) => Some((name.to_string(), n.parse().unwrap_or(1))),
            None => Some((spec, 1)),
        }
    });
    if let Some((armed, n)) = armed
        && armed == name
        && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *n
    {
        eprintln!("failpoint {name} reached");
        let _ = std::process::Command::new("kill").args(["-9", &std::process::id().to_string()]).status();
        std::process::abort();
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Panics here if `OUBLI_PANIC` names this point.
#[cfg(feature = "failpoints")]
pub fn panic_here(name: &str) {
    if std::env::var("OUBLI_PANIC").is_ok_and(|armed| armed == name) {
        panic!("test panic at {name}");
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn panic_here(_name: &str) {}
