//! A snapshot's names and entries, packed: a flat map built once per full read of the
//! prefix, under a persistent map of what changed since.
//!
//! The flat map holds no allocation per entry. Each entry is a run of bytes in one
//! `String` shared by all entries: its kinds, then its name, value and source, numbers
//! and lengths as varints of ASCII bytes (so that the buffer stays UTF-8 and every text
//! in it is read as a `&str` without a check of its bytes). A hash table holds the
//! offset of each entry, found by its name's hash: a lookup reads the table and then one
//! run of bytes, where the name is compared and the value read. Lists and JSON
//! documents are shared (`Wide`), not copied. An [`Entry`] is a view over these bytes;
//! the value it lends borrows them. At 100,000 small keys this holds about 80 bytes per
//! key where an `Arc` per name, key, value and entry held 250 (see `BENCHMARKS.md`).
//!
//! A full read (the first, or a re-list) fills the flat map in place: entries packed apart
//! where the listing is classified (a [`Packed`]) are appended to its buffer whole and
//! taken into the table by one probe each. It is then shared
//! by every snapshot until the next merge. A change after that goes into the overlay, a
//! persistent map of one packed entry each, so the next snapshot shares all but
//! O(log changes) nodes with the one before.
//!
//! When the overlay holds more than a sixteenth of the flat map's names, both are merged
//! into a new flat map. That costs O(n) once per n/16 changes: O(1) per change,
//! amortized. The bound also keeps reads fast, because a lookup that misses a small
//! overlay costs little.
//!
//! A typed read of the whole snapshot walks the names in the order of their tree
//! ([`tree_cmp`]). The flat map sorts its names once, when first walked so, and keeps that
//! order while it is shared; a walk then merges in the overlay's changes, sorted apart.
//! So each binding's read after an update walks the names in O(n), not O(n log n).

use std::cmp::Ordering;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hashbrown::HashTable;

use super::REDACTED;
use crate::value::{Source, ValueRef};

type Hasher = foldhash::fast::RandomState;

/// A value shared by the entries that hold it, not packed.
#[derive(Clone, Debug, PartialEq)]
enum Wide {
    List(Arc<[Arc<str>]>),
    Json(Arc<serde_json::Value>),
}

/// Where a value came from, borrowed from an entry's texts (see [`Source`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SourceRef<'a> {
    Etcd {
        key: &'a str,
        mod_revision: i64,
    },
    Env {
        var: &'a str,
    },
    Cache {
        key: &'a str,
        mod_revision: i64,
    },
    Default,
    Write {
        key: &'a str,
    },
    Rollout {
        rollout: &'a str,
        key: &'a str,
        mod_revision: i64,
    },
}

impl<'a> From<&'a Source> for SourceRef<'a> {
    fn from(source: &'a Source) -> Self {
        match source {
            Source::Etcd { key, mod_revision } => Self::Etcd {
                key,
                mod_revision: *mod_revision,
            },
            Source::Env { var } => Self::Env { var },
            Source::Cache { key, mod_revision } => Self::Cache {
                key,
                mod_revision: *mod_revision,
            },
            Source::Default => Self::Default,
            Source::Write { key } => Self::Write { key },
            Source::Rollout {
                rollout,
                key,
                mod_revision,
            } => Self::Rollout {
                rollout,
                key,
                mod_revision: *mod_revision,
            },
        }
    }
}

impl SourceRef<'_> {
    fn to_source(self) -> Source {
        match self {
            Self::Etcd { key, mod_revision } => Source::Etcd {
                key: Arc::from(key),
                mod_revision,
            },
            Self::Env { var } => Source::Env {
                var: Arc::from(var),
            },
            Self::Cache { key, mod_revision } => Source::Cache {
                key: Arc::from(key),
                mod_revision,
            },
            Self::Default => Source::Default,
            Self::Write { key } => Source::Write {
                key: Arc::from(key),
            },
            Self::Rollout {
                rollout,
                key,
                mod_revision,
            } => Source::Rollout {
                rollout: Arc::from(rollout),
                key: Arc::from(key),
                mod_revision,
            },
        }
    }
}

// An entry's first byte, ASCII: the value's kind (bits 0–2), the source's kind
// (bits 3–5), the name's secrecy (bit 6).
const STRING: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INTEGER: u8 = 3;
const FLOAT: u8 = 4;
const LIST: u8 = 5;
const JSON: u8 = 6;
const DURATION: u8 = 7;
const KIND: u8 = 0b111;
const FROM_ETCD: u8 = 0;
const FROM_ENV: u8 = 1;
const FROM_CACHE: u8 = 2;
const FROM_DEFAULT: u8 = 3;
const FROM_WRITE: u8 = 4;
const FROM_ROLLOUT: u8 = 5;
const SOURCE_SHIFT: u32 = 3;
const SECRET: u8 = 1 << 6;

/// Appends `n` as a varint of ASCII bytes: 6 bits a byte, low bits first, bit 6 set on
/// every byte but the last.
fn put_varint(buf: &mut String, mut n: u64) {
    while n >= 0x40 {
        buf.push(char::from(0x40 | (n & 0x3f) as u8));
        n >>= 6;
    }
    buf.push(char::from(n as u8));
}

/// Appends `text`'s length, then `text`.
fn put_text(buf: &mut String, text: &str) {
    put_varint(buf, text.len() as u64);
    buf.push_str(text);
}

/// Where packed entries are written: a flat map's buffers, or one overlay entry's.
struct Packer<'a> {
    buf: &'a mut String,
    wides: &'a mut Vec<Wide>,
}

