//! The last-known-good cache file: what etcd held, kept on disk so that a process started
//! while etcd is down serves the values it last saw.
//!
//! The file is JSON with a format name, a version, the prefix it belongs to, the revision,
//! and a CRC-32 over the rest. It is written atomically (temporary file, fsync, rename,
//! fsync of the directory) with mode 0600; secret names are left out unless allowed. A file
//! that is corrupt, of another format or version, or of another prefix is reported and
//! ignored, never trusted. Values are stored as text and go through the schema's coercion
//! and validation again when read.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::observe::events;
use crate::report::Rejection;
use crate::schema::Schema;
use crate::snapshot::{Entries, Snapshot, Source};
use crate::store::Subscription;

const FORMAT: &str = "etcd-dynamic-config/cache";
const VERSION: u32 = 1;
/// Changes closer together than this are written once.
const DEBOUNCE: Duration = Duration::from_millis(500);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    version: u32,
    prefix: String,
    revision: i64,
    written_at_unix_ms: u64,
    entries: BTreeMap<String, Cached>,
    /// CRC-32 (hex) of the document serialized with this field empty.
    checksum: String,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Cached {
    key: String,
    mod_revision: i64,
    text: String,
}

/// What a valid cache file held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Loaded {
    pub(crate) entries: Entries,
    pub(crate) revision: i64,
    /// Cached values the current schema rejects.
    pub(crate) rejected: Vec<Rejection>,
}

/// The cache file of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct CacheFile {
    path: PathBuf,
    prefix: String,
    include_secrets: bool,
}

impl CacheFile {
    pub(crate) fn new(path: &Path, prefix: &str, include_secrets: bool) -> Self {
        Self {
            path: path.to_owned(),
            prefix: prefix.to_owned(),
            include_secrets,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file: `Ok(None)` when there is none, `Err` saying why it is not trusted.
    pub(crate) fn read(&self, schema: &Schema) -> Result<Option<Loaded>, String> {
        let bytes = match fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("cannot read it: {error}")),
        };
        let mut document: Document = serde_json::from_slice(&bytes)
            .map_err(|error| format!("not a cache file of this library ({error})"))?;
        if document.format != FORMAT {
            return Err(format!("foreign format {:?}", document.format));
        }
        if document.version != VERSION {
            return Err(format!(
                "format version {} (this library reads {VERSION})",
                document.version
            ));
        }
        if document.prefix != self.prefix {
            return Err(format!(
                "written for the prefix {}, not {}",
                document.prefix, self.prefix
            ));
        }
        let stored = std::mem::take(&mut document.checksum);
        if stored != checksum(&document) {
            return Err("its checksum does not match: the file is corrupt".to_owned());
        }
        let mut entries = Entries::default();
        let mut rejected = Vec::new();
        for (name, cached) in document.entries {
            if schema.is_secret(&name) && !self.include_secrets {
                continue;
            }
            let source = Source::Cache {
                key: Arc::from(cached.key),
                mod_revision: cached.mod_revision,
            };
            match schema.coerce(&name, cached.text.as_bytes()) {
                Ok(value) => {
                    let secret = schema.is_secret(&name);
                    entries.insert(&name, value.view(), &source, secret);
                }
                Err(reason) => rejected.push(Rejection {
                    name: Arc::from(name),
                    source,
                    reason,
                }),
            }
        }
        Ok(Some(Loaded {
            entries,
            revision: document.revision,
            rejected,
        }))
    }

    /// Writes the values of `snapshot` that came from etcd; returns how many.
    pub(crate) fn write(&self, snapshot: &Snapshot) -> std::io::Result<usize> {
        let entries: BTreeMap<String, Cached> = snapshot
            .iter()
            .filter(|(_, entry)| self.include_secrets || !entry.is_secret())
            .filter_map(|(name, entry)| match entry.source() {
                // A rollout's value is what the instance served from etcd.
                Source::Etcd { key, mod_revision }
                | Source::Rollout {
                    key, mod_revision, ..
                } => Some((
                    name.to_owned(),
                    Cached {
                        key: key.to_string(),
                        mod_revision,
                        text: entry.value().to_string(),
                    },
                )),
                _ => None,
            })
            .collect();
        let count = entries.len();
        let mut document = Document {
            format: FORMAT.to_owned(),
            version: VERSION,
            prefix: self.prefix.clone(),
            revision: snapshot.revision(),
            written_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |since| since.as_millis() as u64),
            entries,
            checksum: String::new(),
        };
        document.checksum = checksum(&document);
        let bytes = serde_json::to_vec_pretty(&document).map_err(std::io::Error::other)?;
        write_atomically(&self.path, &bytes)?;
        Ok(count)
    }
}

fn checksum(document: &Document) -> String {
    let bytes = serde_json::to_vec(document).expect("a document serializes");
    format!("{:08x}", crc32fast::hash(&bytes))
}

