//! The only module that names `etcd_client` types: connecting, paginated range reads at
//! one revision, and watch streams turned into engine inputs.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
};
use secrecy::ExposeSecret;
use tokio_util::task::AbortOnDropHandle;

use crate::engine::state::{Event, Header, Input, Kv, Probe, fingerprint};
use crate::error::{BoxError, Error, Result};
use crate::observe::events;
use crate::settings::EtcdSettings;

/// Keys per page when a prefix does not fit in one response. etcd walks every remaining
/// key of the range for each limited page (to count them), so paging costs O(n²/page):
/// raw reads of 1M small keys took 34.7 s in pages of 5,000, 6.1 s in pages of 50,000
/// and 2.0 s as one range (etcd 3.4.23, issue 17). Reads are one range first; pages of
/// this size only when that range is larger than a response may be.
const PAGE_SIZE: i64 = 50_000;
// A page that is still too large (large values) is tried again a quarter the size.
/// The largest response accepted from etcd. A watch response may batch up to a thousand
/// revisions of up to 1.5 MiB each, far above tonic's 4 MiB default.
const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// How long a connection attempt to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// HTTP/2 keep-alive: a ping this often, and the connection counts as dead when a ping
/// goes unanswered this long. A frozen or partitioned member is noticed within their sum.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(2);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest any unary request (a range page, a transaction) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// While a key's history is replayed: how long a quiet watch waits before it asks for
/// progress again.
const HISTORY_PROGRESS: Duration = Duration::from_millis(200);

/// A connection to one etcd endpoint at a time.
///
/// `etcd-client` balances requests over every endpoint without health checks, so with
/// one member down a share of requests fail. Here one endpoint is used until it fails;
/// [`rotate`](Self::rotate) moves to the next one.
pub(crate) struct Connection {
    settings: EtcdSettings,
    current: usize,
    client: Option<Client>,
    /// Whether the etcd connected to sends progress notifications only after every
    /// event up to them (etcd issue 15220 fixed): asked once per connection.
    trust: Trust,
    /// The watch [`watch_ahead`](Self::watch_ahead) began, until asked for.
    ahead: Option<WatchAhead>,
    /// The largest range response accepted ([`MAX_MESSAGE_BYTES`]; smaller in tests).
    response_limit: usize,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the client: its options hold the password.
        f.debug_struct("Connection")
            .field("endpoint", &self.endpoint())
            .field("connected", &self.client.is_some())
            .finish_non_exhaustive()
    }
}

/// What is known of an etcd's progress notifications.
enum Trust {
    /// Its version is being asked for.
    Asking(AbortOnDropHandle<bool>),
    Known(bool),
}

impl Connection {
    /// A connection to the first endpoint; nothing is contacted until the first request.
    pub(crate) fn new(settings: &EtcdSettings) -> Self {
        Self {
            settings: settings.clone(),
            current: 0,
            client: None,
            trust: Trust::Known(false),
            ahead: None,
            response_limit: MAX_MESSAGE_BYTES,
        }
    }

    /// The endpoint in use.
    pub(crate) fn endpoint(&self) -> &str {
        &self.settings.endpoints()[self.current]
    }

    /// Drops the connection and moves to the next endpoint (the same one again when there
    /// is only one): called after a retryable failure.
    pub(crate) fn rotate(&mut self) {
        self.client = None;
        self.ahead = None;
        self.current = (self.current + 1) % self.settings.endpoints().len();
    }

    /// What error messages need to know about the endpoint in use.
    fn peer(&self) -> Peer {
        Peer {
            endpoint: self.endpoint().to_owned(),
            identity: self.settings.identity().is_some(),
        }
    }

    /// Whether requests carry a user's credentials.
    pub(crate) fn has_credentials(&self) -> bool {
        self.settings.credentials().is_some()
    }

    /// Drops the connection so that the next request authenticates again on the same
    /// endpoint: for a watch that etcd cancelled because its token expired.
    pub(crate) fn reauthenticate(&mut self) {
        self.client = None;
        self.ahead = None;
    }