impl Packer<'_> {
    /// Packs one entry; returns its offset.
    fn pack(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        source: SourceRef<'_>,
        secret: bool,
    ) -> usize {
        let at = self.buf.len();
        let kind = match value {
            ValueRef::String(_) => STRING,
            ValueRef::Bool(false) => FALSE,
            ValueRef::Bool(true) => TRUE,
            ValueRef::Integer(_) => INTEGER,
            ValueRef::Float(_) => FLOAT,
            ValueRef::List(_) => LIST,
            ValueRef::Json(_) => JSON,
            ValueRef::Duration(_) => DURATION,
        };
        let from = match source {
            SourceRef::Etcd { .. } => FROM_ETCD,
            SourceRef::Env { .. } => FROM_ENV,
            SourceRef::Cache { .. } => FROM_CACHE,
            SourceRef::Default => FROM_DEFAULT,
            SourceRef::Write { .. } => FROM_WRITE,
            SourceRef::Rollout { .. } => FROM_ROLLOUT,
        };
        let secret = if secret { SECRET } else { 0 };
        self.buf
            .push(char::from(kind | from << SOURCE_SHIFT | secret));
        put_text(self.buf, name);
        match value {
            ValueRef::String(text) => put_text(self.buf, text),
            ValueRef::Bool(_) => {}
            // Zigzag: small negative numbers take few bytes too.
            ValueRef::Integer(number) => {
                put_varint(self.buf, ((number << 1) ^ (number >> 63)).cast_unsigned());
            }
            ValueRef::Float(number) => put_varint(self.buf, number.to_bits()),
            ValueRef::List(items) => self.share(Wide::List(items.clone())),
            ValueRef::Json(json) => self.share(Wide::Json(json.clone())),
            ValueRef::Duration(duration) => {
                put_varint(self.buf, duration.as_secs());
                put_varint(self.buf, duration.subsec_nanos().into());
            }
        }
        match source {
            SourceRef::Etcd { key, mod_revision } | SourceRef::Cache { key, mod_revision } => {
                put_varint(self.buf, mod_revision.cast_unsigned());
                put_text(self.buf, key);
            }
            SourceRef::Env { var: key } | SourceRef::Write { key } => put_text(self.buf, key),
            SourceRef::Default => {}
            SourceRef::Rollout {
                rollout,
                key,
                mod_revision,
            } => {
                put_varint(self.buf, mod_revision.cast_unsigned());
                put_text(self.buf, key);
                put_text(self.buf, rollout);
            }
        }
        at
    }

    fn share(&mut self, wide: Wide) {
        put_varint(self.buf, self.wides.len() as u64);
        self.wides.push(wide);
    }
}

/// Entries packed apart from any map (on another thread), to be appended to a flat map
/// whole and taken in there one by one (see [`Entries::append_packed`]).
#[derive(Default)]
pub(crate) struct Packed {
    buf: String,
}

impl Packed {
    /// Room for `bytes` bytes of packed entries.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        Self {
            buf: String::with_capacity(bytes),
        }
    }

    /// Packs the entry of `name`, read from etcd's `key` at `mod_revision`; returns its
    /// offset here. `None` for a list or a JSON document: a map shares those rather than
    /// packing them, so they are taken in one by one.
    pub(crate) fn pack_from_etcd(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        key: &str,
        mod_revision: i64,
        secret: bool,
    ) -> Option<usize> {
        if matches!(value, ValueRef::List(_) | ValueRef::Json(_)) {
            return None;
        }
        let source = SourceRef::Etcd { key, mod_revision };
        // Stays empty: only lists and JSON documents are shared.
        let mut wides = Vec::new();
        let mut packer = Packer {
            buf: &mut self.buf,
            wides: &mut wides,
        };
        Some(packer.pack(name, value, source, secret))
    }

    /// The entry packed at `at`.
    pub(crate) fn entry(&self, at: usize) -> Entry<'_> {
        entry_at(&self.buf, &[], at)
    }
}

/// Where a flat map appended a [`Packed`]: which map, and the offset of its first byte.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Appended {
    flat: u64,
    base: usize,
}

/// A flat map's identity, for [`Appended`]: never 0, never used twice.
fn flat_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Reads one packed entry, field by field, in the order `Packer::pack` wrote them.
struct Unpacker<'a> {
    /// The entry's bytes and, after them, whatever follows in the buffer.
    buf: &'a str,
    at: usize,
}

impl<'a> Unpacker<'a> {
    /// At `entry`'s first byte; returns that byte too.
    #[inline]
    fn new(entry: Entry<'a>) -> (u8, Self) {
        let flags = entry.buf.as_bytes()[0];
        (
            flags,
            Self {
                buf: entry.buf,
                at: 1,
            },
        )
    }

    #[inline]
    fn varint(&mut self) -> u64 {
        let bytes = self.buf.as_bytes();
        let mut n = 0;
        let mut shift = 0;
        loop {
            let byte = bytes[self.at];
            self.at += 1;
            n |= u64::from(byte & 0x3f) << shift;
            if byte & 0x40 == 0 {
                return n;
            }
            shift += 6;
        }
    }

    #[inline]
    fn text(&mut self) -> &'a str {
        let len = self.varint() as usize;
        let text = &self.buf[self.at..self.at + len];
        self.at += len;
        text
    }

    #[inline]
    fn value(&mut self, flags: u8, wides: &'a [Wide]) -> ValueRef<'a> {
        match flags & KIND {
            STRING => ValueRef::String(self.text()),
            FALSE => ValueRef::Bool(false),
            TRUE => ValueRef::Bool(true),
            INTEGER => {
                let zigzag = self.varint();
                ValueRef::Integer((zigzag >> 1).cast_signed() ^ -(zigzag & 1).cast_signed())
            }
            FLOAT => ValueRef::Float(f64::from_bits(self.varint())),
            DURATION => {
                let secs = self.varint();
                let nanos = self.varint() as u32;
                ValueRef::Duration(Duration::new(secs, nanos))
            }
            _ => match &wides[self.varint() as usize] {
                Wide::List(items) => ValueRef::List(items),
                Wide::Json(json) => ValueRef::Json(json),
            },
        }
    }

    fn source(&mut self, flags: u8) -> SourceRef<'a> {
        match flags >> SOURCE_SHIFT & 0b111 {
            FROM_ETCD => {
                let mod_revision = self.varint().cast_signed();
                SourceRef::Etcd {
                    key: self.text(),
                    mod_revision,
                }
            }
            FROM_CACHE => {
                let mod_revision = self.varint().cast_signed();
                SourceRef::Cache {
                    key: self.text(),
                    mod_revision,
                }
            }
            FROM_ENV => SourceRef::Env { var: self.text() },
            FROM_WRITE => SourceRef::Write { key: self.text() },
            FROM_ROLLOUT => {
                let mod_revision = self.varint().cast_signed();
                let key = self.text();
                SourceRef::Rollout {
                    rollout: self.text(),
                    key,
                    mod_revision,
                }
            }
            _ => SourceRef::Default,
        }
    }
}

/// One name's value with its provenance, lent by a snapshot. `Debug` hides the value of
/// a secret name.
#[derive(Clone, Copy)]
pub struct Entry<'a> {
    /// The buffer from the entry's first byte on.
    buf: &'a str,
    /// The values its bytes point to.
    wides: &'a [Wide],
}

