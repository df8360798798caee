//! The MQTT password file: CONNECT's user name and password checked
//! against salted, slow hashes in Mosquitto's `mosquitto_passwd` format,
//! so a file made by either tool works in both.
//!
//! One `user:hash` line per user (blank lines and `#` comments skipped):
//! - `$7$ITERATIONS$SALT$HASH`: PBKDF2-HMAC-SHA512 (Mosquitto 2's default;
//!   salt and the 64-byte hash in standard base64, with padding); what
//!   `eddy passwd` writes, with [`ITERATIONS_DEFAULT`] iterations;
//! - `$6$SALT$HASH`: one SHA-512 of password then salt (Mosquitto 1.x).
//!
//! Argon2id lines (`$8$`, newer Mosquitto builds) and plain-text passwords
//! are refused when the file is loaded, naming the line.
//!
//! A check costs the same for a user not in the file as for the costliest
//! user in it (a derivation against a dummy entry), and the comparison is
//! constant time (ring's `pbkdf2::verify`, or [`same_bytes`]). Checks run
//! off the executor, at most [`PASSWORD_CHECKS_MAX`] at a time.
//!
//! This module parses, verifies and writes the file; the connection loop
//! decides what a refusal looks like on the wire.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::pbkdf2;

/// Largest password file read, in bytes.
pub const PASSWORD_FILE_BYTES_MAX: u64 = 4 << 20;
/// Most users in a password file.
pub const PASSWORD_USERS_MAX: usize = 100_000;
/// Most PBKDF2 iterations accepted in a line (bounds the CPU one CONNECT
/// can cost).
pub const ITERATIONS_MAX: u32 = 1_000_000;
/// Iterations of the lines `eddy passwd` writes (Mosquitto 2.0 writes
/// 101, later versions 1,000; a check at 10,000 takes a few ms on a
/// Raspberry Pi 4).
pub const ITERATIONS_DEFAULT: u32 = 10_000;
/// Salt of the lines `eddy passwd` writes, in bytes (Mosquitto's length).
pub const SALT_BYTES: usize = 12;
/// Password checks running at once (each is CPU-bound).
pub const PASSWORD_CHECKS_MAX: usize = 2;
/// Longest user name, in bytes (an MQTT string).
pub const USER_BYTES_MAX: usize = 1_024;

const HASH_BYTES: usize = 64;

/// What is wrong with a password file, or writing one.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {PASSWORD_FILE_BYTES_MAX} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} line {line}: {reason}")]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error("{path}: more than {PASSWORD_USERS_MAX} users")]
    TooManyUsers { path: PathBuf },
    #[error("user name {0:?}: 1 to {USER_BYTES_MAX} bytes, no `:` and no control characters")]
    BadUser(String),
    #[error("no random salt could be drawn")]
    Random,
}

/// One user's hash.
#[derive(Clone, PartialEq, Eq)]
enum Hash {
    /// `$6$`: SHA-512 of password then salt.
    Sha512 { salt: Vec<u8>, hash: Vec<u8> },
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2 {
        iterations: NonZeroU32,
        salt: Vec<u8>,
        hash: Vec<u8>,
    },
}

impl std::fmt::Debug for Hash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the hash or salt, even in a debug print.
        match self {
            Hash::Sha512 { .. } => f.write_str("$6$…"),
            Hash::Pbkdf2 { iterations, .. } => write!(f, "$7${iterations}$…"),
        }
    }
}

impl Hash {
    fn cost(&self) -> u32 {
        match self {
            Hash::Sha512 { .. } => 1,
            Hash::Pbkdf2 { iterations, .. } => iterations.get(),
        }
    }

    fn parse(text: &str) -> Result<Hash, String> {
        let decode = |what: &str, b64: &str| {
            STANDARD
                .decode(b64)
                .map_err(|e| format!("{what} is not base64: {e}"))
        };
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "7", iterations, salt, hash] => {
                let iterations = iterations
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=ITERATIONS_MAX).contains(n))
                    .and_then(NonZeroU32::new)
                    .ok_or_else(|| format!("iterations must be 1..={ITERATIONS_MAX}"))?;
                let (salt, hash) = (decode("salt", salt)?, decode("hash", hash)?);
                check_lengths(&salt, &hash)?;
                Ok(Hash::Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                })
            }
            ["", "6", salt, hash] => {
                let (salt, hash) = (decode("salt", salt)?, decode("hash", hash)?);
                check_lengths(&salt, &hash)?;
                Ok(Hash::Sha512 { salt, hash })
            }
            ["", "8", ..] => Err(
                "argon2id ($8$) is not supported: make the line with `eddy passwd` or `mosquitto_passwd -H sha512-pbkdf2`".into(),
            ),
            _ => Err(
                "not a hashed password ($7$ PBKDF2-SHA512 or $6$ SHA-512); plain-text files must be hashed first (`eddy passwd`, `mosquitto_passwd -U`)".into(),
            ),
        }
    }

    fn verify(&self, password: &[u8]) -> bool {
        match self {
            Hash::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            Hash::Sha512 { salt, hash } => {
                let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
                ctx.update(password);
                ctx.update(salt);
                same_bytes(ctx.finish().as_ref(), hash)
            }
        }
    }

    /// The `$7$` line text for `password` with a fresh salt.
    fn encode_new(password: &[u8], iterations: NonZeroU32) -> Result<String, PasswordError> {
        use ring::rand::SecureRandom as _;
        let mut salt = [0u8; SALT_BYTES];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| PasswordError::Random)?;
        let mut hash = [0u8; HASH_BYTES];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            iterations,
            &salt,
            password,
            &mut hash,
        );
        Ok(format!(
            "$7${iterations}${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(hash)
        ))
    }
}

