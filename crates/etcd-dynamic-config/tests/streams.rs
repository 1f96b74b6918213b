//! `changes()` and `snapshots()` as streams, against a real etcd.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{config, etcd_state, put, values};
use etcd_client::{Txn, TxnOp};
use etcd_dynamic_config::{ConfigChange, MAILBOX_VALUES, Value};
use testkit::EtcdMember;
use tokio_stream::StreamExt as _;

/// Applies `change` to `view`, checking that each `old` is what the view held.
fn apply(view: &mut BTreeMap<String, String>, change: &ConfigChange) {
    for item in &change.changes {
        let name = item.name.to_string();
        assert_eq!(
            view.get(&name),
            item.old.as_ref().map(Value::to_string).as_ref(),
            "old value of {name} at revision {}",
            change.revision
        );
        match &item.new {
            Some(new) => view.insert(name, new.to_string()),
            None => view.remove(&name),
        };
    }
}

#[tokio::test]
async fn the_changes_stream_tells_every_change_in_order_and_ends_with_the_configuration() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/A", "0").await;
    let config = config(&[etcd.endpoint()], "/app");
    config.start().await.expect("start");
    let mut view = values(&config.snapshot());
    let mut changes = config.changes();
    let mut last = 0;
    for i in 1..=50 {
        let key = format!("/app/K{}", i % 7);
        last = put(&mut client, &key, &i.to_string()).await;
        if i % 10 == 0 {
            client.delete(key, None).await.expect("delete");
        }
    }
    last = last.max(common::put(&mut client, "/app/Last", "end").await);
    let mut revisions = Vec::new();
    while revisions.last().is_none_or(|revision| *revision < last) {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("a change within 10 s")
            .expect("the stream goes on while the configuration lives");
        apply(&mut view, &change);
        revisions.push(change.revision);
    }
    assert!(revisions.is_sorted(), "revision order: {revisions:?}");
    assert_eq!(view, values(&config.snapshot()));
    assert_eq!(view, etcd_state(&mut client, "/app", last).await);

    // Dropping the configuration ends the stream.
    config.stop().await;
    drop(config);
    let end = tokio::time::timeout(Duration::from_secs(5), changes.next()).await;
    assert!(matches!(end, Ok(None)), "the stream ends: {end:?}");
}

#[tokio::test]
async fn a_stream_read_late_gets_the_net_difference_within_the_bound() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    let config = config(&[etcd.endpoint()], "/app");
    config.start().await.expect("start");
    let mut view = values(&config.snapshot());
    let mut changes = config.changes();
    // More value changes than a mailbox holds, none read yet: transactions of 100 puts.
    let writes = MAILBOX_VALUES / 100 + 5;
    let mut last = 0;
    for i in 0..writes {
        let puts: Vec<TxnOp> = (0..100)
            .map(|k| TxnOp::put(format!("/app/K{k}"), format!("{i}"), None))
            .collect();
        let response = client.txn(Txn::new().and_then(puts)).await.expect("txn");
        last = response.header().expect("header").revision();
    }
    common::wait_for_revision(&config, last).await;
    let mut received = 0;
    let mut values_received = 0;
    while view != values(&config.snapshot()) {
        let change = tokio::time::timeout(Duration::from_secs(10), changes.next())
            .await
            .expect("a change within 10 s")
            .expect("the stream goes on");
        values_received += change.changes.len();
        received += 1;
        apply(&mut view, &change);
    }
    assert!(
        values_received <= MAILBOX_VALUES + 100,
        "{values_received} value changes for {} written: the backlog was folded",
        writes * 100
    );
    assert!(received < writes, "{received} changes for {writes} writes");
    assert_eq!(view, etcd_state(&mut client, "/app", last).await);
}

#[tokio::test]
async fn the_snapshots_stream_starts_with_the_current_one_and_skips_to_the_latest() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    put(&mut client, "/app/A", "1").await;
    let config = config(&[etcd.endpoint()], "/app");
    config.start().await.expect("start");
    let mut snapshots = config.snapshots();
    let first = snapshots.next().await.expect("the current snapshot");
    assert!(std::sync::Arc::ptr_eq(&first, &config.snapshot()));
    let mut last = 0;
    for i in 0..20 {
        last = put(&mut client, "/app/A", &i.to_string()).await;
    }
    common::wait_for_revision(&config, last).await;
    let latest = tokio::time::timeout(Duration::from_secs(10), snapshots.next())
        .await
        .expect("a snapshot within 10 s")
        .expect("the stream goes on");
    assert_eq!(latest.revision(), last, "skipped to the latest");
    assert_eq!(values(&latest)["a"], "19");
    drop(config);
    let end = tokio::time::timeout(Duration::from_secs(5), snapshots.next()).await;
    assert!(matches!(end, Ok(None)), "the stream ends");
}