/// What one entry holds, unpacked.
struct Parts<'a> {
    name: &'a str,
    value: ValueRef<'a>,
    source: SourceRef<'a>,
    secret: bool,
}

impl<'a> Entry<'a> {
    fn parts(self) -> Parts<'a> {
        let (flags, mut unpacker) = Unpacker::new(self);
        let name = unpacker.text();
        let value = unpacker.value(flags, self.wides);
        Parts {
            name,
            value,
            source: unpacker.source(flags),
            secret: flags & SECRET != 0,
        }
    }

    /// The name.
    #[inline]
    pub(crate) fn name(self) -> &'a str {
        Unpacker::new(self).1.text()
    }

    /// Whether the name is `name` (the lookup's test): compared as bytes, so the name is
    /// not sliced as text, which checks that both ends fall on character boundaries.
    #[inline]
    fn is_named(self, name: &str) -> bool {
        let (_, mut unpacker) = Unpacker::new(self);
        let len = unpacker.varint() as usize;
        len == name.len() && self.buf.as_bytes()[unpacker.at..unpacker.at + len] == *name.as_bytes()
    }

    /// The value, borrowed from the snapshot; [`ValueRef::to_value`] makes it one's own.
    #[inline]
    pub fn value(&self) -> ValueRef<'a> {
        let (flags, mut unpacker) = Unpacker::new(*self);
        unpacker.text();
        unpacker.value(flags, self.wides)
    }

    /// Where the value came from (its texts copied).
    pub fn source(&self) -> Source {
        self.parts().source.to_source()
    }

    /// Whether the schema marks the name secret.
    pub fn is_secret(&self) -> bool {
        self.buf.as_bytes()[0] & SECRET != 0
    }

    /// The etcd key and mod revision, when the value came from etcd.
    pub(crate) fn etcd(self) -> Option<(&'a str, i64)> {
        match self.parts().source {
            SourceRef::Etcd { key, mod_revision } => Some((key, mod_revision)),
            _ => None,
        }
    }
}

/// Equal when the value, its source and its secrecy are.
impl PartialEq for Entry<'_> {
    fn eq(&self, other: &Self) -> bool {
        let (mine, theirs) = (self.parts(), other.parts());
        mine.value == theirs.value && mine.source == theirs.source && mine.secret == theirs.secret
    }
}

impl fmt::Debug for Entry<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts = self.parts();
        let mut out = f.debug_struct("Entry");
        if parts.secret {
            out.field("value", &format_args!("{REDACTED}"));
        } else {
            out.field("value", &parts.value);
        }
        out.field("source", &parts.source.to_source()).finish()
    }
}

/// Packed entries and the table that finds them by name.
#[derive(Default)]
struct Flat {
    /// The offset in `buf` of each live entry, by the hash of its name.
    table: HashTable<usize>,
    buf: String,
    wides: Vec<Wide>,
    /// Entries replaced or removed in place, whose bytes stay until the next merge.
    dead: usize,
    hasher: Hasher,
    /// Set when a [`Packed`] is first appended (see [`flat_id`]); 0 until then.
    id: u64,
    /// The offsets of the live entries, names in [`tree_cmp`] order: sorted by the first
    /// walk in that order, then kept while the map is shared (the next merge makes a new
    /// map), so that each typed read after an update walks the names in O(n), not sorts
    /// them again. Cleared when the map is changed in place. 8 bytes a name, held only
    /// by a map that was read as a type ([`heap`](Entries::heap) leaves it out).
    tree_order: OnceLock<Box<[usize]>>,
}

/// The flat map, to change in place, when no snapshot shares it (a full read filling
/// it); its tree order is dropped, to be sorted again when next asked for.
fn unshared(flat: &mut Arc<Flat>) -> Option<&mut Flat> {
    let flat = Arc::get_mut(flat)?;
    flat.tree_order.take();
    Some(flat)
}

/// The entry at `at` in `buf`.
#[inline]
fn entry_at<'a>(buf: &'a str, wides: &'a [Wide], at: usize) -> Entry<'a> {
    Entry {
        buf: &buf[at..],
        wides,
    }
}

/// The slot of `table` for `name`: found by its hash, names compared in `buf`.
fn slot_of<'t>(
    table: &'t mut HashTable<usize>,
    buf: &str,
    wides: &[Wide],
    hasher: &Hasher,
    name: &str,
) -> hashbrown::hash_table::Entry<'t, usize> {
    let name_at = |at: usize| entry_at(buf, wides, at).name();
    table.entry(
        hasher.hash_one(name),
        |&old| name_at(old) == name,
        |&old| hasher.hash_one(name_at(old)),
    )
}

impl Flat {
    fn with_capacity(names: usize, bytes: usize) -> Self {
        Self {
            table: HashTable::with_capacity(names),
            buf: String::with_capacity(bytes),
            ..Self::default()
        }
    }