fn check_lengths(salt: &[u8], hash: &[u8]) -> Result<(), String> {
    if salt.is_empty() || salt.len() > HASH_BYTES {
        return Err(format!("salt must be 1..={HASH_BYTES} bytes"));
    }
    if hash.len() != HASH_BYTES {
        return Err(format!("hash must be {HASH_BYTES} bytes (SHA-512)"));
    }
    Ok(())
}

/// Whether `a == b`, in time that depends on their lengths only.
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Whether `user` can be a line's user name (and an identity).
pub fn is_valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= USER_BYTES_MAX
        && !user.contains(':')
        && !user.contains(char::is_control)
}

/// A loaded password file.
#[derive(Debug)]
pub struct Passwords {
    pub path: PathBuf,
    users: HashMap<String, Hash>,
    /// Checked for unknown users: the costliest entry's kind and cost,
    /// matching no password.
    dummy: Hash,
}

impl Passwords {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Passwords, PasswordError> {
        let text = read_bounded(path)?;
        Passwords::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Passwords, PasswordError> {
        let mut users = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let bad = |reason: String| PasswordError::Line {
                path: path.to_path_buf(),
                line: i + 1,
                reason,
            };
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (user, hash) = line
                .split_once(':')
                .ok_or_else(|| bad("not `user:hash`".into()))?;
            if !is_valid_user(user) {
                return Err(bad(format!("user name {user:?} is not valid")));
            }
            let hash = Hash::parse(hash).map_err(bad)?;
            if users.insert(user.to_string(), hash).is_some() {
                return Err(bad(format!("user {user:?} appears twice")));
            }
            if users.len() > PASSWORD_USERS_MAX {
                return Err(PasswordError::TooManyUsers {
                    path: path.to_path_buf(),
                });
            }
        }
        let costliest = users.values().max_by_key(|h| h.cost()).cloned();
        let dummy = match costliest {
            Some(Hash::Sha512 { salt, .. }) => Hash::Sha512 {
                salt,
                hash: vec![0; HASH_BYTES],
            },
            Some(Hash::Pbkdf2 {
                iterations, salt, ..
            }) => Hash::Pbkdf2 {
                iterations,
                salt,
                hash: vec![0; HASH_BYTES],
            },
            None => Hash::Sha512 {
                salt: vec![0; SALT_BYTES],
                hash: vec![0; HASH_BYTES],
            },
        };
        Ok(Passwords {
            path: path.to_path_buf(),
            users,
            dummy,
        })
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }

    /// Whether `user` is in the file with `password` (blocking: a slow
    /// hash; the same work whether or not the user exists).
    pub fn check(&self, user: &str, password: &[u8]) -> bool {
        let (known, hash) = match self.users.get(user) {
            Some(hash) => (true, hash),
            None => (false, &self.dummy),
        };
        let verified = hash.verify(password);
        known & verified
    }
}