    /// Connects (and authenticates) to the endpoint in use, once.
    ///
    /// # Errors
    ///
    /// [`Error::Unavailable`] when the endpoint does not answer in time; otherwise what
    /// etcd's refusal classifies as (wrong credentials, TLS settings).
    async fn client(&mut self) -> Result<Client> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let mut options = ConnectOptions::new()
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, KEEP_ALIVE_TIMEOUT)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true)
            .with_auto_token_refresh(true);
        if let Some((name, password)) = self.settings.credentials() {
            options = options.with_user(name, password);
        }
        if let Some(ca) = self.settings.ca_cert() {
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(ca.pem.clone()));
            if let Some(identity) = self.settings.identity() {
                tls = tls.identity(Identity::from_pem(
                    identity.cert_pem.clone(),
                    identity.key_pem.expose_secret(),
                ));
            }
            options = options.with_tls(tls);
        }
        let endpoint = self.endpoint().to_owned();
        let peer = self.peer();
        let connect = Client::connect([endpoint.as_str()], Some(options));
        let client = match tokio::time::timeout(CONNECT_TIMEOUT * 2, connect).await {
            Ok(Ok(client)) => client,
            Ok(Err(error)) => return Err(classify(&peer, error)),
            Err(_) => {
                return Err(Error::Unavailable {
                    endpoints: endpoint,
                    source: BoxError::from("connecting timed out"),
                });
            }
        };
        // Which etcd answers decides whether its progress notifications can be trusted;
        // a version that cannot be read is not trusted. Asked beside the first request,
        // not before it: only a watch needs the answer, and a start waits one round trip
        // fewer.
        let mut maintenance = client.maintenance_client();
        self.trust = Trust::Asking(AbortOnDropHandle::new(tokio::spawn(async move {
            matches!(
                tokio::time::timeout(CONNECT_TIMEOUT, maintenance.status()).await,
                Ok(Ok(status)) if progress_follows_events(status.version())
            )
        })));
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Whether the etcd connected to can be trusted with progress notifications, once it
    /// has said its version.
    async fn trusted_progress(&mut self) -> bool {
        if let Trust::Asking(asking) = &mut self.trust {
            self.trust = Trust::Known(asking.await.unwrap_or(false));
        }
        matches!(self.trust, Trust::Known(true))
    }

    /// The error for a watch stream that stayed silent, even when asked for progress.
    pub(crate) fn silent(&self, quiet: Duration) -> Error {
        Error::Unavailable {
            endpoints: self.endpoint().to_owned(),
            source: BoxError::from(format!(
                "the watch stream stayed silent for {} s, even when asked for progress",
                quiet.as_secs()
            )),
        }
    }

    /// The error for a watch stream that etcd closed without saying why.
    pub(crate) fn stream_ended(&self) -> Error {
        Error::Unavailable {
            endpoints: self.endpoint().to_owned(),
            source: BoxError::from("the watch stream ended"),
        }
    }

    /// Reads every key under `prefix_dir` at one revision, page by page: the keys, the
    /// header of the first page (whose revision every page is read at) and how many
    /// keys the prefix holds.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client); a revision compacted between pages is retryable.
    pub(crate) async fn list(&mut self, prefix_dir: &str) -> Result<Listing> {
        self.list_at(prefix_dir, 0).await
    }

    /// As [`list`](Self::list), at `revision` (0: etcd's head). A listing at an earlier
    /// revision says that revision in its header, with etcd's cluster id.
    ///
    /// # Errors
    ///
    /// As [`list`](Self::list); a revision etcd compacted away or has not reached is
    /// [`Error::Refused`], naming it.
    pub(crate) async fn list_at(&mut self, prefix_dir: &str, at: i64) -> Result<Listing> {
        let peer = self.peer();
        let mut kv = self
            .client()
            .await?
            .kv_client()
            .max_decoding_message_size(self.response_limit);
        let range_end = prefix_end(prefix_dir.as_bytes());
        let failed = |error: etcd_client::Error| match missing_revision(&error, at) {
            Some(refused) if at > 0 => refused,
            _ => naming_prefix(classify(&peer, error), prefix_dir),
        };
        let mut kvs = Vec::new();
        let mut start = prefix_dir.as_bytes().to_vec();
        // The first page's header, and etcd's count of the keys.
        let mut first: Option<(Header, i64)> = None;
        // One range while the prefix fits in one response (see PAGE_SIZE).
        let mut limit = 0;
        loop {
            let revision = first.map_or(at, |(header, _)| header.revision);
            let mut options = GetOptions::new()
                .with_range(range_end.clone())
                .with_limit(limit);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut response = match kv.get(start.clone(), Some(options)).await {
                Err(error) if response_too_large(&error) && limit != 1 => {
                    limit = smaller_page(limit);
                    continue;
                }
                other => other.map_err(failed)?,
            };
            let (header, count) = match first {
                Some(first) => first,
                None => {
                    let mut header = header_of(&peer, response.header())?;
                    if at > 0 {
                        header.revision = at;
                    }
                    *first.insert((header, response.count()))
                }
            };
            let more = response.more();
            let page = response.take_kvs();
            let next = page.last().filter(|_| more).map(|last| {
                let mut next = last.key().to_vec();
                next.push(0);
                next
            });
            let len = page.len();
            let page = page.into_iter().filter_map(read_kv);
            if kvs.is_empty() {
                // Collected in the page's own allocation (a `Kv` is smaller than etcd's
                // pair): at 1,000,000 keys 27–35 ms from the response to the listing,
                // against 50–131 ms into a new one (six starts each, 2026-11-28).
                kvs = page.collect();
            } else {
                kvs.reserve(len);
                kvs.extend(page);
            }
            match next {
                Some(next) => start = next,
                None => return Ok(Listing { kvs, header, count }),
            }
        }
    }

    /// Reads `keys` in transactions of at most 128 reads (etcd's default limit): one round
    /// trip, one revision, for up to 128 keys. Absent keys are left out.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn get_keys(&mut self, keys: &[&str]) -> Result<Vec<Kv>> {
        let peer = self.peer();
        let mut kv = self.client().await?.kv_client();
        let mut found = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(128) {
            let reads: Vec<TxnOp> = chunk.iter().map(|key| TxnOp::get(*key, None)).collect();
            let response = kv
                .txn(Txn::new().and_then(reads))
                .await
                .map_err(|error| classify(&peer, error))?;
            for op in response.op_responses() {
                if let TxnOpResponse::Get(mut get) = op {
                    found.extend(get.take_kvs().into_iter().filter_map(read_kv));
                }
            }
        }
        Ok(found)
    }

    /// Grants a lease of `ttl` (whole seconds, at least one); its id.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn lease_grant(&mut self, ttl: Duration) -> Result<i64> {
        let peer = self.peer();
        let seconds = i64::try_from(ttl.as_secs().max(1)).unwrap_or(i64::MAX);
        let granted = self
            .client()
            .await?
            .lease_grant(seconds, None)
            .await
            .map_err(|error| classify(&peer, error))?;
        Ok(granted.id())
    }

    /// Renews lease `id` once; the seconds it has left (0: it had expired, or etcd
    /// does not know it).
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn lease_renew(&mut self, id: i64) -> Result<i64> {
        let peer = self.peer();
        let mut client = self.client().await?;
        let renewed = async {
            let (mut keeper, mut answers) = client.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(answers.message().await?.map(|answer| answer.ttl()))
        };
        match renewed.await {
            Ok(Some(ttl)) => Ok(ttl),
            Ok(None) => Err(self.stream_ended()),
            Err(error) if lease_missing(&error) => Ok(0),
            Err(error) => Err(classify(&peer, error)),
        }
    }

    /// Revokes lease `id`: the keys written with it go at once.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn lease_revoke(&mut self, id: i64) -> Result<()> {
        let peer = self.peer();
        self.client()
            .await?
            .lease_revoke(id)
            .await
            .map_err(|error| classify(&peer, error))?;
        Ok(())
    }

    /// Writes `key` attached to lease `lease`; the revision of the write, or `None` when
    /// etcd does not know the lease (it expired).
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn put_leased(
        &mut self,
        key: &str,
        value: &str,
        lease: i64,
    ) -> Result<Option<i64>> {
        let peer = self.peer();
        let options = PutOptions::new().with_lease(lease);
        match self.client().await?.put(key, value, Some(options)).await {
            Ok(written) => Ok(Some(written.header().map_or(0, |h| h.revision()))),
            Err(error) if lease_missing(&error) => Ok(None),
            Err(error) => Err(classify(&peer, error)),
        }
    }

    /// Reads, at etcd's head, how many keys the prefix holds and whether one of them was
    /// written after `applied`: one read-only transaction, so both answers are at one
    /// revision.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn head(&mut self, prefix_dir: &str, applied: i64) -> Result<HeadRead> {
        let peer = self.peer();
        let range_end = prefix_end(prefix_dir.as_bytes());
        let count = GetOptions::new()
            .with_range(range_end.clone())
            .with_count_only();
        // etcd filters by mod revision before it applies the limit.
        let changed = GetOptions::new()
            .with_range(range_end)
            .with_min_mod_revision(applied + 1)
            .with_keys_only()
            .with_limit(1);
        let response = self
            .client()
            .await?
            .kv_client()
            .txn(Txn::new().and_then([
                TxnOp::get(prefix_dir, Some(count)),
                TxnOp::get(prefix_dir, Some(changed)),
            ]))
            .await
            .map_err(|error| naming_prefix(classify(&peer, error), prefix_dir))?;
        let header = header_of(&peer, response.header())?;
        let mut reads = response
            .op_responses()
            .into_iter()
            .filter_map(|op| match op {
                TxnOpResponse::Get(get) => Some(get),
                _ => None,
            });
        let (Some(count), Some(changed)) = (reads.next(), reads.next()) else {
            return Err(Error::Unavailable {
                endpoints: peer.endpoint,
                source: BoxError::from("etcd answered a head read without its two ranges"),
            });
        };
        Ok(HeadRead {
            header,
            count: count.count(),
            changed: !changed.kvs().is_empty(),
        })
    }

    /// What etcd holds under `prefix_dir` at `revision`: how many keys, and the sum of
    /// their fingerprints (read page by page, nothing kept), or why etcd has no such
    /// revision: compacted, or not yet written (then with etcd's head, read right after).
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn probe(&mut self, prefix_dir: &str, revision: i64) -> Result<Probe> {
        let peer = self.peer();
        let mut kv = self
            .client()
            .await?
            .kv_client()
            .max_decoding_message_size(self.response_limit);
        let range_end = prefix_end(prefix_dir.as_bytes());
        let mut first = None;
        let mut digest = 0u64;
        let mut start = prefix_dir.as_bytes().to_vec();
        // One range while it fits in a response, as `list_at` reads.
        let mut limit = 0;
        loop {
            let options = GetOptions::new()
                .with_range(range_end.clone())
                .with_revision(revision)
                .with_limit(limit);
            let mut response = match kv.get(start.clone(), Some(options)).await {
                Ok(response) => response,
                Err(error) if limit != 1 && response_too_large(&error) => {
                    limit = smaller_page(limit);
                    continue;
                }
                Err(error) if compacted(&error) => return Ok(Probe::Compacted),
                Err(error) if future_revision(&error) => {
                    let head = kv
                        .get(prefix_dir, Some(GetOptions::new().with_count_only()))
                        .await
                        .map_err(|error| naming_prefix(classify(&peer, error), prefix_dir))?;
                    let head = header_of(&peer, head.header())?;
                    return Ok(Probe::Future { head });
                }
                Err(error) => return Err(naming_prefix(classify(&peer, error), prefix_dir)),
            };
            let (count, head) = match first {
                Some(first) => first,
                None => *first.insert((response.count(), header_of(&peer, response.header())?)),
            };
            let more = response.more();
            let page = response.take_kvs();
            for pair in &page {
                if std::str::from_utf8(pair.key()).is_ok() {
                    digest = digest.wrapping_add(fingerprint(
                        pair.key(),
                        pair.value(),
                        pair.mod_revision(),
                    ));
                }
            }
            match page.last() {
                Some(last) if more => {
                    start = last.key().to_vec();
                    start.push(0);
                }
                _ => {
                    return Ok(Probe::Found {
                        count,
                        digest,
                        head,
                    });
                }
            }
        }
    }

    /// Writes `puts` and deletes `deletes` in one transaction; returns its revision.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client); [`Error::TooLarge`] beyond etcd's limits.
    pub(crate) async fn write(
        &mut self,
        puts: &[(String, String)],
        deletes: &[String],
    ) -> Result<i64> {
        self.write_guarded(puts, deletes, &[], None).await
    }

    /// Writes `puts` and deletes `deletes` in one transaction that etcd applies only if
    /// every `guards` key still has its mod revision (0: still absent) and, with
    /// `unchanged_since = Some((prefix_dir, revision))`, no key under the prefix was
    /// written after `revision`.
    ///
    /// # Errors
    ///
    /// As [`write`](Self::write); [`Error::Conflict`] when a guard does not hold.
    pub(crate) async fn write_guarded(
        &mut self,
        puts: &[(String, String)],
        deletes: &[String],
        guards: &[(String, i64)],
        unchanged_since: Option<(&str, i64)>,
    ) -> Result<i64> {
        let peer = self.peer();
        let mut compares: Vec<Compare> = guards
            .iter()
            .map(|(key, mod_revision)| match mod_revision {
                0 => Compare::version(key.as_str(), CompareOp::Equal, 0),
                _ => Compare::mod_revision(key.as_str(), CompareOp::Equal, *mod_revision),
            })
            .collect();
        if let Some((prefix_dir, revision)) = unchanged_since {
            compares.push(
                Compare::mod_revision(prefix_dir, CompareOp::Less, revision + 1)
                    .with_range(prefix_end(prefix_dir.as_bytes())),
            );
        }
        let mut operations: Vec<TxnOp> = puts
            .iter()
            .map(|(key, value)| TxnOp::put(key.as_str(), value.as_str(), None))
            .collect();
        operations.extend(deletes.iter().map(|key| TxnOp::delete(key.as_str(), None)));
        let count = operations.len();
        let bytes = puts
            .iter()
            .map(|(key, value)| key.len() + value.len())
            .sum::<usize>()
            + deletes.iter().map(String::len).sum::<usize>();
        let response = self
            .client()
            .await?
            .kv_client()
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .txn(Txn::new().when(compares).and_then(operations))
            .await
            .map_err(|error| match too_large(&error) {
                Some(limit) => Error::TooLarge {
                    operations: count,
                    bytes,
                    limit,
                },
                None => classify(&peer, error),
            })?;
        if !response.succeeded() {
            return Err(Error::Conflict {
                reason: "a key it touches was written since it was read".to_owned(),
            });
        }
        Ok(response.header().map_or(0, |header| header.revision()))
    }

    /// Every write of `key` that etcd still holds, oldest first, up to etcd's head when
    /// asked: replayed by a watch from revision 1, or from the oldest revision etcd keeps
    /// when it compacted the rest. The key's value now is one of them, even when etcd
    /// compacted past the revision that wrote it.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn key_history(&mut self, key: &str) -> Result<KeyHistory> {
        let peer = self.peer();
        let client = self.client().await?;
        let now = client
            .kv_client()
            .get(key, None)
            .await
            .map_err(|error| classify(&peer, error))?;
        let head = header_of(&peer, now.header())?.revision;
        let current = now
            .kvs()
            .first()
            .map(|kv| (kv.mod_revision(), kv.value().to_vec()));
        let last = current.as_ref().map(|(revision, _)| *revision);
        let mut history = KeyHistory {
            writes: Vec::new(),
            head,
            kept_from: None,
        };
        let mut from = 1;
        'watch: loop {
            let options = WatchOptions::new().with_start_revision(from);
            let stream = client
                .watch_client()
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .watch(key, Some(options))
                .await
                .map_err(|error| classify(&peer, error))?;
            let mut watch = Watch {
                stream,
                peer: peer.clone(),
                trusted_progress: self.trusted_progress().await,
            };
            history.writes.clear();
            // Caught up with an untrusted answer: taking what arrives until etcd is quiet.
            let mut draining = false;
            loop {
                // The key's last write seen (or kept no more): nothing can follow it.
                let seen = |history: &KeyHistory| match last {
                    Some(last) => {
                        history
                            .writes
                            .last()
                            .is_some_and(|(revision, _)| *revision >= last)
                            || history.kept_from.is_some_and(|kept| kept > last)
                    }
                    None => false,
                };
                if seen(&history) {
                    if let Some((revision, value)) = current.filter(|_| history.writes.is_empty()) {
                        // Compacted past its last write: the range still holds it.
                        history.writes.push((revision, Some(value)));
                    }
                    return Ok(history);
                }
                // etcd answers a progress request only once the watcher has caught up.
                let next = match tokio::time::timeout(HISTORY_PROGRESS, watch.next()).await {
                    Ok(next) => next?,
                    Err(_) if draining => return Ok(history),
                    Err(_) => {
                        watch.request_progress().await?;
                        continue;
                    }
                };
                let next = match next {
                    // A creation answer is a watermark like an untrusted progress one.
                    Input::Created { header, at } => Input::Progress {
                        header,
                        at,
                        trusted: false,
                    },
                    next => next,
                };
                match next {
                    Input::Watched { events, .. } => history.record(events),
                    Input::Compacted { compact_revision } => {
                        from = compact_revision;
                        history.kept_from = Some(compact_revision);
                        continue 'watch;
                    }
                    // Caught up with etcd's head: a key deleted by then has all its
                    // writes seen.
                    Input::Progress {
                        header, trusted, ..
                    } if last.is_none() && header.revision >= head => {
                        if trusted {
                            return Ok(history);
                        }
                        // etcd before 3.4.25 / 3.5.8 may answer ahead of queued events
                        // (issue 15220), and the watch's creation always does: what
                        // arrives until a quiet spell is taken as above, etcd's answer
                        // that it compacted the revisions asked for too.
                        draining = true;
                    }
                    Input::Progress { .. } => {}
                    Input::Broken => return Err(self.stream_ended()),
                    _ => {}
                }
            }
        }
    }

    /// Opens a watch on `prefix_dir` from `from_revision`, with previous values and
    /// progress notifications; the one [`watch_ahead`](Self::watch_ahead) began, when
    /// it is for the same.
    ///
    /// # Errors
    ///
    /// As [`client`](Self::client).
    pub(crate) async fn watch(&mut self, prefix_dir: &str, from_revision: i64) -> Result<Watch> {
        let peer = self.peer();
        let ahead = self
            .ahead
            .take()
            .filter(|ahead| ahead.prefix_dir == prefix_dir && ahead.from_revision == from_revision);
        // Should its task have ended without an answer, the watch is opened here.
        let opened = match ahead {
            Some(ahead) => ahead.opening.await.ok(),
            None => None,
        };
        let opened = match opened {
            Some(opened) => opened,
            None => open_watch(self.client().await?, prefix_dir, from_revision).await,
        };
        let stream = opened.map_err(|error| naming_prefix(classify(&peer, error), prefix_dir))?;
        Ok(Watch {
            stream,
            peer,
            trusted_progress: self.trusted_progress().await,
        })
    }

    /// Begins opening the watch that [`watch`](Self::watch) will ask for, on a task of
    /// its own, when connected: after a listing, etcd answers it while the engine builds
    /// the snapshot, and a start waits one round trip fewer.
    pub(crate) fn watch_ahead(&mut self, prefix_dir: &str, from_revision: i64) {
        self.ahead = self.client.clone().map(|client| {
            let prefix = prefix_dir.to_owned();
            WatchAhead {
                prefix_dir: prefix.clone(),
                from_revision,
                opening: AbortOnDropHandle::new(tokio::spawn(async move {
                    open_watch(client, &prefix, from_revision).await
                })),
            }
        });
    }
}

