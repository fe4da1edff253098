//! API keys (`X-API-Key`), of which only a hash is stored.
//!
//! A key reads `tolk_<id>_<secret>`: a 12-character public id (shown by `tolk keys list`,
//! used to revoke and in logs) and a 40-character secret, both base62 (`[0-9A-Za-z]`, so the
//! `_` separators are unambiguous) drawn from the OS random generator (through `uuid` v4):
//! about 71 bits in the id and 238 in the secret. A store keeps, per id, an [`ApiKeyRecord`]
//! whose `hash` is the lowercase hex SHA-256 of the whole key; the key itself is returned
//! once by [`KeyStore::create`] and never stored.
//!
//! Two stores:
//! - [`FileKeyStore`]: a JSON file (`{"version": 1, "keys": [...]}`, mode 0600), written
//!   atomically under a lock file, so that `tolk keys` commands may run while a server holds
//!   the same file open: the server notices their changes within a second.
//! - [`RedisKeyStore`]: one Redis hash, `{prefix}:keys`, id → record JSON.
//!
//! [`KeyStore::verify`] runs on every request: for the file store it is an in-memory lookup
//! (plus, at most once a second or when the id is unknown, one `stat` of the file), for Redis
//! one `HGET`.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{LimitOverrides, Permission};

/// What every key starts with.
pub const KEY_PREFIX: &str = "tolk_";
/// Characters in a key's public id.
pub const ID_LEN: usize = 12;
/// Characters in a key's secret part.
pub const SECRET_LEN: usize = 40;
/// Characters in a whole key: `tolk_` + id + `_` + secret.
pub const KEY_LEN: usize = KEY_PREFIX.len() + ID_LEN + 1 + SECRET_LEN;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const MAX_NAME_CHARS: usize = 64;
const MAX_TIER_CHARS: usize = 32;
const FILE_VERSION: u32 = 1;
/// How often a [`FileKeyStore`] looks at its file's metadata on the `verify` path.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a writer waits for another writer's lock file.
const LOCK_TIMEOUT: Duration = Duration::from_secs(5);
const LOCK_RETRY: Duration = Duration::from_millis(10);
/// New ids drawn when one collides with a stored id (71 random bits: never in practice).
const ID_ATTEMPTS: usize = 4;

/// One stored key: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// The key's public id (the 12 characters after `tolk_`).
    pub id: String,
    /// What the key is for (1–64 printable characters).
    pub name: String,
    /// The limits tier (1–32 of `[a-z0-9_-]`).
    pub tier: String,
    /// Permission names ([`Permission::as_str`]).
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Per-key overrides of the tier's limits.
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// When the key was revoked (milliseconds since the Unix epoch); revoked keys are kept
    /// for the audit trail but no longer verify.
    #[serde(default)]
    pub revoked_at_ms: Option<u64>,
    /// Lowercase hex SHA-256 of the whole key.
    pub hash: String,
}

impl ApiKeyRecord {
    /// The permissions this key carries that this build knows (unknown names are skipped).
    pub fn permission_set(&self) -> Vec<Permission> {
        self.permissions
            .iter()
            .filter_map(|p| Permission::parse(p))
            .collect()
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked_at_ms.is_some()
    }

    /// Whether `presented` is this record's key and the key is not revoked (constant-time
    /// comparison of the hashes).
    fn accepts(&self, presented: &str) -> bool {
        let matches = ct_eq(hash_key(presented).as_bytes(), self.hash.as_bytes());
        matches && !self.is_revoked()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Stored data that does not parse. `path` is the file, or for Redis
    /// `host:port key[field]`.
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    /// The backing store (Redis) cannot be reached or failed.
    #[error("key store unavailable: {0}")]
    Unavailable(String),
    /// A bad argument: name, tier, Redis URL.
    #[error("invalid: {0}")]
    Invalid(String),
}

/// Where API keys live. Implementations are cheap to share (`Arc<dyn KeyStore>`).
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Store a new key; returns its record and the key itself (shown once, never stored).
    async fn create(
        &self,
        name: &str,
        tier: &str,
        permissions: &[Permission],
        limits: LimitOverrides,
    ) -> Result<(ApiKeyRecord, String), KeyError>;

    /// Every key, revoked ones included, oldest first.
    async fn list(&self) -> Result<Vec<ApiKeyRecord>, KeyError>;

    /// Mark revoked (kept for the audit trail); `false` if no such id; revoking twice is fine
    /// (the first revocation time is kept).
    async fn revoke(&self, id: &str) -> Result<bool, KeyError>;

    /// The record of a valid, unrevoked key; `Ok(None)` for malformed, unknown, revoked or
    /// mismatching keys. Constant-time hash comparison.
    async fn verify(&self, presented: &str) -> Result<Option<ApiKeyRecord>, KeyError>;
}

// ---------------------------------------------------------------------------------------
// Key format, hashing, validation

/// The public id of a well-formed key (for logs), without looking it up.
pub fn key_id(presented: &str) -> Option<&str> {
    parse_key(presented).map(|(id, _)| id)
}

