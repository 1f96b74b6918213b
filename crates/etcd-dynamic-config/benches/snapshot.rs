//! The read path and the update path, in process, without a server.
//!
//! - `read/*`: `config.snapshot()` then `get(name)`, the way an application reads a value
//!   (SPEC target: ≤ 50 ns median), for one name (`read/cached_get`: the same through a
//!   thread's own `CachedSnapshot`) and for names in a scattered order,
//!   beside an `arc-swap` load and a `HashMap` lookup of the same names (target ≤ 2×)
//!   and the same read from an `imbl::OrdMap` of the same entries (the denser map);
//!   `read/binding_load`, a typed struct's `load()` (target ≤ 20 ns), beside
//!   `read/bare_arc_swap_guard`, the `arc-swap` guard load it is built on, and
//!   `read/binding_load_full`, the same as an `Arc` to keep;
//!   `read/binding_cached_load`, the same through a thread's `CachedBinding`.
//! - `update/*`: applying one put (and a 10-key transaction) to the state machine and
//!   publishing the new snapshot, at 1,000 and 100,000 keys (target: ≤ 50 µs, no O(n)
//!   copy). `update/copy_whole_map` is the cost an O(n) design would pay per update,
//!   measured in the same run for comparison.
//! - `list/build_10000`: the first snapshot built from a listing of 10,000 keys.
//! - `bind/*`: a typed binding's first `load()` after a publish, 100,000 names read as a
//!   type, with the names' order kept from the flat map and (`_sorting`) sorted first.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use etcd_dynamic_config::bench_support::{Engine, config_with};

fn pairs(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| {
            (
                format!("/bench/Service{:03}/Key{i:06}", i % 500),
                format!("value-{i}"),
            )
        })
        .collect()
}

/// Reads `names` one after the other, round and round, with `read` (monomorphised: no
/// indirect call in the measured loop).
fn scattered(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: &str,
    names: &[String],
    read: impl Fn(&str) -> bool,
) {
    group.bench_with_input(BenchmarkId::new(id, names.len()), names, |b, names| {
        let mut next = 0;
        b.iter(|| {
            next = (next + 1) % names.len();
            read(black_box(&names[next]))
        });
    });
}

fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    for n in [1_000usize, 100_000] {
        let mut engine = Engine::listed("/bench", pairs(n), 1);
        let snapshot = engine
            .apply(&[("/bench/Service000/Key000000", "v")], 2)
            .expect("published");
        let config = config_with(snapshot);
        let name = format!("service{:03}.key{:06}", (n / 2) % 500, n / 2);
        assert!(config.snapshot().get(&name).is_some());
        group.bench_with_input(BenchmarkId::new("snapshot_get", n), &name, |b, name| {
            b.iter(|| config.snapshot().get(black_box(name)).is_some());
        });
        // The same through a thread's own handle, which takes no reference count.
        let mut cached = config.cached();
        group.bench_with_input(BenchmarkId::new("cached_get", n), &name, |b, name| {
            b.iter(|| cached.load().get(black_box(name)).is_some());
        });
        // Names in a scattered order (the same for both): `snapshot().get` against the
        // bare minimum, an `arc-swap` load and a `HashMap` lookup (target ≤ 2×).
        let names: Vec<String> = (0..n)
            .map(|i| (i * 7_919) % n)
            .map(|i| format!("service{:03}.key{i:06}", i % 500))
            .collect();
        let bare: arc_swap::ArcSwap<HashMap<String, String>> = arc_swap::ArcSwap::from_pointee(
            names
                .iter()
                .map(|name| (name.clone(), "value".to_owned()))
                .collect(),
        );
        scattered(&mut group, "snapshot_get_scattered", &names, |name| {
            config.snapshot().get(name).is_some()
        });
        scattered(&mut group, "bare_arc_swap_hashmap", &names, |name| {
            bare.load().get(name).is_some()
        });
        // The worst case for a read: as many changes since the last full read as the
        // overlay holds before it is merged (n/16 + 64), to names all over the map.
        let changed: Vec<String> = (0..n / 16 + 64)
            .map(|i| (i * 104_729) % n)
            .map(|k| format!("/bench/Service{:03}/Key{k:06}", k % 500))
            .collect();
        let mut revision = 2;
        let mut overlaid = None;
        for batch in changed.chunks(64) {
            revision += 1;
            let pairs: Vec<(&str, &str)> = batch.iter().map(|k| (k.as_str(), "c")).collect();
            overlaid = engine.apply(&pairs, revision);
        }
        let overlaid = config_with(overlaid.expect("published"));
        scattered(
            &mut group,
            "snapshot_get_scattered_overlaid",
            &names,
            |name| overlaid.snapshot().get(name).is_some(),
        );
        group.bench_with_input(BenchmarkId::new("get_as_string", n), &n, |b, _| {
            let name = "service000.key000000";
            let snapshot = config.snapshot();
            b.iter(|| snapshot.get_as::<String>(black_box(name)).is_ok());
        });
    }
    // A typed struct bound to the configuration (SPEC target: load ≤ 20 ns).
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Service000 {
        key000000: String,
    }
    #[derive(serde::Deserialize)]
    #[allow(dead_code)]
    struct Bound {
        service000: Service000,
    }
    let mut engine = Engine::listed("/bench", pairs(1_000), 1);
    let snapshot = engine
        .apply(&[("/bench/Service000/Key000000", "v")], 2)
        .expect("published");
    let binding = config_with(snapshot).bind::<Bound>().expect("binds");
    group.bench_function("binding_load", |b| b.iter(|| binding.load()));
    // What `load()` is built on: a load of an `arc-swap` guard, nothing else.
    let bare = arc_swap::ArcSwap::from_pointee(0_u64);
    group.bench_function("bare_arc_swap_guard", |b| b.iter(|| **bare.load()));
    group.bench_function("binding_load_full", |b| b.iter(|| binding.load_full()));
    let mut cached = binding.cached();
    group.bench_function("binding_cached_load", |b| {
        b.iter(|| std::sync::Arc::as_ptr(cached.load()))
    });
    group.finish();
}

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("update");
    for n in [1_000usize, 100_000] {
        let mut engine = Engine::listed("/bench", pairs(n), 1);
        let mut revision = 1;
        let key = format!("/bench/Service{:03}/Key{:06}", (n / 3) % 500, n / 3);
        group.bench_with_input(BenchmarkId::new("one_put", n), &key, |b, key| {
            b.iter(|| {
                revision += 1;
                engine.apply(&[(key.as_str(), "changed")], revision)
            });
        });
        // A different name each time, round all of them: changes pile up in the overlay
        // and are merged into a new flat map once per n/16 of them, so the mean is the
        // amortized cost of a put, merges included.
        let all: Vec<String> = (0..n)
            .map(|i| (i * 7_919) % n)
            .map(|k| format!("/bench/Service{:03}/Key{k:06}", k % 500))
            .collect();
        let mut next = 0;
        group.bench_function(BenchmarkId::new("one_put_each_name", n), |b| {
            b.iter(|| {
                revision += 1;
                next = (next + 1) % all.len();
                engine.apply(&[(all[next].as_str(), "changed")], revision)
            });
        });
        let keys: Vec<String> = (0..10)
            .map(|k| format!("/bench/Service{:03}/Key{:06}", (k * 7) % 500, k * 7))
            .collect();
        group.bench_with_input(BenchmarkId::new("txn_10_keys", n), &keys, |b, keys| {
            b.iter(|| {
                revision += 1;
                let pairs: Vec<(&str, &str)> = keys.iter().map(|k| (k.as_str(), "t")).collect();
                engine.apply(&pairs, revision)
            });
        });
        let map: HashMap<String, String> = pairs(n).into_iter().collect();
        group.bench_with_input(BenchmarkId::new("copy_whole_map", n), &map, |b, map| {
            b.iter(|| black_box(map.clone()));
        });
    }
    group.finish();
}

/// Building the first snapshot from a range read: the part of a cold start that is ours.
fn list(c: &mut Criterion) {
    let mut group = c.benchmark_group("list");
    group.sample_size(20);
    let input = pairs(10_000);
    group.bench_function("build_10000", |b| {
        b.iter(|| Engine::listed("/bench", input.clone(), 1));
    });
    group.finish();
}

/// What a typed binding's first `load()` after a publish pays: the whole snapshot read as
/// the type. After a put (its name in the overlay), the names' order is the one the flat
/// map keeps; the first read after a full read or a merge sorts it (`_sorting`).
fn bind(c: &mut Criterion) {
    type Tree = std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>;
    let mut group = c.benchmark_group("bind");
    group.sample_size(10);
    let published = || {
        let mut engine = Engine::listed("/bench", pairs(100_000), 1);
        engine
            .apply(&[("/bench/Service000/Key000000", "v")], 2)
            .expect("published")
    };
    let snapshot = published();
    group.bench_function("read_whole_as_type_100000", |b| {
        b.iter(|| snapshot.deserialize::<Tree>().expect("reads"));
    });
    group.bench_function("read_whole_as_type_100000_sorting", |b| {
        b.iter_batched(
            published,
            |snapshot| snapshot.deserialize::<Tree>().expect("reads"),
            criterion::BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, read, update, list, bind);
criterion_main!(benches);
