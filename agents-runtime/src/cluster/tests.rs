//! The cluster's parts against a PostgreSQL server of each test's own.

use std::time::Duration;

use super::*;
use crate::storage::{InstanceKeys, Store};
use crate::testing::Postgres;

/// The test's PostgreSQL, or `None` (said, and counted, where it is not installed; under
/// `CI=true` a missing PostgreSQL fails the test).
fn postgres(test: &str) -> Option<Postgres> {
    crate::testing::postgres(&format!("cluster::{test}"))
}

const LEASE: Duration = Duration::from_millis(900);

async fn node(url: &str, id: &str) -> Cluster {
    let config = ClusterConfig {
        url: url.to_owned(),
        node_id: Some(id.to_owned()),
        node_addr: None,
        lease: LEASE,
    };
    Cluster::join(&config, &format!("127.0.0.1:{}", 9000 + id.len())).await.expect("joins")
}

/// Makes `node`'s lease lapse in PostgreSQL, as if it had been stopped past it.
fn lapse(server: &Postgres, url: &str, node: &str) {
    let db = url.rsplit('/').next().expect("a database name");
    server.psql(
        db,
        &format!("UPDATE agents_rs_nodes SET lease_until = now() - interval '1 second' WHERE node_id = '{node}'"),
    );
}

/// Flushes `cluster`'s store from a blocking thread, as the group commit does.
async fn flush(cluster: &Cluster) -> Result<(), crate::storage::StoreError> {
    let store = cluster.store.clone();
    tokio::task::spawn_blocking(move || store.flush()).await.expect("joins")
}