fn read_bounded(path: &Path) -> Result<String, PasswordError> {
    use std::io::Read as _;
    let read = |source| PasswordError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read)?;
    let mut text = String::new();
    file.take(PASSWORD_FILE_BYTES_MAX + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > PASSWORD_FILE_BYTES_MAX {
        return Err(PasswordError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

/// The password file in use, swappable while the server runs, and the
/// bound on concurrent checks.
pub struct PasswordStore {
    path: PathBuf,
    current: RwLock<Arc<Passwords>>,
    checks: smol::lock::Semaphore,
}

impl PasswordStore {
    pub fn load(path: &Path) -> Result<PasswordStore, PasswordError> {
        Ok(PasswordStore {
            path: path.to_path_buf(),
            current: RwLock::new(Arc::new(Passwords::load(path)?)),
            checks: smol::lock::Semaphore::new(PASSWORD_CHECKS_MAX),
        })
    }

    pub fn current(&self) -> Arc<Passwords> {
        self.current.read().expect("password lock").clone()
    }

    /// [`Passwords::check`] off the executor, within [`PASSWORD_CHECKS_MAX`].
    pub async fn check(&self, user: &str, password: &[u8]) -> bool {
        let _slot = self.checks.acquire().await;
        let passwords = self.current();
        let (user, password) = (user.to_string(), password.to_vec());
        smol::unblock(move || passwords.check(&user, &password)).await
    }
}

impl crate::reload::Reloadable for PasswordStore {
    fn name(&self) -> &'static str {
        "mqtt_passwords"
    }

    fn files(&self) -> Vec<PathBuf> {
        vec![self.path.clone()]
    }

    fn reload(&self) -> Result<String, String> {
        let passwords = Passwords::load(&self.path).map_err(|e| e.to_string())?;
        let count = passwords.len();
        *self.current.write().expect("password lock") = Arc::new(passwords);
        Ok(format!(
            "MQTT password file {} ({count} users); new connections are checked against it",
            self.path.display()
        ))
    }
}

/// Sets `user`'s password in the file at `path` (created if missing), or
/// removes the user (`password` `None`); the other lines are kept as they
/// are. Written to a temporary file (mode 0600), fsynced and renamed over,
/// so a crash leaves the old file or the new one. Returns whether the user
/// was in the file before.
pub fn update_file(
    path: &Path,
    user: &str,
    password: Option<&[u8]>,
    iterations: u32,
) -> Result<bool, PasswordError> {
    if !is_valid_user(user) {
        return Err(PasswordError::BadUser(user.to_string()));
    }
    let iterations = NonZeroU32::new(iterations.clamp(1, ITERATIONS_MAX)).expect("at least 1");
    let old = match read_bounded(path) {
        Ok(text) => text,
        Err(PasswordError::Read { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            String::new()
        }
        Err(e) => return Err(e),
    };
    // The file must be valid before it is changed (no silent rewrite of a
    // file eddy would refuse).
    Passwords::parse(path, &old)?;
    let mut text = String::with_capacity(old.len() + 200);
    let mut found = false;
    for line in old.lines() {
        if line.split_once(':').map(|(u, _)| u) == Some(user) {
            found = true;
            continue;
        }
        let _ = writeln!(text, "{line}");
    }
    if let Some(password) = password {
        let _ = writeln!(text, "{user}:{}", Hash::encode_new(password, iterations)?);
    }
    // Paired check: what is written parses, with the user as asked.
    let written = Passwords::parse(path, &text)?;
    assert_eq!(written.users.contains_key(user), password.is_some());
    write_atomically(path, text.as_bytes())?;
    Ok(found)
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PasswordError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| PasswordError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().to_string());
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.unwrap_or_default(),
        std::process::id()
    ));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| std::fs::rename(&tmp, path))
        .and_then(|()| std::fs::File::open(&dir)?.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by Debian 12's `mosquitto_passwd -b FILE alice secret`.
    const MOSQUITTO_LINE: &str = "alice:$7$101$iGAi6PelI1URWgSf$zbqU88sc9l3HsLS7RRKSjPuziGs6+oAAKfcTkNOFfdXbPkMX15zg6zgM/NruF9Ldk7H/6uiFuTTx91zK0FfgVw==";

    #[test]
    fn a_mosquitto_passwd_line_verifies() {
        let p = Passwords::parse(Path::new("pw"), MOSQUITTO_LINE).unwrap();
        assert!(p.check("alice", b"secret"));
        assert!(!p.check("alice", b"Secret"));
        assert!(!p.check("bob", b"secret"));
    }

    #[test]
    fn a_sha512_line_verifies() {
        let salt = b"0123456789ab";
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
        ctx.update(b"pw");
        ctx.update(salt);
        let line = format!(
            "# old\n\nbob:$6${}${}\n",
            STANDARD.encode(salt),
            STANDARD.encode(ctx.finish())
        );
        let p = Passwords::parse(Path::new("pw"), &line).unwrap();
        assert!(p.check("bob", b"pw") && !p.check("bob", b"pw2"));
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        for (text, needle) in [
            ("a:plain", "not a hashed password"),
            ("a:$8$v=19$m=47104$x$y", "argon2id"),
            ("a:$7$0$AAAA$AAAA", "iterations"),
            ("a:$7$101$AAAA$AAAA", "64 bytes"),
            ("no colon", "user:hash"),
            (&format!("{MOSQUITTO_LINE}\n{MOSQUITTO_LINE}"), "twice"),
        ] {
            let e = Passwords::parse(Path::new("pw"), text).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn update_file_adds_replaces_and_removes_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwords");
        std::fs::write(&path, format!("{MOSQUITTO_LINE}\n")).unwrap();
        assert!(!update_file(&path, "bob", Some(b"one"), 5).unwrap());
        assert!(update_file(&path, "bob", Some(b"two"), 5).unwrap());
        let p = Passwords::load(&path).unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.check("bob", b"two") && !p.check("bob", b"one"));
        assert!(p.check("alice", b"secret"), "other lines kept");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("bob:$7$5$"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(update_file(&path, "bob", None, 5).unwrap());
        assert_eq!(Passwords::load(&path).unwrap().len(), 1);
        assert!(update_file(&path, "a:b", Some(b"x"), 5).is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temp");
    }
}