/// A watch being opened before it is asked for.
struct WatchAhead {
    prefix_dir: String,
    from_revision: i64,
    opening: AbortOnDropHandle<std::result::Result<WatchStream, etcd_client::Error>>,
}

/// Opens a watch on `prefix_dir` from `from_revision`, with previous values and progress
/// notifications.
async fn open_watch(
    client: Client,
    prefix_dir: &str,
    from_revision: i64,
) -> std::result::Result<WatchStream, etcd_client::Error> {
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(from_revision)
        // Each event's previous key-value: the engine checks it against the key it
        // holds (a diverged cache re-lists) and keeps the prefix's fingerprint up to
        // date with it, which lets a resumed watch verify etcd's history without a
        // re-list. Measured:
        // - put -> visible p50 (E2E_ONLY=latency, three runs each, 2026-11-27): 1.07-1.10x
        //   a raw watch without it, 1.08x with it.
        // - bursts of 10,000 puts with 1,000,000 other keys in etcd (2026-11-28, a
        //   throwaway harness timing the engine beside raw watches): on etcd 3.4.23, 7 of
        //   25 bursts reached the engine over 100 ms late (up to 913 ms); a raw watch
        //   with prev_kv fell just as far behind (869 ms in that burst), one without it
        //   never by more than 0.05 ms. On etcd 3.5.1 no watch fell behind by more than
        //   9 ms in 14 bursts. (etcd-io/etcd#16839 reports prev_kv reads as a cost.)
        //   Each stream with prev_kv falls behind on its own: in 30 more such bursts
        //   (2026-11-29) the engine alone was 107-127 ms late in two, idle on its stream
        //   until etcd sent the last revisions; opened without prev_kv it was never over
        //   6.7 ms late in 16, while raw prev_kv watches beside it reached 235 ms.
        // It stays: the cost is etcd 3.4's, under a write flood on a large keyspace, and
        // nothing cheaper gives the same two checks. Without it, keeping the fingerprint
        // needs a record of every key's last write as etcd held it (its fingerprint,
        // found by the key), which the engine does not keep: it holds coerced values by
        // name, and nothing for keys no name maps to.
        .with_prev_key()
        .with_progress_notify();
    client
        .watch_client()
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .watch(prefix_dir, Some(options))
        .await
}