/// Temporary file in the same directory, fsync, rename over the target, fsync the
/// directory: a reader sees the old file or the new one, never half of one. The
/// temporary file has a random name and is created exclusively with mode 0600
/// (`tempfile`), so a link planted in the directory is never followed and two writers of
/// one path never share a temporary file; it is removed if anything fails.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = directory_of(path);
    let mut file = tempfile::Builder::new()
        .prefix(".cache-")
        .suffix(".tmp")
        .tempfile_in(dir)?;
    file.write_all(bytes)?;
    file.as_file().sync_all()?;
    file.persist(path).map_err(|error| error.error)?;
    File::open(dir)?.sync_all()
}

/// The directory of the file at `path`: its parent, or `.` for a bare file name. The
/// settings check that it exists; the writer makes its temporary file there.
pub(crate) fn directory_of(path: &Path) -> &Path {
    path.parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Writes every new snapshot that holds etcd values, at most once per [`DEBOUNCE`], and
/// once more when stopped.
pub(crate) async fn keep_written(
    cache: CacheFile,
    mut subscription: Subscription,
    mut written: i64,
    stop: CancellationToken,
) {
    let mut first = true;
    loop {
        let stopping = if std::mem::take(&mut first) {
            false // the snapshot served at start
        } else {
            tokio::select! {
            () = stop.cancelled() => true,
            changed = subscription.changed() => changed.is_none(),
            }
        };
        if !stopping {
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(DEBOUNCE) => {}
            }
        }
        let snapshot = subscription.latest();
        if snapshot.revision() > written {
            let target = cache.clone();
            let to_write = snapshot.clone();
            let result = tokio::task::spawn_blocking(move || target.write(&to_write)).await;
            match result {
                Ok(Ok(count)) => {
                    written = snapshot.revision();
                    tracing::debug!(
                        event = events::CACHE_WRITTEN,
                        path = %cache.path().display(),
                        revision = written,
                        names = count,
                        "last-known-good cache file written"
                    );
                }
                Ok(Err(error)) => tracing::warn!(
                    event = events::CACHE_WRITE_FAILED,
                    path = %cache.path().display(),
                    error.message = %error,
                    "could not write the cache file; the configuration is unaffected"
                ),
                Err(_) => return,
            }
        }
        if stopping || stop.is_cancelled() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Name;
    use crate::snapshot::{Value, ValueRef};

    fn schema() -> Schema {
        Schema::builder()
            .discover(true)
            .name(Name::new("password").secret())
            .build()
            .unwrap()
    }

    fn snapshot() -> Snapshot {
        let mut entries = Entries::default();
        let etcd = |key: &str, revision| Source::Etcd {
            key: Arc::from(key),
            mod_revision: revision,
        };
        entries.insert(
            "db_port",
            Value::Integer(5432).view(),
            &etcd("/app/DbPort", 3),
            false,
        );
        entries.insert(
            "password",
            Value::from("hunter2").view(),
            &etcd("/app/Password", 4),
            true,
        );
        let from_env = Source::Env {
            var: Arc::from("FROM_ENV"),
        };
        entries.insert("from_env", ValueRef::String("x"), &from_env, false);
        Snapshot::new(9, entries)
    }

    #[tokio::test]
    async fn a_revision_in_the_file_is_not_written_again_and_a_dropped_store_ends_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let cache = CacheFile::new(&path, "/app/", false);
        let store = crate::store::Store::new();
        let writer = store.begin_run();
        let at = |revision| Arc::new(Snapshot::new(revision, snapshot().entries().clone()));
        writer.publish(at(7));
        // Started from a file that holds revision 7: nothing to write, even when stopped.
        let stop = CancellationToken::new();
        stop.cancel();
        keep_written(cache.clone(), store.subscribe(), 7, stop).await;
        assert!(!path.exists(), "revision 7 was written again");

        // The configuration dropped without a stop: what is newer is written, and the
        // writer ends (it does not spin on the closed subscription).
        let subscription = store.subscribe();
        writer.publish(at(8));
        drop((writer, store));
        let task = keep_written(cache.clone(), subscription, 7, CancellationToken::new());
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the writer ends once the configuration is dropped");
        let written = cache.read(&schema()).unwrap().map(|loaded| loaded.revision);
        assert_eq!(written, Some(8));
    }

    #[test]
    fn a_file_that_cannot_be_read_is_an_error_not_a_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = CacheFile::new(&dir.path().join("none.json"), "/app/", false);
        assert!(missing.read(&schema()).unwrap().is_none());
        // A directory where the file should be: reading it fails, and says so.
        let directory = CacheFile::new(dir.path(), "/app/", false);
        let error = directory.read(&schema()).unwrap_err();
        assert!(error.starts_with("cannot read it: "), "{error}");
    }

    #[test]
    fn the_temporary_file_is_made_beside_the_target() {
        let beside = Path::new("/var/cache/app/cache.json");
        assert_eq!(directory_of(beside), Path::new("/var/cache/app"));
        assert_eq!(directory_of(Path::new("cache.json")), Path::new("."));
        assert_eq!(directory_of(Path::new("/cache.json")), Path::new("/"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_written_once_after_half_a_second_and_stop_writes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheFile::new(&dir.path().join("cache.json"), "/app/", false);
        let store = crate::store::Store::new();
        let writer = store.begin_run();
        let at = |revision| Arc::new(Snapshot::new(revision, snapshot().entries().clone()));
        let written = || cache.read(&schema()).unwrap().map(|loaded| loaded.revision);
        // Polls (in paused time, so each poll moves the clock 10 ms) until `revision` is
        // in the file; returns the time it took.
        let until = async |revision| {
            let started = tokio::time::Instant::now();
            for _ in 0..200 {
                if written() == Some(revision) {
                    return started.elapsed();
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "revision {revision} never written; the file holds {:?}",
                written()
            );
        };
        writer.publish(at(1));
        let stop = CancellationToken::new();
        let task = tokio::spawn(keep_written(
            cache.clone(),
            store.subscribe(),
            0,
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for revision in 2..=50 {
            writer.publish(at(revision));
        }
        // The served snapshot waits its half second; the burst after it is one write.
        let waited = until(50).await;
        assert!(waited >= Duration::from_millis(400), "{waited:?}");

        writer.publish(at(51));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(written(), Some(50), "not before half a second");
        let waited = until(51).await;
        assert!(
            waited >= DEBOUNCE - Duration::from_millis(110),
            "{waited:?}"
        );

        // Stopping writes what is served without waiting.
        writer.publish(at(52));
        let stopped = tokio::time::Instant::now();
        stop.cancel();
        task.await.unwrap();
        assert_eq!(written(), Some(52));
        assert!(stopped.elapsed() < DEBOUNCE, "{:?}", stopped.elapsed());
    }

    #[cfg(unix)]
    #[test]
    fn links_planted_beside_the_cache_file_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "precious").unwrap();
        let path = dir.path().join("cache.json");
        // Where the earlier, predictable temporary name was, and the cache path itself.
        let predictable = dir
            .path()
            .join(format!(".cache.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &predictable).unwrap();
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        let cache = CacheFile::new(&path, "/app/", false);
        cache.write(&snapshot()).unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
        assert!(
            !fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(cache.read(&schema()).unwrap().is_some());
    }

    #[test]
    fn two_writers_of_one_path_never_mix_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let writers: Vec<_> = (0..4)
            .map(|_| {
                let cache = CacheFile::new(&path, "/app/", false);
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        cache.write(&snapshot()).unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.join().unwrap();
        }
        let cache = CacheFile::new(&path, "/app/", false);
        assert!(cache.read(&schema()).unwrap().is_some(), "a whole file");
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file left: {left:?}");
    }

    #[test]
    fn round_trips_etcd_values_without_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheFile::new(&dir.path().join("cache.json"), "/app/", false);
        assert!(cache.read(&schema()).unwrap().is_none(), "no file yet");
        assert_eq!(cache.write(&snapshot()).unwrap(), 1);
        let text = fs::read_to_string(cache.path()).unwrap();
        assert!(!text.contains("hunter2"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(cache.path()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let loaded = cache.read(&schema()).unwrap().unwrap();
        assert_eq!(loaded.revision, 9);
        assert_eq!(loaded.entries.len(), 1);
        let entry = loaded.entries.get("db_port").unwrap();
        assert_eq!(entry.value(), ValueRef::Integer(5432));
        assert_eq!(
            entry.source().to_string(),
            "cache file (etcd key /app/DbPort @ rev 3)"
        );

        let with_secrets = CacheFile::new(cache.path(), "/app/", true);
        with_secrets.write(&snapshot()).unwrap();
        let loaded = with_secrets.read(&schema()).unwrap().unwrap();
        assert!(loaded.entries.get("password").unwrap().is_secret());
        assert!(
            cache
                .read(&schema())
                .unwrap()
                .unwrap()
                .entries
                .get("password")
                .is_none()
        );
    }

    #[test]
    fn corrupt_or_foreign_files_are_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        let cache = CacheFile::new(&path, "/app/", false);
        cache.write(&snapshot()).unwrap();
        let good = fs::read_to_string(&path).unwrap();

        let cases = [
            (good.replace("5432", "5433"), "checksum does not match"),
            ("{ not json".to_owned(), "not a cache file"),
            (good.replace(FORMAT, "someone-else"), "foreign format"),
            (
                good.replace("\"version\": 1", "\"version\": 7"),
                "format version 7",
            ),
            (
                good.replace("\"/app/\"", "\"/other/\""),
                "written for the prefix /other/",
            ),
        ];
        for (text, reason) in cases {
            fs::write(&path, &text).unwrap();
            let error = cache.read(&schema()).unwrap_err();
            assert!(error.contains(reason), "{reason}: {error}");
        }
    }

    #[test]
    fn values_the_schema_now_rejects_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CacheFile::new(&dir.path().join("c.json"), "/app/", false);
        cache.write(&snapshot()).unwrap();
        let stricter = Schema::builder()
            .discover(true)
            .name(Name::new("db_port").range(1, 1000))
            .build()
            .unwrap();
        let loaded = cache.read(&stricter).unwrap().unwrap();
        assert!(loaded.entries.is_empty());
        assert_eq!(&*loaded.rejected[0].name, "db_port");
    }
}