    #[inline]
    fn entry(&self, at: usize) -> Entry<'_> {
        entry_at(&self.buf, &self.wides, at)
    }

    /// The offsets of the live entries, names in [`tree_cmp`] order (sorted once).
    fn tree_order(&self) -> &[usize] {
        self.tree_order.get_or_init(|| {
            let mut names: Vec<(&str, usize)> = self
                .table
                .iter()
                .map(|&at| (self.entry(at).name(), at))
                .collect();
            names.sort_unstable_by(|(a, _), (b, _)| tree_cmp(a, b));
            names.into_iter().map(|(_, at)| at).collect()
        })
    }

    fn get(&self, name: &str) -> Option<Entry<'_>> {
        self.get_hashed(self.hasher.hash_one(name), name)
    }

    /// [`get`](Self::get), with the name's hash known.
    #[inline]
    fn get_hashed(&self, hash: u64, name: &str) -> Option<Entry<'_>> {
        let at = self.table.find(hash, |&at| self.entry(at).is_named(name))?;
        Some(self.entry(*at))
    }

    /// Packs the entry of `name`; returns whether it replaced one.
    fn insert(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        source: SourceRef<'_>,
        secret: bool,
    ) -> bool {
        // Nothing holds the name against it: never an error.
        self.insert_unless(name, value, source, secret, |_| None)
            .is_ok_and(|replaced| replaced)
    }

    /// Packs the entry of `name`, read from etcd's `key`, unless another key of etcd
    /// holds the name: then nothing changes and that key is the error.
    fn claim(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        key: &str,
        mod_revision: i64,
        secret: bool,
    ) -> Result<bool, Arc<str>> {
        let source = SourceRef::Etcd { key, mod_revision };
        self.insert_unless(name, value, source, secret, |held| {
            let owner = held.etcd().map(|(owner, _)| owner);
            owner.filter(|owner| *owner != key).map(Arc::from)
        })
    }

    /// Packs the entry of `name` unless `held`, given the entry it would replace, says
    /// why not; returns whether it replaced one. One probe of the table for both (a full
    /// read does this for every key).
    fn insert_unless(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        source: SourceRef<'_>,
        secret: bool,
        held: impl FnOnce(Entry<'_>) -> Option<Arc<str>>,
    ) -> Result<bool, Arc<str>> {
        let Self {
            table,
            buf,
            wides,
            dead,
            hasher,
            ..
        } = self;
        match slot_of(table, buf, wides, hasher, name) {
            hashbrown::hash_table::Entry::Occupied(mut slot) => {
                if let Some(holder) = held(entry_at(buf, wides, *slot.get())) {
                    return Err(holder);
                }
                *slot.get_mut() = Packer { buf, wides }.pack(name, value, source, secret);
                *dead += 1;
                Ok(true)
            }
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(Packer { buf, wides }.pack(name, value, source, secret));
                Ok(false)
            }
        }
    }

    /// Removes the entry of `name`; returns whether there was one.
    fn remove(&mut self, name: &str) -> bool {
        let hash = self.hasher.hash_one(name);
        let Self {
            table, buf, wides, ..
        } = self;
        let found = table.find_entry(hash, |&at| entry_at(buf, wides, at).is_named(name));
        match found {
            Ok(slot) => {
                slot.remove();
                self.dead += 1;
                true
            }
            Err(_) => false,
        }
    }

    fn shrink_to_fit(&mut self) {
        self.buf.shrink_to_fit();
        self.wides.shrink_to_fit();
    }
}

/// One entry packed on its own, for the overlay.
struct Single {
    buf: Box<str>,
    wides: Box<[Wide]>,
}

impl Single {
    fn new(name: &str, value: ValueRef<'_>, source: SourceRef<'_>, secret: bool) -> Self {
        let (mut buf, mut wides) = (String::new(), Vec::new());
        let packer = &mut Packer {
            buf: &mut buf,
            wides: &mut wides,
        };
        packer.pack(name, value, source, secret);
        Self {
            buf: buf.into(),
            wides: wides.into(),
        }
    }

    fn entry(&self) -> Entry<'_> {
        entry_at(&self.buf, &self.wides, 0)
    }
}

/// Name → what changed since the flat map: `Some` a put, `None` a name of the flat map
/// since deleted.
type Overlay =
    imbl::GenericHashMap<Arc<str>, Option<Arc<Single>>, Hasher, imbl::shared_ptr::DefaultSharedPtr>;

/// One bit per name the overlay may hold, chosen by the top bits of the name's hash in
/// the flat map: a lookup whose bit is clear goes straight to the flat map, without
/// walking the overlay (a walk costs a scattered read at 100,000 names about as much as
/// the flat map's own lookup). Bits are set as names go into the overlay and cleared
/// only when it is merged; 65,536 of them keep false hits under one in ten for the
/// 6,314 changes an overlay holds at 100,000 names.
type Filter = Arc<[u64; FILTER_WORDS]>;
const FILTER_WORDS: usize = 1024;

/// The word and bit of [`Filter`] for a name's hash.
fn filter_bit(hash: u64) -> (usize, u64) {
    let bit = (hash >> 48) as usize;
    (bit / 64, 1 << (bit % 64))
}

/// Orders names as their lists of segments: bytewise, but `.` before any other byte, so
/// that the names below each group (`database.*`) are one run, right after the value of
/// the group's own name, if any.
pub(crate) fn tree_cmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let common = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let rank =
        |byte: Option<&u8>| byte.map(|&byte| if byte == b'.' { 0 } else { u16::from(byte) + 1 });
    rank(a.get(common)).cmp(&rank(b.get(common)))
}

/// Name → entry; cloning it costs a reference count and the overlay's root.
#[derive(Clone, Default)]
pub(crate) struct Entries {
    flat: Arc<Flat>,
    overlay: Overlay,
    /// Which names the overlay may hold; `None` while it holds none.
    filter: Option<Filter>,
    /// How many names resolve to an entry.
    len: usize,
}

impl Entries {
    /// An empty map with room for `names` names and `bytes` bytes of their packed
    /// entries (names, string values, keys, a few bytes more each) before it grows.
    pub(crate) fn with_capacity(names: usize, bytes: usize) -> Self {
        Self {
            flat: Arc::new(Flat::with_capacity(names, bytes)),
            ..Self::default()
        }
    }