async fn owned(cluster: &Cluster, agent: &str, name: &str) -> i64 {
    match cluster.acquire(agent, name).await.expect("acquires") {
        Owner::Acquired { epoch, .. } => {
            let keys = InstanceKeys::new(agent, name);
            let holder = cluster.holder().expect("a member");
            let owner = (&cluster.node.id, holder.incarnation, epoch);
            cluster.store.load(keys.namespace(), owner, (agent, name)).await.expect("loads");
            epoch
        }
        other => panic!("{agent}/{name} is owned elsewhere: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_start_together_and_migrate_once() {
    let Some(server) = postgres("nodes_start_together_and_migrate_once") else { return };
    let url = server.database();
    let (a, b, c) = tokio::join!(node(&url, "a"), node(&url, "b"), node(&url, "c"));
    let db = url.rsplit('/').next().expect("a database");
    assert_eq!(
        server.psql(db, "SELECT version FROM agents_rs_schema"),
        schema::VERSION.to_string()
    );
    assert_eq!(server.psql(db, "SELECT count(*) FROM agents_rs_nodes"), "3");
    let incarnations = [&a, &b, &c].map(|n| n.holder().expect("a member").incarnation);
    assert!(incarnations[0] != incarnations[1] && incarnations[1] != incarnations[2]);
    // Renewals keep every lease past its length.
    tokio::time::sleep(LEASE * 3).await;
    for (n, incarnation) in [&a, &b, &c].into_iter().zip(incarnations) {
        let holding = n.holder().map(|h| h.incarnation);
        assert_eq!(holding, Some(incarnation), "{} holds its lease, same incarnation", n.node.id);
    }
    a.leave().await.expect("leaves");
    assert_eq!(server.psql(db, "SELECT count(*) FROM agents_rs_nodes"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_owner_at_a_time_and_the_next_one_gets_a_higher_epoch() {
    let Some(server) = postgres("one_owner_at_a_time") else { return };
    let url = server.database();
    let (a, b) = tokio::join!(node(&url, "a"), node(&url, "b"));
    assert!(matches!(
        a.acquire("chat-room", "lobby").await.expect("acquires"),
        Owner::Acquired { epoch: 1, .. }
    ));
    match b.acquire("chat-room", "lobby").await.expect("asks") {
        Owner::Other { holder, addr } => {
            assert_eq!(holder, a.holder().expect("a member"));
            assert_eq!(addr, "127.0.0.1:9001");
        }
        other => panic!("b acquired what a owns: {other:?}"),
    }
    // The owner acquiring again (after a restart from storage) moves the epoch on.
    assert!(matches!(
        a.acquire("chat-room", "lobby").await.expect("acquires"),
        Owner::Acquired { epoch: 2, .. }
    ));
    assert!(!b.release("chat-room", "lobby", 2).await.expect("asks"), "only the owner releases");
    assert!(a.release("chat-room", "lobby", 2).await.expect("releases"));
    assert!(matches!(
        b.acquire("chat-room", "lobby").await.expect("acquires"),
        Owner::Acquired { epoch: 3, .. }
    ));
    // A node that leaves lets its agents go at once.
    b.leave().await.expect("leaves");
    assert!(matches!(
        a.acquire("chat-room", "lobby").await.expect("acquires"),
        Owner::Acquired { epoch: 4, .. }
    ));
    let nul = a.acquire("chat-room", "a\0b").await.expect_err("a NUL is refused");
    assert!(nul.to_string().contains("NUL"), "{nul}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_commits_nothing() {
    let Some(server) = postgres("a_stale_owner_commits_nothing") else { return };
    let url = server.database();
    let (a, b) = tokio::join!(node(&url, "a"), node(&url, "b"));
    let keys = InstanceKeys::new("counter", "c");
    assert_eq!(owned(&a, "counter", "c").await, 1);
    a.store.put(&keys.state(), b"1").expect("writes");
    flush(&a).await.expect("commits");

    // a's lease lapses in PostgreSQL while a still trusts it (a stall shorter than its margin
    // cannot do this; an operator's UPDATE can): b takes the agent over.
    lapse(&server, &url, "a");
    assert_eq!(owned(&b, "counter", "c").await, 2);
    assert_eq!(b.store.get(&keys.state()).expect("reads"), Some(b"1".to_vec()));
    b.store.put(&keys.state(), b"2").expect("writes");

    // a's write fails the fence, and nothing of it lands.
    a.store.put(&keys.state(), b"stale").expect("writes in memory");
    let error = flush(&a).await;
    let error = error.expect_err("a stale owner's commit fails");
    assert!(error.to_string().contains("fenced"), "{error}");
    flush(&b).await.expect("commits");
    let db = url.rsplit('/').next().expect("a database");
    let value = server.psql(db, "SELECT encode(value, 'escape') FROM agents_rs_data");
    assert_eq!(value, "2", "only the owner's write landed");

    // a finds out at its next renewal, and joins again under a new incarnation.
    let before = a.holder().map(|h| h.incarnation);
    crate::testing::eventually("a joins again", || {
        a.holder().map(|h| h.incarnation) != before && a.holder().is_some()
    })
    .await;
    a.store.recover().expect("recovers");
    assert_eq!(
        a.store.get(&keys.state()).expect("reads"),
        Some(b"2".to_vec()),
        "a reads what landed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_away_fences_the_node_and_it_comes_back() {
    let Some(server) = postgres("postgres_away_fences_the_node") else { return };
    let url = server.database();
    let a = node(&url, "a").await;
    let keys = InstanceKeys::new("counter", "c");
    owned(&a, "counter", "c").await;
    let first = a.holder().expect("a member").incarnation;
    server.stop();
    a.store.put(&keys.state(), b"1").expect("writes in memory");
    let error = flush(&a).await;
    assert!(error.is_err(), "a commit without PostgreSQL fails");
    crate::testing::eventually("the lease runs out", || a.holder().is_none()).await;
    crate::testing::eventually("the node fences itself", || {
        matches!(a.node.lease.standing(), Standing::Fenced { .. })
    })
    .await;
    let error = a.acquire("counter", "d").await.expect_err("a fenced node acquires nothing");
    assert!(error.to_string().contains("fenced"), "{error}");
    server.restart();
    crate::testing::eventually("a joins again", || a.holder().is_some()).await;
    assert_ne!(a.holder().expect("a member").incarnation, first);
    // Its agents are anyone's now, its own included, at a higher epoch.
    assert!(matches!(
        a.acquire("counter", "c").await.expect("acquires"),
        Owner::Acquired { epoch: 2, .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_store_reads_its_agents_from_memory_and_writes_only_them() {
    let Some(server) = postgres("a_cluster_store_reads_from_memory") else { return };
    let url = server.database();
    let a = node(&url, "a").await;
    let keys = InstanceKeys::new("counter", "c");
    owned(&a, "counter", "c").await;
    a.store.put(&keys.kv("x"), b"1").expect("writes");
    a.store.put(&keys.index_entry(5), b"").expect("writes its index entry");
    assert!(a.store.is_resident(keys.namespace(), 1, a.holder().expect("a member").incarnation));
    let scanned: Vec<_> =
        a.store.scan_prefix(&keys.kv_prefix()).collect::<Result<_, _>>().expect("scans");
    assert_eq!(scanned, vec![(keys.kv("x"), b"1".to_vec())]);
    let other = InstanceKeys::new("counter", "not-mine");
    let error = a.store.put(&other.state(), b"1").expect_err("not owned");
    assert!(error.to_string().contains("not owned"), "{error}");
    let error = a.store.put(&other.index_entry(5), b"").expect_err("not owned");
    assert!(error.to_string().contains("not owned"), "{error}");
    assert!(a.store.unload(keys.namespace(), 1).is_err(), "writes not committed keep it loaded");
    flush(&a).await.expect("commits");
    a.store.unload(keys.namespace(), 1).expect("lets go");
    // Read from PostgreSQL now (on a blocking thread: such a read waits for it).
    let store = a.store.clone();
    let key = keys.kv("x");
    let value = tokio::task::spawn_blocking(move || store.get(&key)).await.expect("joins");
    assert_eq!(value.expect("reads"), Some(b"1".to_vec()));
    drop(server);
}