/// A whole prefix, read at one revision.
#[derive(Debug)]
pub(crate) struct Listing {
    pub(crate) kvs: Vec<Kv>,
    pub(crate) header: Header,
    /// How many keys the prefix holds (some may not be UTF-8 and be left out of `kvs`).
    pub(crate) count: i64,
}

/// The writes of one key that etcd still holds.
#[derive(Debug, Clone)]
pub(crate) struct KeyHistory {
    /// (revision, `Some(value)` for a put, `None` for a delete), oldest first.
    pub(crate) writes: Vec<(i64, Option<Vec<u8>>)>,
    /// etcd's head when the history was read.
    pub(crate) head: i64,
    /// The oldest revision etcd keeps, when it compacted the ones before.
    pub(crate) kept_from: Option<i64>,
}

impl KeyHistory {
    /// Adds the writes of `events` up to the head the history was read at.
    fn record(&mut self, events: Vec<Event>) {
        let head = self.head;
        self.writes.extend(
            events
                .into_iter()
                .filter(|event| event.mod_revision <= head)
                .map(|event| (event.mod_revision, event.value)),
        );
    }
}

/// What a head read found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadRead {
    pub(crate) header: Header,
    pub(crate) count: i64,
    pub(crate) changed: bool,
}

/// The cluster id and revision of an answer; etcd always sends them.
fn header_of(peer: &Peer, header: Option<&etcd_client::ResponseHeader>) -> Result<Header> {
    match header {
        Some(header) => Ok(Header {
            cluster: header.cluster_id(),
            revision: header.revision(),
        }),
        None => Err(Error::Unavailable {
            endpoints: peer.endpoint.clone(),
            source: BoxError::from("etcd answered without a response header"),
        }),
    }
}