    /// The entry of `name`.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<Entry<'_>> {
        let hash = self.flat.hasher.hash_one(name);
        if let Some(filter) = &self.filter {
            let (word, bit) = filter_bit(hash);
            if filter[word] & bit != 0
                && let Some(change) = self.overlay.get(name)
            {
                return change.as_deref().map(Single::entry);
            }
        }
        self.flat.get_hashed(hash, name)
    }

    /// Appends `packed` to the flat map's bytes, for [`take_packed`](Self::take_packed).
    /// `None`, and nothing appended, unless a full read is filling the map: no snapshot
    /// shares it, and nothing is overlaid.
    pub(crate) fn append_packed(&mut self, packed: &Packed) -> Option<Appended> {
        if !self.overlay.is_empty() {
            return None;
        }
        let flat = unshared(&mut self.flat)?;
        if flat.id == 0 {
            flat.id = flat_id();
        }
        let base = flat.buf.len();
        flat.buf.push_str(&packed.buf);
        Some(Appended {
            flat: flat.id,
            base,
        })
    }

    /// Takes in the entries at `packed`, offsets in what
    /// [`append_packed`](Self::append_packed) appended, in order, each as the entry of its
    /// name; returns how many it took. It stops at a `None` and at a name that has an
    /// entry already, and takes none when the flat map is no longer the one appended to
    /// (it was merged, or is shared) or changes are overlaid on it. An entry not taken
    /// changes nothing: its bytes stay unused until the next merge.
    pub(crate) fn take_packed(&mut self, appended: Appended, packed: &[Option<usize>]) -> usize {
        if !self.overlay.is_empty() {
            return 0;
        }
        // Once for the run: asked once per entry, `Arc::get_mut`'s atomic operation waited
        // for the table's writes, 80 % of this function at 1,000,000 keys in `perf`.
        let Some(flat) = unshared(&mut self.flat).filter(|flat| flat.id == appended.flat) else {
            return 0;
        };
        let Flat {
            table,
            buf,
            wides,
            hasher,
            ..
        } = flat;
        let mut taken = 0;
        for &at in packed.iter().map_while(Option::as_ref) {
            let at = appended.base + at;
            let name = entry_at(buf, wides, at).name();
            let hashbrown::hash_table::Entry::Vacant(slot) =
                slot_of(table, buf, wides, hasher, name)
            else {
                break;
            };
            slot.insert(at);
            taken += 1;
        }
        self.len += taken;
        taken
    }

    /// Puts a change of `name` in the overlay.
    fn overlay_insert(&mut self, name: &str, change: Option<Arc<Single>>) {
        let (word, bit) = filter_bit(self.flat.hasher.hash_one(name));
        let filter = self
            .filter
            .get_or_insert_with(|| Arc::new([0; FILTER_WORDS]));
        Arc::make_mut(filter)[word] |= bit;
        self.overlay.insert(Arc::from(name), change);
    }

    /// Whether `name` has an entry.
    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }

    /// How many names have an entry.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether no name has an entry.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Sets the entry of `name`.
    pub(crate) fn insert(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        source: &Source,
        secret: bool,
    ) {
        self.put(name, value, source.into(), secret);
    }

    /// Sets the entry of `name`, read from etcd's `key` at `mod_revision`.
    pub(crate) fn insert_from_etcd(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        key: &str,
        mod_revision: i64,
        secret: bool,
    ) {
        self.put(name, value, SourceRef::Etcd { key, mod_revision }, secret);
    }

    /// [`insert_from_etcd`](Self::insert_from_etcd), unless another key of etcd holds
    /// `name`: then nothing changes, and that key is the error.
    pub(crate) fn claim_from_etcd(
        &mut self,
        name: &str,
        value: ValueRef<'_>,
        key: &str,
        mod_revision: i64,
        secret: bool,
    ) -> Result<(), Arc<str>> {
        let replaced = match unshared(&mut self.flat).filter(|_| self.overlay.is_empty()) {
            // A full read filling its own map: one probe.
            Some(flat) => flat.claim(name, value, key, mod_revision, secret)?,
            None => {
                let owner = self.get(name).and_then(Entry::etcd);
                if let Some((owner, _)) = owner.filter(|(owner, _)| *owner != key) {
                    return Err(Arc::from(owner));
                }
                self.insert_from_etcd(name, value, key, mod_revision, secret);
                return Ok(());
            }
        };
        if !replaced {
            self.len += 1;
        }
        self.settle();
        Ok(())
    }

    /// Sets an entry of another map as the entry of its name.
    pub(crate) fn copy(&mut self, entry: Entry<'_>) {
        let parts = entry.parts();
        self.put(parts.name, parts.value, parts.source, parts.secret);
    }

    fn put(&mut self, name: &str, value: ValueRef<'_>, source: SourceRef<'_>, secret: bool) {
        let replaced = if let Some(flat) = unshared(&mut self.flat) {
            // No snapshot shares the flat map (a full read is filling it): write in place.
            let overlaid = if self.overlay.is_empty() {
                None
            } else {
                self.overlay.remove(name)
            };
            let replaced = flat.insert(name, value, source, secret);
            overlaid.map_or(replaced, |change| change.is_some())
        } else {
            let replaced = self.contains_key(name);
            let single = Single::new(name, value, source, secret);
            self.overlay_insert(name, Some(Arc::new(single)));
            replaced
        };
        if !replaced {
            self.len += 1;
        }
        self.settle();
    }

    /// Removes the entry of `name`; returns whether there was one.
    pub(crate) fn remove(&mut self, name: &str) -> bool {
        if !self.contains_key(name) {
            return false;
        }
        self.len -= 1;
        if let Some(flat) = unshared(&mut self.flat) {
            flat.remove(name);
            if !self.overlay.is_empty() {
                self.overlay.remove(name);
            }
        } else if self.flat.get(name).is_some() {
            self.overlay_insert(name, None);
        } else {
            self.overlay.remove(name);
        }
        self.settle();
        true
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Entry<'_>> {
        let overlay = &self.overlay;
        let flat = self
            .flat
            .table
            .iter()
            .map(|&at| self.flat.entry(at))
            .filter(move |entry| overlay.is_empty() || !overlay.contains_key(entry.name()));
        let overlaid = overlay
            .values()
            .filter_map(|change| change.as_deref().map(Single::entry));
        flat.chain(overlaid)
    }

    /// Every entry, names in [`tree_cmp`] order: the flat map's order, sorted once per
    /// flat map, with the overlay's changes (at most a sixteenth of the names) sorted and
    /// merged in.
    pub(crate) fn in_tree_order(&self) -> impl Iterator<Item = Entry<'_>> {
        let mut changes: Vec<(&str, Option<Entry<'_>>)> = self
            .overlay
            .iter()
            .map(|(name, change)| (&**name, change.as_deref().map(Single::entry)))
            .collect();
        changes.sort_unstable_by(|(a, _), (b, _)| tree_cmp(a, b));
        let mut changes = changes.into_iter().peekable();
        let flat = &*self.flat;
        let mut kept = flat
            .tree_order()
            .iter()
            .map(|&at| flat.entry(at))
            .peekable();
        std::iter::from_fn(move || {
            loop {
                let Some(&(changed, _)) = changes.peek() else {
                    return kept.next();
                };
                // A name of the flat map that changed since: the change replaces it.
                match kept.peek().map(|entry| tree_cmp(entry.name(), changed)) {
                    Some(Ordering::Less) => return kept.next(),
                    Some(Ordering::Equal) => drop(kept.next()),
                    Some(Ordering::Greater) | None => {}
                }
                if let Some((_, Some(entry))) = changes.next() {
                    return Some(entry);
                }
            }
        })
    }

    /// What the flat map's buffers hold, in bytes: packed entries and the table (as
    /// hashbrown counts it: slots, control bytes and padding).
    pub(crate) fn heap(&self) -> [usize; 2] {
        [self.flat.buf.capacity(), self.flat.table.allocation_size()]
    }

    /// Gives back the room a full read reserved and did not use.
    pub(crate) fn shrink_to_fit(&mut self) {
        if let Some(flat) = unshared(&mut self.flat) {
            flat.shrink_to_fit();
        }
    }

    /// Merges the overlay into a new flat map once it holds more than a sixteenth of
    /// the names, or once as many entries were replaced in place (see the module's docs).
    fn settle(&mut self) {
        let bound = self.flat.table.len() / 16 + 64;
        if self.overlay.len() <= bound && self.flat.dead <= bound {
            return;
        }
        let mut flat = Flat::with_capacity(self.len, self.flat.buf.len());
        for entry in self.iter() {
            let parts = entry.parts();
            flat.insert(parts.name, parts.value, parts.source, parts.secret);
        }
        flat.shrink_to_fit();
        self.flat = Arc::new(flat);
        self.overlay = Overlay::default();
        self.filter = None;
    }
}