/// `(id, secret)` of a well-formed key.
fn parse_key(presented: &str) -> Option<(&str, &str)> {
    if presented.len() != KEY_LEN || !presented.is_ascii() {
        return None;
    }
    let rest = presented.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = (&rest[..ID_LEN], &rest[ID_LEN + 1..]);
    let well_formed = rest.as_bytes()[ID_LEN] == b'_' && is_base62(id) && is_base62(secret);
    well_formed.then_some((id, secret))
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_valid_id(id: &str) -> bool {
    id.len() == ID_LEN && is_base62(id)
}

/// Lowercase hex SHA-256 of the whole key.
fn hash_key(key: &str) -> String {
    let digest = Sha256::digest(key.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.iter() {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

fn is_valid_hash(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Equality whose time depends only on the lengths (which are public: 64 hex digits).
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// `n` base62 characters from the OS random generator. Each UUID v4 carries 122 random
/// bits (the version and variant bits are dropped); they are read 6 at a time and values
/// ≥ 62 rejected, so every character is uniform.
fn random_base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        let v = uuid::Uuid::new_v4().as_u128();
        // Layout (most significant first): 48 random | 4 version | 12 random | 2 variant |
        // 62 random.
        let mut bits = ((v >> 80) << 74) | (((v >> 64) & 0xfff) << 62) | (v & ((1 << 62) - 1));
        for _ in 0..122 / 6 {
            let six = (bits & 0x3f) as usize;
            bits >>= 6;
            if six < 62 && out.len() < n {
                out.push(BASE62[six] as char);
            }
        }
    }
    out
}

/// A fresh key and its id.
fn generate_key() -> (String, String) {
    let id = random_base62(ID_LEN);
    let key = format!("{KEY_PREFIX}{id}_{}", random_base62(SECRET_LEN));
    (id, key)
}

fn validate_name(name: &str) -> Result<(), KeyError> {
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(KeyError::Invalid(format!(
            "key name must be 1 to {MAX_NAME_CHARS} characters, not {chars}"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(KeyError::Invalid(
            "key name must not contain control characters".into(),
        ));
    }
    if name.trim().is_empty() {
        return Err(KeyError::Invalid("key name must not be blank".into()));
    }
    Ok(())
}

fn validate_tier(tier: &str) -> Result<(), KeyError> {
    let ok = !tier.is_empty()
        && tier.len() <= MAX_TIER_CHARS
        && tier
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(KeyError::Invalid(format!(
            "tier must be 1 to {MAX_TIER_CHARS} of [a-z0-9_-], not {tier:?}"
        )))
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A record for a new key (arguments already validated), and the key.
fn new_record(
    name: &str,
    tier: &str,
    permissions: &[Permission],
    limits: LimitOverrides,
) -> (ApiKeyRecord, String) {
    let mut perms = permissions.to_vec();
    perms.sort();
    perms.dedup();
    let (id, key) = generate_key();
    let record = ApiKeyRecord {
        id,
        name: name.to_owned(),
        tier: tier.to_owned(),
        permissions: perms.iter().map(|p| p.as_str().to_owned()).collect(),
        limits,
        created_at_ms: now_ms(),
        revoked_at_ms: None,
        hash: hash_key(&key),
    };
    (record, key)
}

/// Checks a stored record's id and hash (hand edits, other writers).
fn check_record(record: &ApiKeyRecord) -> Result<(), String> {
    if !is_valid_id(&record.id) {
        return Err(format!(
            "key id {:?} is not 12 base62 characters",
            record.id
        ));
    }
    if !is_valid_hash(&record.hash) {
        return Err(format!(
            "key {}: hash is not 64 lowercase hex digits",
            record.id
        ));
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, KeyError> + Send + 'static,
) -> Result<T, KeyError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(KeyError::Unavailable(format!("key store task failed: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------
// File store

/// Keys in a JSON file. Writes (`create`, `revoke`) take a `<path>.lock` file, re-read the
/// file, and replace it atomically (temporary file in the same directory, fsync, rename), so
/// several processes may write; readers never lock. `verify` answers from memory and
/// reloads when the file's size, mtime or inode changed, looking at most once a second, and
/// at once when asked for an id it does not know (a key just created by `tolk keys create`).
/// A file that does not parse is an error naming it (and `verify` fails closed until it is
/// fixed); it is never replaced.
#[derive(Clone)]
pub struct FileKeyStore {
    inner: Arc<FileInner>,
}

struct FileInner {
    path: PathBuf,
    lock_path: PathBuf,
    snapshot: RwLock<Snapshot>,
    /// Milliseconds since `epoch` of the last metadata check.
    last_check_ms: AtomicU64,
    epoch: Instant,
}

#[derive(Default)]
struct Snapshot {
    file: FileState,
    keys: Vec<ApiKeyRecord>,
    index: HashMap<String, usize>,
    /// Set when the file could not be read or parsed: every lookup fails with it until the
    /// file changes.
    failure: Option<Failure>,
}

/// What the snapshot was loaded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum FileState {
    /// Nothing loaded yet, or reading failed: the next check reloads.
    #[default]
    Unknown,
    Missing,
    Present(Fingerprint),
}

/// Cheap identity of one version of the file. Writers replace the file by rename, so the
/// inode changes on every write (and the size nearly always).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Fingerprint {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

#[derive(Debug, Clone)]
enum Failure {
    Io(io::ErrorKind, String),
    Corrupt(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct KeysFile {
    version: u32,
    keys: Vec<ApiKeyRecord>,
}

impl Snapshot {
    fn new(file: FileState, keys: Vec<ApiKeyRecord>) -> Self {
        let index = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.id.clone(), i))
            .collect();
        Snapshot {
            file,
            keys,
            index,
            failure: None,
        }
    }

    fn failed(file: FileState, failure: Failure) -> Self {
        Snapshot {
            file,
            failure: Some(failure),
            ..Snapshot::default()
        }
    }
}

impl FileKeyStore {
    /// Opens the keys file at `path`, reading it if it exists (a missing file is an empty
    /// store; it and its directories are created by the first `create`).
    pub fn open(path: impl Into<PathBuf>) -> Result<Self, KeyError> {
        let path = path.into();
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        let inner = FileInner {
            path,
            lock_path: lock_path.into(),
            snapshot: RwLock::new(Snapshot::default()),
            last_check_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        };
        let (file, keys) = inner.read_file()?;
        *inner.write_snapshot() = Snapshot::new(file, keys);
        Ok(FileKeyStore {
            inner: Arc::new(inner),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

#[async_trait]
impl KeyStore for FileKeyStore {
    async fn create(
        &self,
        name: &str,
        tier: &str,
        permissions: &[Permission],
        limits: LimitOverrides,
    ) -> Result<(ApiKeyRecord, String), KeyError> {
        validate_name(name)?;
        validate_tier(tier)?;
        let (name, tier, permissions) = (name.to_owned(), tier.to_owned(), permissions.to_vec());
        let inner = self.inner.clone();
        let (record, key) = blocking(move || {
            inner.modify(|keys| {
                for _ in 0..ID_ATTEMPTS {
                    let (record, key) = new_record(&name, &tier, &permissions, limits);
                    if keys.iter().all(|k| k.id != record.id) {
                        keys.push(record.clone());
                        return Ok(Some((record, key)));
                    }
                }
                Err(KeyError::Unavailable(
                    "could not draw an unused key id".into(),
                ))
            })
        })
        .await?
        .expect("create always writes");
        tracing::info!(id = %record.id, name = %record.name, tier = %record.tier, "API key created");
        Ok((record, key))
    }

    async fn list(&self) -> Result<Vec<ApiKeyRecord>, KeyError> {
        let inner = self.inner.clone();
        blocking(move || {
            inner.check(true);
            let snapshot = inner.read_snapshot();
            inner.fail_on(&snapshot)?;
            Ok(snapshot.keys.clone())
        })
        .await
    }

    async fn revoke(&self, id: &str) -> Result<bool, KeyError> {
        if !is_valid_id(id) {
            return Ok(false);
        }
        let id = id.to_owned();
        let inner = self.inner.clone();
        let found = blocking(move || {
            inner.modify(|keys| {
                let Some(record) = keys.iter_mut().find(|k| k.id == id) else {
                    return Ok(None); // nothing to write
                };
                if record.revoked_at_ms.is_some() {
                    return Ok(None);
                }
                record.revoked_at_ms = Some(now_ms());
                tracing::info!(id = %record.id, name = %record.name, "API key revoked");
                Ok(Some(()))
            })?;
            // Whether the id exists, from the snapshot `modify` installed.
            let snapshot = inner.read_snapshot();
            Ok(snapshot.index.contains_key(&id))
        })
        .await?;
        Ok(found)
    }

    async fn verify(&self, presented: &str) -> Result<Option<ApiKeyRecord>, KeyError> {
        let Some((id, _)) = parse_key(presented) else {
            return Ok(None);
        };
        let inner = &self.inner;
        let checked = inner.check(false);
        let mut record = inner.lookup(id)?;
        if record.is_none() && !checked {
            // Perhaps created a moment ago by another process.
            inner.check(true);
            record = inner.lookup(id)?;
        }
        Ok(record.filter(|r| r.accepts(presented)))
    }
}

impl FileInner {
    fn read_snapshot(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_snapshot(&self) -> std::sync::RwLockWriteGuard<'_, Snapshot> {
        self.snapshot.write().unwrap_or_else(|e| e.into_inner())
    }

    fn corrupt(&self, reason: impl Into<String>) -> KeyError {
        KeyError::Corrupt {
            path: self.path.display().to_string(),
            reason: reason.into(),
        }
    }

    fn io_error(path: &Path, source: io::Error) -> KeyError {
        KeyError::Io {
            path: path.to_owned(),
            source,
        }
    }

    fn fail_on(&self, snapshot: &Snapshot) -> Result<(), KeyError> {
        match &snapshot.failure {
            None => Ok(()),
            Some(Failure::Corrupt(reason)) => Err(self.corrupt(reason.clone())),
            Some(Failure::Io(kind, message)) => Err(Self::io_error(
                &self.path,
                io::Error::new(*kind, message.clone()),
            )),
        }
    }

    fn lookup(&self, id: &str) -> Result<Option<ApiKeyRecord>, KeyError> {
        let snapshot = self.read_snapshot();
        self.fail_on(&snapshot)?;
        Ok(snapshot.index.get(id).map(|&i| snapshot.keys[i].clone()))
    }

    /// Reloads the file if it changed. Unless `force`, does nothing when another call
    /// looked less than [`RECHECK_INTERVAL`] ago. Returns whether it looked. Failures are
    /// kept in the snapshot (see [`Snapshot::failure`]).
    fn check(&self, force: bool) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64 + 1; // 0 means never
        let last = self.last_check_ms.load(Ordering::Acquire);
        if !force {
            let due = last == 0 || now.saturating_sub(last) >= RECHECK_INTERVAL.as_millis() as u64;
            let claimed = due
                && self
                    .last_check_ms
                    .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
            if !claimed {
                return false;
            }
        } else {
            self.last_check_ms.store(now, Ordering::Release);
        }

        let current = match fs::metadata(&self.path) {
            Ok(meta) => FileState::Present(Fingerprint::of(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => FileState::Missing,
            Err(_) => FileState::Unknown, // read_file reports it
        };
        if current != FileState::Unknown && self.read_snapshot().file == current {
            return true;
        }
        let snapshot = match self.read_file() {
            Ok((file, keys)) => {
                tracing::debug!(path = %self.path.display(), keys = keys.len(), "API keys reloaded");
                if file == FileState::Missing {
                    tracing::warn!(path = %self.path.display(), "API keys file is missing: no key is valid");
                }
                Snapshot::new(file, keys)
            }
            Err(KeyError::Corrupt { reason, .. }) => {
                tracing::error!(path = %self.path.display(), %reason, "API keys file is corrupt: no key is valid until it is fixed");
                Snapshot::failed(current, Failure::Corrupt(reason))
            }
            Err(KeyError::Io { source, .. }) => {
                tracing::error!(path = %self.path.display(), error = %source, "cannot read API keys file");
                Snapshot::failed(
                    FileState::Unknown,
                    Failure::Io(source.kind(), source.to_string()),
                )
            }
            Err(other) => Snapshot::failed(
                FileState::Unknown,
                Failure::Io(io::ErrorKind::Other, other.to_string()),
            ),
        };
        *self.write_snapshot() = snapshot;
        true
    }

    /// The file's keys and its fingerprint (taken from the open file, so they match).
    fn read_file(&self) -> Result<(FileState, Vec<ApiKeyRecord>), KeyError> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((FileState::Missing, Vec::new()))
            }
            Err(e) => return Err(Self::io_error(&self.path, e)),
        };
        let meta = file.metadata().map_err(|e| Self::io_error(&self.path, e))?;
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.read_to_end(&mut bytes)
            .map_err(|e| Self::io_error(&self.path, e))?;
        let parsed: KeysFile =
            serde_json::from_slice(&bytes).map_err(|e| self.corrupt(e.to_string()))?;
        if parsed.version != FILE_VERSION {
            return Err(self.corrupt(format!(
                "unsupported version {} (this build reads {FILE_VERSION})",
                parsed.version
            )));
        }
        let mut seen = std::collections::HashSet::new();
        for record in &parsed.keys {
            check_record(record).map_err(|reason| self.corrupt(reason))?;
            if !seen.insert(record.id.as_str()) {
                return Err(self.corrupt(format!("key id {} appears twice", record.id)));
            }
        }
        Ok((FileState::Present(Fingerprint::of(&meta)), parsed.keys))
    }

    /// Read-modify-write under the lock file. `change` returns `Some` when it changed the
    /// keys (they are then written) and `None` when there is nothing to write.
    fn modify<T>(
        &self,
        change: impl FnOnce(&mut Vec<ApiKeyRecord>) -> Result<Option<T>, KeyError>,
    ) -> Result<Option<T>, KeyError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|e| Self::io_error(dir, e))?;
        }
        let _lock = LockFile::acquire_within(&self.lock_path, LOCK_TIMEOUT)?;
        let (file, mut keys) = self.read_file()?;
        let Some(result) = change(&mut keys)? else {
            *self.write_snapshot() = Snapshot::new(file, keys);
            return Ok(None);
        };
        let fingerprint = self.write_file(&keys)?;
        // Installed while holding the lock: no other writer can have replaced the file since.
        *self.write_snapshot() = Snapshot::new(FileState::Present(fingerprint), keys);
        Ok(Some(result))
    }

    /// Replaces the file atomically; returns the new file's fingerprint.
    fn write_file(&self, keys: &[ApiKeyRecord]) -> Result<Fingerprint, KeyError> {
        #[derive(Serialize)]
        struct KeysFileRef<'a> {
            version: u32,
            keys: &'a [ApiKeyRecord],
        }
        let mut json = serde_json::to_vec_pretty(&KeysFileRef {
            version: FILE_VERSION,
            keys,
        })
        .map_err(|e| KeyError::Unavailable(format!("cannot encode keys: {e}")))?;
        json.push(b'\n');

        let mut tmp = self.path.clone().into_os_string();
        tmp.push(format!(".tmp-{}-{}", std::process::id(), random_base62(8)));
        let tmp = PathBuf::from(tmp);
        let written = (|| {
            let mut file = create_private(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            let meta = file.metadata()?;
            fs::rename(&tmp, &self.path)?;
            Ok(Fingerprint::of(&meta)) // rename keeps inode, size and mtime
        })();
        match written {
            Ok(fingerprint) => {
                sync_dir(self.path.parent());
                Ok(fingerprint)
            }
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                Err(Self::io_error(&self.path, e))
            }
        }
    }
}

/// A new file, readable and writable by its owner only.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(file)
}

/// Makes a rename durable (best effort; not possible on every platform).
fn sync_dir(dir: Option<&Path>) {
    #[cfg(unix)]
    {
        let dir = dir
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// `<keys file>.lock`, created exclusively; removed on drop.
struct LockFile {
    path: PathBuf,
}

impl LockFile {
    fn acquire_within(path: &Path, timeout: Duration) -> Result<Self, KeyError> {
        let deadline = Instant::now() + timeout;
        loop {
            match create_private(path) {
                Ok(mut file) => {
                    let _ = writeln!(file, "{}", std::process::id());
                    return Ok(LockFile {
                        path: path.to_owned(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                    if Instant::now() >= deadline {
                        return Err(KeyError::Io {
                            path: path.to_owned(),
                            source: io::Error::new(
                                io::ErrorKind::TimedOut,
                                format!(
                                    "held by another writer for {timeout:?}; remove it if no `tolk keys` command is running"
                                ),
                            ),
                        });
                    }
                    std::thread::sleep(LOCK_RETRY);
                }
                Err(e) => {
                    return Err(KeyError::Io {
                        path: path.to_owned(),
                        source: e,
                    })
                }
            }
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove lock file");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Redis store

/// Keys in the Redis hash `{prefix}:keys` (field: id, value: record JSON). `create` uses
/// `HSETNX`, `revoke` a compare-and-set script, `verify` one `HGET`, so every instance sees
/// changes at once.
#[derive(Clone)]
pub struct RedisKeyStore {
    conn: redis::aio::ConnectionManager,
    hash_key: String,
    /// `host:port` (never the URL, which may hold a password).
    addr: String,
    cas: Arc<redis::Script>,
}

/// Replaces field ARGV[1] with ARGV[3] if it still holds ARGV[2]: 1 replaced, 0 no such
/// field, -1 changed meanwhile.
const CAS_SCRIPT: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if current ~= ARGV[2] then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
";

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

impl RedisKeyStore {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`), failing at once when the
    /// server cannot be reached. Keys live in `{prefix}:keys`.
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, KeyError> {
        let client = redis::Client::open(url)
            .map_err(|e| KeyError::Invalid(format!("Redis URL does not parse ({:?})", e.kind())))?;
        let addr = client.get_connection_info().addr().to_string();
        let unavailable =
            |e: redis::RedisError| KeyError::Unavailable(format!("Redis at {addr}: {e}"));

        // One plain connection first: the manager would retry an unreachable server.
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let mut probe = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        redis::cmd("PING")
            .query_async::<()>(&mut probe)
            .await
            .map_err(unavailable)?;
        drop(probe);

        let config = redis::aio::ConnectionManagerConfig::new()
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(400))
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT));
        let conn = redis::aio::ConnectionManager::new_with_config(client, config)
            .await
            .map_err(unavailable)?;
        Ok(RedisKeyStore {
            conn,
            hash_key: format!("{prefix}:keys"),
            addr,
            cas: Arc::new(redis::Script::new(CAS_SCRIPT)),
        })
    }

    fn unavailable(&self, e: redis::RedisError) -> KeyError {
        KeyError::Unavailable(format!("Redis at {}: {e}", self.addr))
    }

    fn parse(&self, id: &str, json: &str) -> Result<ApiKeyRecord, KeyError> {
        let corrupt = |reason: String| KeyError::Corrupt {
            path: format!("{} {}[{id}]", self.addr, self.hash_key),
            reason,
        };
        let record: ApiKeyRecord =
            serde_json::from_str(json).map_err(|e| corrupt(e.to_string()))?;
        check_record(&record).map_err(corrupt)?;
        if record.id != id {
            return Err(corrupt(format!("holds the record of key {}", record.id)));
        }
        Ok(record)
    }

    async fn get(&self, id: &str) -> Result<Option<(ApiKeyRecord, String)>, KeyError> {
        let json: Option<String> = redis::cmd("HGET")
            .arg(&self.hash_key)
            .arg(id)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.unavailable(e))?;
        json.map(|json| Ok((self.parse(id, &json)?, json)))
            .transpose()
    }
}

fn encode(record: &ApiKeyRecord) -> Result<String, KeyError> {
    serde_json::to_string(record)
        .map_err(|e| KeyError::Unavailable(format!("cannot encode key: {e}")))
}

#[async_trait]
impl KeyStore for RedisKeyStore {
    async fn create(
        &self,
        name: &str,
        tier: &str,
        permissions: &[Permission],
        limits: LimitOverrides,
    ) -> Result<(ApiKeyRecord, String), KeyError> {
        validate_name(name)?;
        validate_tier(tier)?;
        for _ in 0..ID_ATTEMPTS {
            let (record, key) = new_record(name, tier, permissions, limits);
            let stored: bool = redis::cmd("HSETNX")
                .arg(&self.hash_key)
                .arg(&record.id)
                .arg(encode(&record)?)
                .query_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.unavailable(e))?;
            if stored {
                tracing::info!(id = %record.id, name = %record.name, tier = %record.tier, "API key created");
                return Ok((record, key));
            }
        }
        Err(KeyError::Unavailable(
            "could not draw an unused key id".into(),
        ))
    }

    async fn list(&self) -> Result<Vec<ApiKeyRecord>, KeyError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&self.hash_key)
            .query_async(&mut self.conn.clone())
            .await
            .map_err(|e| self.unavailable(e))?;
        let mut keys = fields
            .iter()
            .map(|(id, json)| self.parse(id, json))
            .collect::<Result<Vec<_>, _>>()?;
        keys.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(keys)
    }

    async fn revoke(&self, id: &str) -> Result<bool, KeyError> {
        if !is_valid_id(id) {
            return Ok(false);
        }
        // Compare-and-set: a concurrent change (another revoke) makes us read again.
        for _ in 0..8 {
            let Some((mut record, old)) = self.get(id).await? else {
                return Ok(false);
            };
            if record.is_revoked() {
                return Ok(true);
            }
            record.revoked_at_ms = Some(now_ms());
            let outcome: i64 = self
                .cas
                .key(&self.hash_key)
                .arg(id)
                .arg(&old)
                .arg(encode(&record)?)
                .invoke_async(&mut self.conn.clone())
                .await
                .map_err(|e| self.unavailable(e))?;
            match outcome {
                1 => {
                    tracing::info!(id = %record.id, name = %record.name, "API key revoked");
                    return Ok(true);
                }
                0 => return Ok(false),
                _ => continue,
            }
        }
        Err(KeyError::Unavailable(format!(
            "key {id} kept changing while being revoked"
        )))
    }

    async fn verify(&self, presented: &str) -> Result<Option<ApiKeyRecord>, KeyError> {
        let Some((id, _)) = parse_key(presented) else {
            return Ok(None);
        };
        Ok(self
            .get(id)
            .await?
            .map(|(record, _)| record)
            .filter(|r| r.accepts(presented)))
    }
}

// ---------------------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    // -- helpers ------------------------------------------------------------------------

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            let dir = std::env::temp_dir().join(format!(
                "tolk-keys-test-{}-{}",
                std::process::id(),
                random_base62(10)
            ));
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    use crate::test_redis::{free_port, RedisServer};

    fn secret_of(key: &str) -> &str {
        &key[KEY_LEN - SECRET_LEN..]
    }

    /// A copy of `key` with one secret character changed.
    fn altered(key: &str) -> String {
        let mut bytes = key.as_bytes().to_vec();
        let last = bytes.last_mut().unwrap();
        *last = if *last == b'a' { b'b' } else { b'a' };
        String::from_utf8(bytes).unwrap()
    }

    /// The shared battery. `stored` returns everything the store holds, as text.
    async fn battery<S: KeyStore>(store: &S, stored: impl Fn() -> String) {
        let limits = LimitOverrides {
            requests_per_minute: Some(120),
            ..LimitOverrides::default()
        };
        let perms = [
            Permission::TranslateWrite,
            Permission::TranslateRead,
            Permission::TranslateWrite,
        ];
        let (record, key) = store
            .create("ci pipeline", "free", &perms, limits)
            .await
            .unwrap();

        // Format.
        assert_eq!(key.len(), KEY_LEN);
        assert!(key.starts_with("tolk_"));
        assert_eq!(key_id(&key), Some(record.id.as_str()));
        assert_eq!(record.name, "ci pipeline");
        assert_eq!(record.tier, "free");
        assert_eq!(record.permissions, ["translate:read", "translate:write"]);
        assert_eq!(
            record.permission_set(),
            [Permission::TranslateRead, Permission::TranslateWrite]
        );
        assert_eq!(record.limits, limits);
        assert_eq!(record.revoked_at_ms, None);
        assert_eq!(record.hash, hash_key(&key));
        assert!(record.created_at_ms > 1_600_000_000_000);

        // Verifies to the same record.
        assert_eq!(store.verify(&key).await.unwrap(), Some(record.clone()));

        // Only the hash is stored.
        let data = stored();
        assert!(
            data.contains(&record.hash),
            "stored data lacks the hash: {data}"
        );
        assert!(!data.contains(&key), "stored data holds the key");
        assert!(
            !data.contains(secret_of(&key)),
            "stored data holds the secret"
        );

        // Listed.
        assert_eq!(store.list().await.unwrap(), std::slice::from_ref(&record));

        // A second key is independent.
        let (record2, key2) = store
            .create(
                "Ünïcode name ✓",
                "pro-2",
                &[Permission::StreamCreate],
                LimitOverrides::default(),
            )
            .await
            .unwrap();
        assert_ne!(record2.id, record.id);
        assert_ne!(secret_of(&key2), secret_of(&key));
        assert_eq!(store.verify(&key2).await.unwrap(), Some(record2.clone()));
        assert_eq!(store.verify(&key).await.unwrap(), Some(record.clone()));
        let listed = store.list().await.unwrap();
        assert_eq!(listed, [record.clone(), record2.clone()], "oldest first");
        // Key 1's secret under key 2's id (and the reverse) is refused.
        let crossed = format!("tolk_{}_{}", record2.id, secret_of(&key));
        assert_eq!(store.verify(&crossed).await.unwrap(), None);

        // Unknown id, altered secret, malformed strings.
        let unknown = format!("tolk_{}_{}", "ZZZZZZZZZZZZ", secret_of(&key));
        assert_eq!(store.verify(&unknown).await.unwrap(), None);
        assert_eq!(store.verify(&altered(&key)).await.unwrap(), None);
        let malformed = [
            String::new(),
            "tolk_".into(),
            key[5..].to_string(),                            // no prefix
            format!("TOLK_{}", &key[5..]),                   // wrong prefix
            format!("{key}a"),                               // too long
            key[..key.len() - 1].to_string(),                // too short
            format!("tolk_{}x_{}", &key[5..17], &key[19..]), // id 13 chars
            format!("tolk_{}-{}", &key[5..17], &key[18..]),  // wrong separator
            format!("{}é", &key[..key.len() - 2]),           // non-ASCII, same byte length
            format!("{}+", &key[..key.len() - 1]),           // not base62
            format!(" {}", &key[..key.len() - 1]),           // whitespace
            key.to_uppercase(),
        ];
        for bad in &malformed {
            assert_eq!(store.verify(bad).await.unwrap(), None, "accepted {bad:?}");
        }

        // Revocation.
        assert!(store.revoke(&record.id).await.unwrap());
        assert_eq!(store.verify(&key).await.unwrap(), None);
        assert_eq!(
            store.verify(&key2).await.unwrap(),
            Some(record2.clone()),
            "other key untouched"
        );
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 2);
        let revoked_at = listed[0].revoked_at_ms.expect("list shows the revocation");
        assert!(revoked_at >= record.created_at_ms);
        assert_eq!(listed[1], record2);
        // Twice is fine and keeps the first time.
        assert!(store.revoke(&record.id).await.unwrap());
        assert_eq!(
            store.list().await.unwrap()[0].revoked_at_ms,
            Some(revoked_at)
        );
        assert!(!store.revoke("ZZZZZZZZZZZZ").await.unwrap());
        assert!(!store.revoke("").await.unwrap());
        assert!(!store.revoke("../etc/passwd").await.unwrap());

        // Invalid names and tiers.
        let long_name = "n".repeat(65);
        let long_tier = "t".repeat(33);
        let bad: [(&str, &str); 8] = [
            ("", "free"),
            ("   ", "free"),
            (&long_name, "free"),
            ("tab\there", "free"),
            ("ok", ""),
            ("ok", "Free"),
            ("ok", "free tier"),
            ("ok", &long_tier),
        ];
        for (name, tier) in bad {
            let result = store
                .create(name, tier, &[], LimitOverrides::default())
                .await;
            assert!(
                matches!(result, Err(KeyError::Invalid(_))),
                "{name:?}/{tier:?}: {result:?}"
            );
        }
        let fits = "é".repeat(64);
        store
            .create(&fits, &"t".repeat(32), &[], LimitOverrides::default())
            .await
            .unwrap();
        assert_eq!(store.list().await.unwrap().len(), 3);
    }

    // -- pure functions -----------------------------------------------------------------

    #[test]
    fn keys_are_well_formed_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        let mut counts = [0u32; 62];
        for _ in 0..2000 {
            let (id, key) = generate_key();
            assert_eq!(parse_key(&key), Some((id.as_str(), &key[18..])));
            assert!(seen.insert(key.clone()));
            for b in key[5..].bytes().filter(|&b| b != b'_') {
                counts[BASE62.iter().position(|&c| c == b).unwrap()] += 1;
            }
        }
        // 104,000 characters, ~1677 each: every character shows up, none dominates.
        assert!(
            counts.iter().all(|&c| (1300..2100).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn hashing_and_comparison() {
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
        assert!(ct_eq(b"", b""));
    }

    // -- file store ---------------------------------------------------------------------

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_battery() {
        let dir = TempDir::new();
        let path = dir.0.join("nested/dir/keys.json");
        let store = FileKeyStore::open(&path).unwrap();
        assert!(!path.exists(), "created on first create only");
        assert_eq!(store.list().await.unwrap(), []);
        battery(&store, || fs::read_to_string(&path).unwrap()).await;

        let text = fs::read_to_string(&path).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["keys"].as_array().unwrap().len(), 3);
        // No lock or temporary files left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["keys.json"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "keys file mode {mode:o}");
        }

        // Reopening reads the same keys.
        let reopened = FileKeyStore::open(&path).unwrap();
        assert_eq!(reopened.list().await.unwrap(), store.list().await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_sees_other_writers() {
        let dir = TempDir::new();
        let path = dir.0.join("keys.json");
        let server = FileKeyStore::open(&path).unwrap(); // no file yet
        let cli = FileKeyStore::open(&path).unwrap(); // "another process"

        // A key created elsewhere verifies at once (an unknown id forces a check).
        let (_, warmup) = cli
            .create("warmup", "free", &[], LimitOverrides::default())
            .await
            .unwrap();
        assert!(server.verify(&warmup).await.unwrap().is_some());
        let (record, key) = cli
            .create("new", "free", &[], LimitOverrides::default())
            .await
            .unwrap();
        assert_eq!(server.verify(&key).await.unwrap(), Some(record.clone()));

        // A revocation elsewhere takes effect within ~1 s.
        assert!(cli.revoke(&record.id).await.unwrap());
        let start = Instant::now();
        while server.verify(&key).await.unwrap().is_some() {
            assert!(
                start.elapsed() < Duration::from_millis(1100),
                "revocation not seen in 1.1 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(server.verify(&warmup).await.unwrap().is_some());
        // And the server's writes see the CLI's.
        let (record3, _) = server
            .create("third", "free", &[], LimitOverrides::default())
            .await
            .unwrap();
        let ids: Vec<_> = cli
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(ids.len(), 3);
        assert_eq!(ids[2], record3.id);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn file_store_concurrent_writers_lose_nothing() {
        let dir = TempDir::new();
        let path = dir.0.join("keys.json");
        let a = FileKeyStore::open(&path).unwrap();
        let b = FileKeyStore::open(&path).unwrap();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store
                    .create(&format!("key {i}"), "free", &[], LimitOverrides::default())
                    .await
                    .unwrap()
            }));
        }
        let mut created = Vec::new();
        for task in tasks {
            created.push(task.await.unwrap());
        }
        let listed = a.list().await.unwrap();
        assert_eq!(listed.len(), 10);
        assert_eq!(b.list().await.unwrap(), listed);
        for (record, key) in &created {
            assert_eq!(a.verify(key).await.unwrap().as_ref(), Some(record));
            assert_eq!(b.verify(key).await.unwrap().as_ref(), Some(record));
        }
        // Concurrent revocations and creates.
        let (r0, r1) = (created[0].0.id.clone(), created[1].0.id.clone());
        let (x, y, z) = tokio::join!(
            a.revoke(&r0),
            b.revoke(&r1),
            b.create("late", "free", &[], LimitOverrides::default())
        );
        assert!(x.unwrap() && y.unwrap());
        z.unwrap();
        let listed = b.list().await.unwrap();
        assert_eq!(listed.len(), 11);
        assert_eq!(listed.iter().filter(|r| r.is_revoked()).count(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn file_store_refuses_corrupt_files() {
        let dir = TempDir::new();
        let path = dir.0.join("keys.json");

        fs::write(&path, "{\"version\": 1, \"keys\": [").unwrap();
        match FileKeyStore::open(&path) {
            Err(KeyError::Corrupt { path: p, .. }) => assert_eq!(p, path.display().to_string()),
            Err(other) => panic!("expected Corrupt, got {other}"),
            Ok(_) => panic!("opened a corrupt file"),
        }
        fs::write(&path, r#"{"version": 2, "keys": []}"#).unwrap();
        let err = FileKeyStore::open(&path).err().expect("version 2 refused");
        assert!(err.to_string().contains("keys.json"), "{err}");
        assert!(err.to_string().contains("version 2"), "{err}");

        // Corrupted while open: every operation fails (closed), the file is left alone.
        fs::remove_file(&path).unwrap();
        let store = FileKeyStore::open(&path).unwrap();
        let (_, key) = store
            .create("k", "free", &[], LimitOverrides::default())
            .await
            .unwrap();
        fs::write(&path, "not json").unwrap();
        tokio::time::sleep(Duration::from_millis(1050)).await;
        assert!(matches!(
            store.verify(&key).await,
            Err(KeyError::Corrupt { .. })
        ));
        assert!(matches!(store.list().await, Err(KeyError::Corrupt { .. })));
        let created = store
            .create("k2", "free", &[], LimitOverrides::default())
            .await;
        assert!(
            matches!(created, Err(KeyError::Corrupt { .. })),
            "{created:?}"
        );
        assert!(matches!(
            store.revoke(key_id(&key).unwrap()).await,
            Err(KeyError::Corrupt { .. })
        ));
        assert_eq!(fs::read_to_string(&path).unwrap(), "not json");
        assert!(!dir.0.join("keys.json.lock").exists());

        // A bad record is named.
        fs::write(&path, r#"{"version":1,"keys":[{"id":"short","name":"n","tier":"free","created_at_ms":1,"hash":"00"}]}"#).unwrap();
        let err = FileKeyStore::open(&path).err().expect("bad id refused");
        assert!(err.to_string().contains("short"), "{err}");
    }

    #[test]
    fn lock_file_excludes_and_times_out_naming_itself() {
        let dir = TempDir::new();
        let lock_path = dir.0.join("keys.json.lock");
        let held = LockFile::acquire_within(&lock_path, LOCK_TIMEOUT).unwrap();
        let start = Instant::now();
        let err = LockFile::acquire_within(&lock_path, Duration::from_millis(200))
            .err()
            .expect("the lock is held");
        assert!(start.elapsed() >= Duration::from_millis(200));
        match &err {
            KeyError::Io { path, source } => {
                assert_eq!(path, &lock_path);
                assert_eq!(source.kind(), io::ErrorKind::TimedOut);
            }
            other => panic!("expected Io, got {other}"),
        }
        assert!(err.to_string().contains("keys.json.lock"), "{err}");
        drop(held);
        assert!(!lock_path.exists());
        drop(LockFile::acquire_within(&lock_path, Duration::ZERO).unwrap());
    }

    // -- Redis store --------------------------------------------------------------------

    async fn redis_dump(url: &str, key: &str) -> String {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let all: Vec<String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let names: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut conn)
            .await
            .unwrap();
        format!("{names:?} {all:?}")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_store_battery() {
        let server = RedisServer::start();
        let store = RedisKeyStore::connect(&server.url(), "tolk-test")
            .await
            .unwrap();
        assert_eq!(store.list().await.unwrap(), []);
        let url = server.url();
        // `stored` is sync: read Redis from a separate thread with its own runtime.
        let stored = || {
            let url = url.clone();
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(redis_dump(&url, "tolk-test:keys"))
            })
            .join()
            .unwrap()
        };
        battery(&store, stored).await;

        // A second instance sees the same keys at once.
        let other = RedisKeyStore::connect(&server.url(), "tolk-test")
            .await
            .unwrap();
        let (record, key) = other
            .create("x", "free", &[], LimitOverrides::default())
            .await
            .unwrap();
        assert_eq!(store.verify(&key).await.unwrap(), Some(record.clone()));
        assert!(store.revoke(&record.id).await.unwrap());
        assert_eq!(other.verify(&key).await.unwrap(), None);
        // Another prefix is another store.
        let elsewhere = RedisKeyStore::connect(&server.url(), "other")
            .await
            .unwrap();
        assert_eq!(elsewhere.list().await.unwrap(), []);

        // Corrupt data is an error naming where.
        let client = redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let (record, key) = store
            .create("y", "free", &[], LimitOverrides::default())
            .await
            .unwrap();
        let _: () = redis::cmd("HSET")
            .arg("tolk-test:keys")
            .arg(&record.id)
            .arg("{oops")
            .query_async(&mut conn)
            .await
            .unwrap();
        let err = store.verify(&key).await.unwrap_err();
        assert!(
            matches!(&err, KeyError::Corrupt { path, .. } if path.contains(&record.id)),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_store_concurrent_revoke_and_create() {
        let server = RedisServer::start();
        let a = RedisKeyStore::connect(&server.url(), "t").await.unwrap();
        let b = RedisKeyStore::connect(&server.url(), "t").await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..10 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                store
                    .create(&format!("k{i}"), "free", &[], LimitOverrides::default())
                    .await
                    .unwrap()
            }));
        }
        let mut created = Vec::new();
        for t in tasks {
            created.push(t.await.unwrap());
        }
        assert_eq!(a.list().await.unwrap().len(), 10);
        let id = created[0].0.id.clone();
        let (x, y) = tokio::join!(a.revoke(&id), b.revoke(&id));
        assert!(x.unwrap() && y.unwrap());
        let listed = b.list().await.unwrap();
        assert_eq!(listed.iter().filter(|r| r.is_revoked()).count(), 1);
        // Records keep their fields through revocation (empty permissions stay a list).
        let revoked = listed.iter().find(|r| r.id == id).unwrap();
        let mut expected = created[0].0.clone();
        expected.revoked_at_ms = revoked.revoked_at_ms;
        assert_eq!(revoked, &expected);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_unreachable_fails_fast_without_leaking_the_url() {
        let port = free_port();
        let start = Instant::now();
        let url = format!("redis://:hunter2@127.0.0.1:{port}/");
        let err = RedisKeyStore::connect(&url, "tolk")
            .await
            .err()
            .expect("nothing listens there");
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "took {:?}",
            start.elapsed()
        );
        let message = err.to_string();
        assert!(matches!(err, KeyError::Unavailable(_)), "{message}");
        assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
        assert!(
            !message.contains("hunter2") && !message.contains("redis://"),
            "{message}"
        );

        let err = RedisKeyStore::connect("http://:hunter2@nowhere", "tolk")
            .await
            .err()
            .unwrap();
        assert!(matches!(err, KeyError::Invalid(_)), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_store_reports_a_lost_server() {
        let server = RedisServer::start();
        let store = RedisKeyStore::connect(&server.url(), "t").await.unwrap();
        let (_, key) = store
            .create("k", "free", &[], LimitOverrides::default())
            .await
            .unwrap();
        let port = server.port;
        drop(server);
        let start = Instant::now();
        let err = store.verify(&key).await.unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
        assert!(
            matches!(&err, KeyError::Unavailable(m) if m.contains(&format!("127.0.0.1:{port}"))),
            "{err}"
        );
    }

    #[test]
    fn store_is_object_safe() {
        fn takes(_: Option<Arc<dyn KeyStore>>) {}
        takes(None);
    }
}