/// An open watch stream.
pub(crate) struct Watch {
    stream: WatchStream,
    peer: Peer,
    trusted_progress: bool,
}

/// Whether etcd `version` sends a progress notification only after every event up to
/// its revision: etcd issue 15220, fixed in 3.4.25, 3.5.8 and 3.6.0.
fn progress_follows_events(version: &str) -> bool {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|part| part.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor)), Some(Some(patch))) =
        (parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    match (major, minor) {
        (3, 4) => patch >= 25,
        (3, 5) => patch >= 8,
        (3, minor) => minor >= 6,
        (major, _) => major > 3,
    }
}

/// The endpoint a request went to, and what the client presented.
#[derive(Debug, Clone)]
struct Peer {
    endpoint: String,
    /// Whether a client certificate was configured.
    identity: bool,
}

impl Watch {
    /// Asks etcd for a progress notification: the answer proves the stream is alive.
    ///
    /// # Errors
    ///
    /// When the request cannot be sent (the stream is gone).
    pub(crate) async fn request_progress(&mut self) -> Result<()> {
        self.stream
            .request_progress()
            .await
            .map_err(|error| classify(&self.peer, error))
    }

    /// The next engine input: events, a progress notification, a compaction, or `Broken`
    /// when the stream ends. `Err` when the stream fails.
    ///
    /// # Errors
    ///
    /// As [`Connection::client`].
    pub(crate) async fn next(&mut self) -> Result<Input> {
        let response = match self.stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Ok(Input::Broken),
            Err(error) => return Err(classify(&self.peer, error)),
        };
        if response.canceled() {
            if response.compact_revision() > 0 {
                return Ok(Input::Compacted {
                    compact_revision: response.compact_revision(),
                });
            }
            let reason = response.cancel_reason();
            return Err(classify_message(&self.peer.endpoint, reason));
        }
        // The answer to the watch's creation says which etcd answers and where its
        // head is, before any event: a wiped or restored etcd shows here at once.
        let header = header_of(&self.peer, response.header())?;
        let at = std::time::Instant::now();
        if response.created() {
            // It precedes the events it resumes.
            return Ok(Input::Created { header, at });
        }
        if response.events().is_empty() {
            return Ok(Input::Progress {
                header,
                at,
                // A progress notification follows every event up to it only where etcd
                // fixed 15220.
                trusted: self.trusted_progress,
            });
        }
        let mut uncounted = 0;
        let events = response
            .events()
            .iter()
            .filter_map(|event| {
                let kv = event.kv()?;
                let created = event.event_type() == EventType::Put
                    && kv.create_revision() == kv.mod_revision();
                let Some(key) = utf8_key(kv.key().to_vec()) else {
                    match event.event_type() {
                        EventType::Put if created => uncounted += 1,
                        EventType::Put => {}
                        EventType::Delete => uncounted -= 1,
                    }
                    return None;
                };
                Some(Event {
                    key,
                    value: match event.event_type() {
                        EventType::Put => Some(kv.value().to_vec()),
                        EventType::Delete => None,
                    },
                    mod_revision: kv.mod_revision(),
                    prev_mod_revision: event.prev_kv().map(|prev| prev.mod_revision()),
                    prev_fingerprint: event
                        .prev_kv()
                        .map(|prev| fingerprint(prev.key(), prev.value(), prev.mod_revision())),
                    created,
                })
            })
            .collect();
        Ok(Input::Watched {
            events,
            header,
            uncounted,
        })
    }
}

