//! The test kit's own faults work as the other tests assume.

use std::time::Duration;

use testkit::{EtcdCluster, EtcdMember, FaultProxy};

/// Whether the member answers a read within a second: a frozen or killed one never does.
async fn answers(client: &mut etcd_client::Client) -> bool {
    matches!(
        tokio::time::timeout(Duration::from_secs(1), client.get("probe", None)).await,
        Ok(Ok(_))
    )
}

/// Whether the member answers again within 10 s (a loaded machine may take a while).
async fn answers_again(client: &mut etcd_client::Client) -> bool {
    for _ in 0..10 {
        if answers(client).await {
            return true;
        }
    }
    false
}

#[tokio::test]
async fn a_member_can_be_frozen_killed_and_restarted_with_its_data() {
    let mut etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    client.put("/kit/Key", "kept", None).await.unwrap();

    etcd.freeze();
    // Let every thread of the process come to a stop before asking.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !answers(&mut client).await,
        "a frozen member answers nothing"
    );
    etcd.thaw();
    assert!(
        answers_again(&mut client).await,
        "a thawed member answers again"
    );

    etcd.kill();
    assert!(!etcd.is_running());
    assert!(
        !answers(&mut client).await,
        "a killed member answers nothing"
    );
    etcd.restart().await;
    let mut client = etcd.client().await;
    let response = client.get("/kit/Key", None).await.unwrap();
    assert_eq!(response.kvs()[0].value_str().unwrap(), "kept");
}

#[tokio::test]
async fn compaction_removes_history() {
    let etcd = EtcdMember::start().await;
    let mut client = etcd.client().await;
    client.put("/kit/Key", "1", None).await.unwrap();
    client.put("/kit/Key", "2", None).await.unwrap();
    let revision = testkit::current_revision(&mut client).await;
    testkit::compact(&mut client, revision).await;
    let old = client
        .get(
            "/kit/Key",
            Some(etcd_client::GetOptions::new().with_revision(revision - 1)),
        )
        .await;
    assert!(
        old.unwrap_err().to_string().contains("compacted"),
        "reading before the compaction fails"
    );
}

#[tokio::test]
async fn a_three_member_cluster_replicates_and_survives_one_loss() {
    let mut cluster = EtcdCluster::start(3).await;
    assert_eq!(cluster.endpoints().len(), 3);
    let mut first = cluster.members()[0].client().await;
    first.put("/kit/Replicated", "yes", None).await.unwrap();
    let mut third = cluster.members()[2].client().await;
    let response = third.get("/kit/Replicated", None).await.unwrap();
    assert_eq!(response.kvs()[0].value_str().unwrap(), "yes");

    cluster.member(0).kill();
    // The survivors may need to elect a new leader first.
    let mut written = false;
    for _ in 0..20 {
        if third.put("/kit/AfterLoss", "still", None).await.is_ok() {
            written = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(written, "two of three members accept writes");
    cluster.member(0).restart().await;
    let mut first = cluster.members()[0].client().await;
    let response = first.get("/kit/AfterLoss", None).await.unwrap();
    assert_eq!(response.kvs()[0].value_str().unwrap(), "still");
}

#[tokio::test]
async fn the_fault_proxy_cuts_and_restores() {
    let etcd = EtcdMember::start().await;
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let mut client = testkit::connect(&[proxy.endpoint()]).await;
    assert!(answers_again(&mut client).await);
    proxy.cut();
    assert!(!answers(&mut client).await, "cut off");
    proxy.restore();
    assert!(answers_again(&mut client).await, "restored");
}

#[tokio::test]
async fn the_fault_proxy_stalls_and_slows() {
    let etcd = EtcdMember::start().await;
    let proxy = FaultProxy::start(etcd.client_port()).await;
    let mut client = testkit::connect(&[proxy.endpoint()]).await;
    assert!(answers_again(&mut client).await);

    proxy.stall();
    assert!(
        !answers(&mut client).await,
        "a stalled proxy forwards nothing"
    );
    proxy.slow(Duration::from_millis(300));
    let started = std::time::Instant::now();
    let slow = tokio::time::timeout(Duration::from_secs(5), client.get("probe", None)).await;
    assert!(matches!(slow, Ok(Ok(_))), "held bytes flow once slowed");
    assert!(started.elapsed() >= Duration::from_millis(300), "and late");
    proxy.restore();
    assert!(answers_again(&mut client).await);
}