/// Another map's entries, copied.
impl<'a> Extend<Entry<'a>> for Entries {
    fn extend<I: IntoIterator<Item = Entry<'a>>>(&mut self, entries: I) {
        for entry in entries {
            self.copy(entry);
        }
    }
}

impl PartialEq for Entries {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len
            && self
                .iter()
                .all(|entry| other.get(entry.name()) == Some(entry))
    }
}

impl Eq for Entries {}

impl fmt::Debug for Entries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Entry`'s own `Debug` hides secret values.
        let pairs = self.iter().map(|entry| (entry.name(), entry));
        f.debug_map().entries(pairs).finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;
    use crate::snapshot::Value;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u16),
        /// A full read's write: only when no other etcd key holds the name.
        Claim(u8, u16),
        Remove(u8),
        /// Keep a clone, as a published snapshot does.
        Keep,
        /// Drop the kept clones, as readers let go of old snapshots.
        Forget,
    }

    /// 128 names: more than the 64 changes an overlay holds before a merge.
    const NAMES: u8 = 128;

    /// The name numbered `i`: plain, in groups, and beside groups with bytes that sort
    /// before `.` (`-`, `!`), where the tree's order is not the bytes' order.
    fn name_of(i: u8) -> String {
        match i % 4 {
            0 => format!("n{i}"),
            1 => format!("g.n{}.v", i % 12),
            2 => format!("g-{}", i % 12),
            _ => format!("g.n{}!{i}", i % 12),
        }
    }

    /// The names of `model` in the tree's order, told by comparing their lists of
    /// segments (`tree_cmp` compares bytes).
    fn model_tree_order(model: &BTreeMap<String, u16>) -> Vec<(String, Value)> {
        let mut names: Vec<(String, Value)> = model
            .iter()
            .map(|(name, &seed)| (name.clone(), value(seed)))
            .collect();
        names.sort_by(|(a, _), (b, _)| a.split('.').cmp(b.split('.')));
        names
    }

    fn tree_order(entries: &Entries) -> Vec<(String, Value)> {
        entries
            .in_tree_order()
            .map(|entry| (entry.name().to_owned(), entry.value().to_value()))
            .collect()
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..NAMES, any::<u16>()).prop_map(|(name, value)| Op::Insert(name, value)),
            // Few seeds (one key each): a name is often claimed again by its own key.
            3 => (0..NAMES, 0..3u16).prop_map(|(name, value)| Op::Claim(name, value)),
            3 => (0..NAMES).prop_map(Op::Remove),
            1 => Just(Op::Keep),
            1 => Just(Op::Forget),
        ]
    }

    /// A value of each kind for `seed`, from a key of its own.
    fn value(seed: u16) -> Value {
        match seed % 5 {
            0 => Value::Integer(seed.into()),
            1 => Value::from(format!("text {seed} ✓")),
            2 => Value::Bool(seed.is_multiple_of(2)),
            3 => Value::from(vec!["a", "b"]),
            _ => Value::Duration(Duration::from_millis(seed.into())),
        }
    }

    fn source(seed: u16) -> Source {
        Source::Etcd {
            key: Arc::from(format!("/app/key-{seed}")),
            mod_revision: seed.into(),
        }
    }

    fn insert(entries: &mut Entries, name: &str, seed: u16) {
        entries.insert(name, value(seed).view(), &source(seed), false);
    }

    fn contents(entries: &Entries) -> BTreeMap<String, (Value, Source)> {
        let listed: BTreeMap<String, (Value, Source)> = entries
            .iter()
            .map(|entry| {
                let pair = (entry.value().to_value(), entry.source());
                (entry.name().to_owned(), pair)
            })
            .collect();
        assert_eq!(listed.len(), entries.len(), "iter() yields each name once");
        listed
    }

    fn model_contents(model: &BTreeMap<String, u16>) -> BTreeMap<String, (Value, Source)> {
        model
            .iter()
            .map(|(name, &seed)| (name.clone(), (value(seed), source(seed))))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(96))]

        /// The map agrees with a plain map after every step, whether the flat map is
        /// shared or not and across merges, looked up and walked in the tree's order; a
        /// clone kept earlier never changes.
        #[test]
        fn agrees_with_a_plain_map_and_clones_never_change(
            capacity in 0usize..300,
            ops in prop::collection::vec(op(), 0..1000),
        ) {
            let mut entries = Entries::with_capacity(capacity, capacity * 8);
            let mut model: BTreeMap<String, u16> = BTreeMap::new();
            let mut kept: Vec<(Entries, BTreeMap<String, u16>)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(name, seed) => {
                        let name = name_of(name);
                        insert(&mut entries, &name, seed);
                        model.insert(name, seed);
                    }
                    Op::Claim(name, seed) => {
                        let name = name_of(name);
                        let Source::Etcd { key, mod_revision } = source(seed) else {
                            unreachable!("values come from etcd")
                        };
                        let claimed = entries.claim_from_etcd(
                            &name,
                            value(seed).view(),
                            &key,
                            mod_revision,
                            false,
                        );
                        let owner = model.get(&name).filter(|&&held| held != seed);
                        match owner {
                            Some(&held) => {
                                let Source::Etcd { key, .. } = source(held) else {
                                    unreachable!("values come from etcd")
                                };
                                prop_assert_eq!(claimed, Err(key));
                            }
                            None => {
                                prop_assert_eq!(claimed, Ok(()));
                                model.insert(name, seed);
                            }
                        }
                    }
                    Op::Remove(name) => {
                        let name = name_of(name);
                        prop_assert_eq!(entries.remove(&name), model.remove(&name).is_some());
                    }
                    Op::Keep => kept.push((entries.clone(), model.clone())),
                    Op::Forget => kept.clear(),
                }
                prop_assert_eq!(entries.len(), model.len());
                prop_assert_eq!(entries.is_empty(), model.is_empty());
                for name in 0..NAMES {
                    let name = name_of(name);
                    let found = entries.get(&name);
                    prop_assert_eq!(found.map(|e| e.value().to_value()), model.get(&name).map(|&s| value(s)));
                    prop_assert_eq!(found.map(|e| e.source()), model.get(&name).map(|&s| source(s)));
                    prop_assert_eq!(found.map(Entry::name), model.get_key_value(&name).map(|(n, _)| n.as_str()));
                    prop_assert_eq!(entries.contains_key(&name), model.contains_key(&name));
                }
                // What a full read or merge leaves behind stays bounded.
                prop_assert!(entries.flat.dead <= entries.flat.table.len() / 16 + 64);
                // The order is kept with the flat map: walked after each step, it is
                // kept across steps that share the map and dropped by those that change it.
                prop_assert_eq!(tree_order(&entries), model_tree_order(&model));
            }
            prop_assert_eq!(contents(&entries), model_contents(&model));
            for (clone, then) in kept {
                prop_assert_eq!(contents(&clone), model_contents(&then));
                prop_assert_eq!(tree_order(&clone), model_tree_order(&then));
            }
        }

        /// Every kind of value and of source reads back as it was packed, in a flat map
        /// and in the overlay, whatever the texts hold.
        #[test]
        fn every_value_and_source_reads_back_as_packed(
            name in "\\PC{0,12}",
            text in "\\PC{0,40}",
            other in "\\PC{0,20}",
            number in any::<i64>(),
            float in any::<f64>(),
            secs in any::<u64>(),
            nanos in 0u32..1_000_000_000,
            revision in any::<i64>(),
            secret in any::<bool>(),
        ) {
            let values = [
                Value::from(text.as_str()),
                Value::Bool(true),
                Value::Bool(false),
                Value::Integer(number),
                Value::Float(float),
                Value::from(vec![text.as_str(), other.as_str()]),
                Value::from(serde_json::json!({ "text": text, "n": number })),
                Value::Duration(Duration::new(secs, nanos)),
            ];
            let key: Arc<str> = Arc::from(text.as_str());
            let sources = [
                Source::Etcd { key: key.clone(), mod_revision: revision },
                Source::Env { var: Arc::from(other.as_str()) },
                Source::Cache { key: key.clone(), mod_revision: revision },
                Source::Default,
                Source::Write { key: key.clone() },
                Source::Rollout { rollout: Arc::from(other.as_str()), key, mod_revision: revision },
            ];
            for value in &values {
                for source in &sources {
                    let mut flat = Entries::default();
                    flat.insert(&name, value.view(), source, secret);
                    let mut shared = Entries::default();
                    let published = shared.clone();
                    shared.insert(&name, value.view(), source, secret);
                    prop_assert!(!shared.overlay.is_empty() && published.is_empty());
                    for entries in [&flat, &shared] {
                        let entry = entries.get(&name).expect("just inserted");
                        prop_assert_eq!(entry.name(), name.as_str());
                        prop_assert_eq!(entry.value(), value.view());
                        prop_assert_eq!(&entry.source(), source);
                        prop_assert_eq!(entry.is_secret(), secret);
                        let etcd = match source {
                            Source::Etcd { key, mod_revision } => Some((&**key, *mod_revision)),
                            _ => None,
                        };
                        prop_assert_eq!(entry.etcd(), etcd);
                    }
                    prop_assert_eq!(&flat, &shared);
                }
            }
        }
    }

    /// Packs `name` = `value` from etcd's `/app/<name>` at revision 7.
    fn pack(packed: &mut Packed, name: &str, value: &str) -> Option<usize> {
        let key = format!("/app/{name}");
        packed.pack_from_etcd(name, ValueRef::String(value), &key, 7, false)
    }

    #[test]
    fn entries_packed_apart_are_taken_in_runs_that_stop_at_a_name_held_or_a_key_not_packed() {
        assert!(Packed::with_capacity(300).buf.capacity() >= 300);
        let mut entries = Entries::with_capacity(8, 256);
        let env = Source::Env {
            var: Arc::from("B"),
        };
        entries.insert("b", ValueRef::String("env"), &env, false);
        let mut packed = Packed::default();
        let keys = [
            pack(&mut packed, "a", "1"),
            pack(&mut packed, "b", "2"),
            None,
            pack(&mut packed, "c", "3"),
            pack(&mut packed, "d", "4"),
        ];
        let list: Arc<[Arc<str>]> = Arc::from([Arc::from("x")]);
        let shared = packed.pack_from_etcd("l", ValueRef::List(&list), "/app/l", 7, false);
        assert_eq!(shared, None, "a list is shared, not packed");
        let at = keys[1].unwrap();
        assert_eq!(packed.entry(at).name(), "b");
        assert_eq!(packed.entry(at).value(), ValueRef::String("2"));

        let appended = entries
            .append_packed(&packed)
            .expect("a map no snapshot shares");
        assert_eq!(
            entries.take_packed(appended, &keys),
            1,
            "up to the name held"
        );
        assert_eq!(entries.get("b").unwrap().value(), ValueRef::String("env"));
        assert_eq!(entries.take_packed(appended, &keys[1..]), 0);
        assert_eq!(
            entries.take_packed(appended, &keys[2..]),
            0,
            "a key not packed"
        );
        assert_eq!(entries.take_packed(appended, &keys[3..]), 2);
        assert_eq!(entries.len(), 4);
        for (name, value) in [("a", "1"), ("c", "3"), ("d", "4")] {
            let entry = entries.get(name).unwrap();
            assert_eq!(entry.value(), ValueRef::String(value));
            let key = Arc::from(format!("/app/{name}"));
            let mod_revision = 7;
            assert_eq!(entry.source(), Source::Etcd { key, mod_revision });
        }
    }

    #[test]
    fn packed_entries_go_only_into_the_map_appended_to_while_nothing_shares_it() {
        let mut first = Entries::with_capacity(4, 64);
        let mut second = Entries::with_capacity(4, 64);
        let mut packed = Packed::default();
        let keys = [pack(&mut packed, "a", "1")];
        let appended = first.append_packed(&packed).unwrap();
        assert!(second.append_packed(&packed).is_some());
        assert_eq!(second.take_packed(appended, &keys), 0, "another map");

        let snapshot = first.clone();
        assert!(first.append_packed(&packed).is_none());
        assert_eq!(
            first.take_packed(appended, &keys),
            0,
            "a snapshot shares it"
        );
        drop(snapshot);
        assert_eq!(first.take_packed(appended, &keys), 1);
        assert_eq!(first.get("a").unwrap().value(), ValueRef::String("1"));

        // Once a change is overlaid, nothing packed goes in either.
        let snapshot = first.clone();
        first.insert("z", ValueRef::Integer(1), &Source::Default, false);
        drop(snapshot);
        assert!(first.append_packed(&packed).is_none());
        let keys = [pack(&mut packed, "y", "2")];
        assert_eq!(first.take_packed(appended, &keys), 0);
        assert!(first.get("y").is_none());
    }

    #[test]
    fn a_map_made_with_room_holds_that_many_names_and_bytes_before_it_grows() {
        let entries = Entries::with_capacity(3000, 70_000);
        assert!(entries.flat.table.capacity() >= 3000);
        assert!(entries.flat.buf.capacity() >= 70_000);
        assert!(entries.is_empty());
    }

    #[test]
    fn changes_after_a_share_go_to_the_overlay_until_it_outgrows_a_sixteenth() {
        let mut entries = Entries::with_capacity(2000, 0);
        for i in 0..2000 {
            insert(&mut entries, &format!("n{i}"), 0);
        }
        assert!(entries.overlay.is_empty(), "unshared: filled in place");
        let published = entries.clone();
        // 2000 / 16 + 64 = 189 changes fit in the overlay.
        for i in 0..189 {
            insert(&mut entries, &format!("n{i}"), 1);
        }
        assert_eq!(entries.overlay.len(), 189);
        assert!(Arc::ptr_eq(&entries.flat, &published.flat), "still shared");
        assert!(entries.remove("n1999"));
        assert!(!entries.remove("n1999"), "removed once");
        assert!(entries.overlay.is_empty(), "merged at the 190th change");
        assert!(!Arc::ptr_eq(&entries.flat, &published.flat));
        assert_eq!(entries.flat.dead, 0, "a merge packs the live entries only");
        assert_eq!(entries.len(), 1999);
        assert_eq!(entries.get("n5").map(|e| e.value()), Some(value(1).view()));
        assert_eq!(entries.get("n1999"), None);
        assert_eq!(
            published.get("n5").map(|e| e.value()),
            Some(ValueRef::Integer(0))
        );
        assert!(published.get("n1999").is_some());
        let mut copied = Entries::default();
        copied.extend(entries.iter());
        assert_eq!(entries, copied);
        assert_ne!(entries, published);
        let mut fewer = published.clone();
        fewer.remove("n0");
        assert_ne!(
            fewer, published,
            "a map is not equal to one with a name more"
        );
        assert_ne!(published, fewer);
        let ones = entries.iter().filter(|e| e.value() == value(1).view());
        assert_eq!(ones.count(), 189);
    }

    #[test]
    fn entries_replaced_in_place_are_packed_away_past_a_sixteenth() {
        let mut entries = Entries::with_capacity(16, 0);
        for i in 0..16 {
            insert(&mut entries, &format!("n{i}"), 0);
        }
        // 16 / 16 + 64 = 65 entries replaced in place are kept; the 66th packs.
        for round in 0..65 {
            insert(&mut entries, "n0", round);
        }
        assert_eq!(entries.flat.dead, 65);
        let before = entries.flat.buf.len();
        insert(&mut entries, "n1", 7);
        assert_eq!(entries.flat.dead, 0);
        assert!(
            entries.flat.buf.len() < before / 2,
            "the dead entries' bytes are gone"
        );
        assert_eq!(entries.get("n0").map(|e| e.value()), Some(value(64).view()));
        assert_eq!(
            entries.get("n1").map(|e| e.value()),
            Some(ValueRef::Bool(false))
        );
        assert_eq!(entries.len(), 16);
    }

    #[test]
    fn entries_removed_in_place_count_as_dead_and_are_packed_away_too() {
        let mut entries = Entries::with_capacity(200, 0);
        for i in 0..200 {
            insert(&mut entries, &format!("n{i}"), 0);
        }
        let mut packed = false;
        for i in 0..150 {
            let before = entries.flat.buf.len();
            assert!(entries.remove(&format!("n{i}")));
            let bound = entries.flat.table.len() / 16 + 64;
            assert!(entries.flat.dead <= bound, "{} dead", entries.flat.dead);
            packed |= entries.flat.buf.len() < before;
        }
        assert!(packed, "the removed entries' bytes were packed away");
        assert_eq!(entries.len(), 50);
        assert_eq!(
            entries.get("n150").map(|e| e.value()),
            Some(value(0).view())
        );
        assert_eq!(entries.get("n5"), None);
    }

    #[test]
    fn the_overlay_filter_lets_other_names_skip_the_overlay() {
        let mut entries = Entries::with_capacity(1000, 0);
        for i in 0..1000 {
            insert(&mut entries, &format!("n{i}"), 0);
        }
        let published = entries.clone(); // shared: a change goes into the overlay
        insert(&mut entries, "n0", 1);
        let filter = entries
            .filter
            .as_ref()
            .expect("a filter beside the overlay");
        let marked = |name: &str| {
            let (word, bit) = filter_bit(entries.flat.hasher.hash_one(name));
            filter[word] & bit != 0
        };
        assert!(marked("n0"));
        // 65,536 bits: about one other name in 65,536 shares the changed name's bit.
        let sharing = (1..1000).filter(|i| marked(&format!("n{i}"))).count();
        assert!(
            sharing <= 3,
            "{sharing} of 999 other names would walk the overlay"
        );
        assert_eq!(entries.get("n0").map(|e| e.value()), Some(value(1).view()));
        assert_eq!(
            published.get("n0").map(|e| e.value()),
            Some(value(0).view())
        );
    }

    #[test]
    fn debug_shows_each_name_and_hides_secret_values() {
        let mut entries = Entries::default();
        entries.insert(
            "db.password",
            ValueRef::String("hunter2"),
            &Source::Default,
            true,
        );
        entries.insert("db.port", ValueRef::Integer(5432), &Source::Default, false);
        let shown = format!("{entries:?}");
        assert!(shown.contains("\"db.password\""), "{shown}");
        assert!(shown.contains("5432"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