/// The page size to try after a response of `limit` keys (0: all) was too large.
fn smaller_page(limit: i64) -> i64 {
    match limit {
        0 => PAGE_SIZE,
        limit => (limit / 4).max(1),
    }
}

/// A response larger than this client accepts ([`MAX_MESSAGE_BYTES`]) or etcd sends.
fn response_too_large(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("message length too large")
            || status.message().contains("larger than max"))
}

/// A read at `revision` that etcd cannot serve, in plain words.
fn missing_revision(error: &etcd_client::Error, revision: i64) -> Option<Error> {
    let reason = if compacted(error) {
        format!("revision {revision} is no longer in etcd's history: it was compacted away")
    } else if future_revision(error) {
        format!("revision {revision} is beyond etcd's head")
    } else {
        return None;
    };
    Some(Error::Refused {
        reason,
        source: Some(BoxError::from(error.to_string())),
    })
}

/// etcd's limit, in plain words, when it refused a transaction for its size.
fn too_large(error: &etcd_client::Error) -> Option<String> {
    let etcd_client::Error::GRpcStatus(status) = error else {
        return None;
    };
    let message = status.message();
    if message.contains("too many operations in txn request") {
        Some(format!(
            "etcd accepts at most its --max-txn-ops operations in one transaction (128 by default) ({message})"
        ))
    } else if message.contains("request is too large")
        || (status.code() == tonic::Code::ResourceExhausted && message.contains("larger than max"))
    {
        Some(format!(
            "etcd accepts at most its --max-request-bytes in one request (1.5 MiB by default) ({message})"
        ))
    } else {
        None
    }
}

/// etcd's answer to a read at a revision it compacted away.
fn compacted(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("required revision has been compacted"))
}

/// etcd's answer to a read at a revision above its head.
fn future_revision(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(status)
        if status.message().contains("required revision is a future revision"))
}

/// Says which prefix a permission error is about.
fn naming_prefix(error: Error, prefix_dir: &str) -> Error {
    match error {
        Error::Refused { reason, source } if reason.contains("permission denied") => {
            Error::Refused {
                reason: format!("{reason}: the user may not read the prefix {prefix_dir}"),
                source,
            }
        }
        other => other,
    }
}

/// etcd's answer about a lease it does not know (expired or revoked).
fn lease_missing(error: &etcd_client::Error) -> bool {
    match error {
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease not found")
        }
        _ => false,
    }
}

/// The first key after every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // the whole key space
}

fn utf8_key(key: Vec<u8>) -> Option<Arc<str>> {
    utf8_string(key).map(Arc::from)
}

/// A pair etcd read, as the engine takes it in; `None` (and a warning) for a key that is
/// not UTF-8.
fn read_kv(pair: etcd_client::KeyValue) -> Option<Kv> {
    let mod_revision = pair.mod_revision();
    let (key, value) = pair.into_key_value();
    utf8_string(key).map(|key| Kv {
        key,
        value,
        mod_revision,
    })
}

/// `key` as text; `None` (and a warning) for a key that is not UTF-8.
fn utf8_string(key: Vec<u8>) -> Option<String> {
    match String::from_utf8(key) {
        Ok(key) => Some(key),
        Err(error) => {
            tracing::warn!(
                event = events::KEY_IGNORED,
                key = %String::from_utf8_lossy(error.as_bytes()),
                "an etcd key is not UTF-8 text and names no configuration value"
            );
            None
        }
    }
}

/// gRPC status codes that mean "this request will never succeed": `INVALID_ARGUMENT`
/// (etcd's answer to a wrong password) and `PERMISSION_DENIED`.
const FINAL_GRPC_CODES: [tonic::Code; 2] =
    [tonic::Code::InvalidArgument, tonic::Code::PermissionDenied];

/// Sorts an `etcd_client` error into retryable or final, and says in plain words what
/// a TLS failure means.
fn classify(peer: &Peer, error: etcd_client::Error) -> Error {
    use rustls::AlertDescription as Alert;
    // etcd 3.4 closes the connection of a client without an accepted certificate: the
    // request is cancelled.
    let closed = peer.endpoint.starts_with("https://")
        && matches!(&error, etcd_client::Error::GRpcStatus(status)
            if status.code() == tonic::Code::Cancelled);
    let refused = match (tls_failure(&error), &error) {
        (Some(TlsFailure::Untrusted(reason)), _) => Some(format!(
            "the server's TLS certificate is not trusted (invalid peer certificate: {reason:?}); \
             check the CA bundle (EtcdSettings__CaCertPath) and that the endpoint's host name \
             is in the certificate"
        )),
        (Some(TlsFailure::KeyMismatch), _) => Some(
            "the client certificate and key do not belong together; check \
             EtcdSettings__ClientCertPath and EtcdSettings__ClientKeyPath"
                .to_owned(),
        ),
        // etcd 3.5 sends an alert.
        (Some(TlsFailure::Alert(Alert::CertificateRequired | Alert::BadCertificate)), _)
            if !peer.identity =>
        {
            Some(no_client_certificate(peer))
        }
        (None, _) if closed && !peer.identity => Some(no_client_certificate(peer)),
        (Some(TlsFailure::Alert(Alert::UnknownCA)), _) => {
            Some(rejected_client_certificate(peer, "unknown CA"))
        }
        (Some(TlsFailure::Alert(Alert::BadCertificate)), _) => {
            Some(rejected_client_certificate(peer, "bad certificate"))
        }
        (None, _) if closed => Some(rejected_client_certificate(peer, "bad certificate")),
        (_, etcd_client::Error::GRpcStatus(status)) => (FINAL_GRPC_CODES.contains(&status.code())
            || is_auth_message(status.message()))
        .then(|| status.message().to_owned()),
        (_, etcd_client::Error::InvalidArgs(_) | etcd_client::Error::InvalidUri(_)) => {
            Some(error.to_string())
        }
        _ => None,
    };
    match refused {
        Some(reason) => Error::Refused {
            reason,
            source: Some(BoxError::from(error)),
        },
        None => Error::Unavailable {
            endpoints: peer.endpoint.clone(),
            source: BoxError::from(error),
        },
    }
}

/// What TLS said was wrong.
#[derive(Debug)]
enum TlsFailure<'a> {
    /// The server's certificate is not trusted.
    Untrusted(&'a rustls::CertificateError),
    /// The client's certificate and key do not belong together.
    KeyMismatch,
    /// The server sent this alert.
    Alert(rustls::AlertDescription),
}

/// The TLS failure behind `error`, found along its causes.
fn tls_failure(error: &etcd_client::Error) -> Option<TlsFailure<'_>> {
    use rustls::AlertDescription as Alert;
    let first: &(dyn std::error::Error + 'static) = error;
    let causes = std::iter::successors(Some(first), |error| {
        match error.downcast_ref::<etcd_client::Error>() {
            // etcd-client does not name these as the source.
            Some(etcd_client::Error::GRpcStatus(status)) => Some(status),
            Some(etcd_client::Error::TransportError(error)) => Some(error),
            _ => error.source(),
        }
    });
    for cause in causes {
        let io = cause.downcast_ref::<std::io::Error>();
        // rustls' error comes as itself or inside an I/O error.
        let tls = cause.downcast_ref::<rustls::Error>().or_else(|| {
            io.and_then(std::io::Error::get_ref)
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match tls {
            Some(rustls::Error::InvalidCertificate(reason)) => {
                return Some(TlsFailure::Untrusted(reason));
            }
            Some(rustls::Error::InconsistentKeys(_)) => return Some(TlsFailure::KeyMismatch),
            Some(rustls::Error::AlertReceived(alert)) => return Some(TlsFailure::Alert(*alert)),
            _ => {}
        }
        // tokio-rustls passes a received alert on as text only.
        let alert = io.and_then(|io| io.get_ref()).and_then(|inner| {
            inner
                .to_string()
                .strip_prefix("received fatal alert: ")
                .map(str::to_owned)
        });
        let alert = match alert.as_deref() {
            Some("BadCertificate") => Alert::BadCertificate,
            Some("CertificateRequired") => Alert::CertificateRequired,
            Some("UnknownCA") => Alert::UnknownCA,
            _ => continue,
        };
        return Some(TlsFailure::Alert(alert));
    }
    None
}

fn no_client_certificate(peer: &Peer) -> String {
    format!(
        "{} requires a client certificate; set EtcdSettings__ClientCertPath and \
         EtcdSettings__ClientKeyPath",
        peer.endpoint
    )
}

fn rejected_client_certificate(peer: &Peer, why: &str) -> String {
    format!(
        "{} rejected the client certificate ({why}); it must be signed by a CA the server trusts",
        peer.endpoint
    )
}

fn classify_message(endpoint: &str, message: &str) -> Error {
    if is_auth_message(message) {
        Error::Refused {
            reason: message.to_owned(),
            source: None,
        }
    } else {
        Error::Unavailable {
            endpoints: endpoint.to_owned(),
            source: BoxError::from(format!("watch cancelled: {message}")),
        }
    }
}

fn is_auth_message(message: &str) -> bool {
    [
        "authentication failed",
        "permission denied",
        "user name is empty",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_prefix_larger_than_a_response_is_read_in_pages_that_fit() {
        let etcd = testkit::EtcdMember::start().await;
        let mut client = etcd.client().await;
        // 2,000 keys of 200 bytes: about 450 KB, and a 100 KB value.
        for batch in 0..20 {
            let puts: Vec<TxnOp> = (0..100)
                .map(|i| {
                    TxnOp::put(
                        format!("/app/K{:05}", batch * 100 + i),
                        "v".repeat(200),
                        None,
                    )
                })
                .collect();
            client.txn(Txn::new().and_then(puts)).await.unwrap();
        }
        let head = client
            .put("/app/Z", "z".repeat(100_000), None)
            .await
            .unwrap()
            .header()
            .unwrap()
            .revision();
        let settings = EtcdSettings::builder()
            .endpoints(etcd.endpoint())
            .build()
            .unwrap();
        let mut whole = Connection::new(&settings);
        let mut small = Connection::new(&settings);
        // Less than the prefix, more than its largest key.
        small.response_limit = 150_000;
        let expected = whole.list("/app/").await.unwrap();
        assert_eq!(expected.kvs.len(), 2_001);
        for at in [0, head] {
            let paged = small.list_at("/app/", at).await.unwrap();
            assert_eq!(paged.kvs, expected.kvs, "at {at}");
            assert_eq!(paged.count, 2_001);
            assert_eq!(paged.header.revision, head);
        }
        assert_eq!(
            small.probe("/app/", head).await.unwrap(),
            whole.probe("/app/", head).await.unwrap()
        );
        // A single key larger than a response cannot be read at all: said, not looped.
        small.response_limit = 50_000;
        assert!(small.list("/app/").await.is_err());
    }

    #[tokio::test]
    async fn a_watch_opened_ahead_is_used_only_for_the_same_prefix_and_revision() {
        let etcd = testkit::EtcdMember::start().await;
        let mut client = etcd.client().await;
        let mut revisions = Vec::new();
        for key in ["/app/A", "/app/B", "/other/C"] {
            let put = client.put(key, "1", None).await.unwrap();
            revisions.push(put.header().unwrap().revision());
        }
        let settings = EtcdSettings::builder()
            .endpoints(etcd.endpoint())
            .build()
            .unwrap();
        let mut connection = Connection::new(&settings);
        // Not connected yet: nothing to open ahead with.
        connection.watch_ahead("/app/", revisions[1]);
        assert!(connection.ahead.is_none());
        connection.list("/app/").await.unwrap();
        // The first event each watch delivers says where it began.
        async fn first_event(watch: &mut Watch) -> (Arc<str>, i64) {
            let first = async {
                loop {
                    if let Input::Watched { events, .. } = watch.next().await.unwrap() {
                        return (events[0].key.clone(), events[0].mod_revision);
                    }
                }
            };
            tokio::time::timeout(Duration::from_secs(10), first)
                .await
                .expect("an event within 10 s")
        }
        let cases = [
            ("/app/", revisions[1], "/app/", revisions[0], "/app/A"),
            ("/other/", revisions[0], "/app/", revisions[0], "/app/A"),
            ("/app/", revisions[1], "/app/", revisions[1], "/app/B"),
        ];
        for (ahead_prefix, ahead_from, prefix, from, first) in cases {
            connection.watch_ahead(ahead_prefix, ahead_from);
            assert!(connection.ahead.is_some());
            let mut watch = connection.watch(prefix, from).await.unwrap();
            assert!(connection.ahead.is_none(), "taken or dropped, never kept");
            assert_eq!(
                first_event(&mut watch).await,
                (Arc::from(first), from),
                "ahead {ahead_prefix} from {ahead_from}, asked {prefix} from {from}"
            );
        }
        // A connection dropped drops what it opened ahead with it.
        connection.watch_ahead("/app/", revisions[1]);
        connection.rotate();
        assert!(connection.ahead.is_none());
    }

    #[tokio::test]
    async fn a_head_read_counts_the_prefix_and_sees_writes_after_a_revision() {
        let etcd = testkit::EtcdMember::start().await;
        let mut client = etcd.client().await;
        let mut revision = 0;
        for key in ["/app/A", "/app/B", "/app/Dir/C", "/apps/Other"] {
            revision = client
                .put(key, "1", None)
                .await
                .unwrap()
                .header()
                .unwrap()
                .revision();
        }
        let settings = EtcdSettings::builder()
            .endpoints(etcd.endpoint())
            .build()
            .unwrap();
        let mut connection = Connection::new(&settings);
        let read = connection.head("/app/", revision).await.unwrap();
        assert_eq!((read.count, read.changed), (3, false), "{read:?}");
        assert_eq!(read.header.revision, revision);
        // Many keys written before, one after: the limit applies after the filter.
        let written = client.put("/app/A", "2", None).await.unwrap();
        let after = written.header().unwrap().revision();
        let read = connection.head("/app/", revision).await.unwrap();
        assert_eq!((read.count, read.changed), (3, true), "{read:?}");
        let read = connection.head("/app/", after).await.unwrap();
        assert_eq!((read.count, read.changed), (3, false), "{read:?}");
        // A delete changes no key's mod revision, only the count.
        client.delete("/app/B", None).await.unwrap();
        let read = connection.head("/app/", after).await.unwrap();
        assert_eq!((read.count, read.changed), (2, false), "{read:?}");
        // Writes elsewhere move the head, not the prefix.
        client.put("/apps/Other", "2", None).await.unwrap();
        let read = connection.head("/app/", after).await.unwrap();
        assert_eq!((read.count, read.changed), (2, false), "{read:?}");
        assert_eq!(read.header.revision, after + 2);
    }

    #[test]
    fn progress_is_trusted_from_the_versions_that_fixed_etcd_15220() {
        for version in [
            "3.4.25", "3.4.30", "3.5.8", "3.5.17", "3.6.0", "3.6.4", "4.0.0",
        ] {
            assert!(progress_follows_events(version), "{version}");
        }
        for version in [
            "3.4.23", "3.4.24", "3.5.1", "3.5.7", "3.3.27", "3.4", "", "x.y.z",
        ] {
            assert!(!progress_follows_events(version), "{version}");
        }
    }

    #[tokio::test]
    async fn the_etcds_here_are_not_trusted_with_progress() {
        // Debian's 3.4.23 and PyPI's 3.5.1, the versions the suite runs against.
        let etcd = testkit::EtcdMember::start().await;
        let settings = EtcdSettings::builder()
            .endpoints(etcd.endpoint())
            .build()
            .unwrap();
        let mut connection = Connection::new(&settings);
        connection.client().await.unwrap();
        let mut status = etcd.client().await.maintenance_client();
        let version = status.status().await.unwrap().version().to_owned();
        assert_eq!(
            connection.trusted_progress().await,
            progress_follows_events(&version),
            "{version}"
        );
    }

    #[test]
    fn prefix_end_is_the_next_key_after_the_prefix() {
        assert_eq!(prefix_end(b"/app/"), b"/app0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn auth_failures_are_final_network_failures_retryable() {
        let endpoint = "http://127.0.0.1:1";
        let refused = classify_message(endpoint, "etcdserver: permission denied");
        assert!(!refused.is_retryable(), "{refused}");
        let broken = classify_message(endpoint, "etcdserver: no leader");
        assert!(broken.is_retryable(), "{broken}");
        let peer = Peer {
            endpoint: endpoint.to_owned(),
            identity: false,
        };
        let error = classify(
            &peer,
            etcd_client::Error::WatchError("stream closed".into()),
        );
        assert!(error.is_retryable(), "{error}");
    }
}
