//! The conformance suite every [`Store`] backend must pass.
//!
//! Call [`check`] on a fresh, empty store, and [`check_reopen`] with a function that opens the
//! same store again. Both panic with a message naming the broken rule.
//!
//! ```
//! let store = agents_runtime::storage::MemoryStore::new();
//! agents_runtime::storage::conformance::check(&store);
//! ```

use super::{Store, WriteBatch};

/// Runs every rule on `store`, which must start empty.
pub fn check(store: &dyn Store) {
    reads_what_was_written(store);
    deletes(store);
    keys_are_bytes_and_values_may_be_empty_or_large(store);
    prefix_scans_are_ordered_and_exact(store);
    range_scans_are_ordered_and_half_open(store);
    batches_apply_in_order(store);
    flush(store);
}

/// Writes through one handle, flushes and drops it, opens the store again and reads back.
pub fn check_reopen<S: Store>(open: impl Fn() -> S) {
    {
        let store = open();
        store.put(b"reopen:kept", b"1").expect("put");
        store.put(b"reopen:deleted", b"2").expect("put");
        store.delete(b"reopen:deleted").expect("delete");
        let mut batch = WriteBatch::new();
        batch.put(b"reopen:batch".as_slice(), b"3".as_slice());
        store.apply(batch).expect("apply");
        store.flush().expect("flush");
    }
    let store = open();
    assert_eq!(
        get(&store, b"reopen:kept"),
        Some(b"1".to_vec()),
        "a flushed put survives reopening"
    );
    assert_eq!(get(&store, b"reopen:deleted"), None, "a flushed delete survives reopening");
    assert_eq!(
        get(&store, b"reopen:batch"),
        Some(b"3".to_vec()),
        "a flushed batch survives reopening"
    );
}

fn get(store: &dyn Store, key: &[u8]) -> Option<Vec<u8>> {
    store.get(key).expect("get")
}

fn scan(store: &dyn Store, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    store.scan_prefix(prefix).collect::<Result<_, _>>().expect("scan")
}

fn reads_what_was_written(store: &dyn Store) {
    assert_eq!(get(store, b"rw:missing"), None, "a missing key reads as None");
    store.put(b"rw:k", b"v1").expect("put");
    assert_eq!(get(store, b"rw:k"), Some(b"v1".to_vec()), "a put is visible at once");
    store.put(b"rw:k", b"v2").expect("put");
    assert_eq!(get(store, b"rw:k"), Some(b"v2".to_vec()), "a second put replaces the first");
}

fn deletes(store: &dyn Store) {
    store.put(b"del:k", b"v").expect("put");
    assert!(store.delete(b"del:k").expect("delete"), "deleting a present key returns true");
    assert_eq!(get(store, b"del:k"), None, "a deleted key is gone");
    assert!(!store.delete(b"del:k").expect("delete"), "deleting a missing key returns false");
}

fn keys_are_bytes_and_values_may_be_empty_or_large(store: &dyn Store) {
    let binary = [b'b', b'i', b'n', 0, 0xff, 0x80, 1];
    store.put(&binary, b"").expect("put");
    assert_eq!(get(store, &binary), Some(Vec::new()), "binary keys and empty values are kept");
    let large = vec![0xa5; 1 << 20];
    store.put(b"bin:large", &large).expect("put");
    assert_eq!(get(store, b"bin:large").as_deref(), Some(&large[..]), "a 1 MiB value round-trips");
    assert_eq!(get(store, b"bin"), None, "a key prefix is not the key");
}

fn prefix_scans_are_ordered_and_exact(store: &dyn Store) {
    // Written out of order; bytewise order is a, a\0, a\x01, ab, a\xff.
    for key in [&b"scan:ab"[..], b"scan:a\xff", b"scan:a", b"scan:a\x01", b"scan:a\0", b"scan;"] {
        store.put(key, key).expect("put");
    }
    let keys: Vec<Vec<u8>> = scan(store, b"scan:a").into_iter().map(|(key, _)| key).collect();
    let expected: Vec<Vec<u8>> =
        [&b"scan:a"[..], b"scan:a\0", b"scan:a\x01", b"scan:ab", b"scan:a\xff"]
            .iter()
            .map(|k| k.to_vec())
            .collect();
    assert_eq!(keys, expected, "a prefix scan returns exactly the prefixed keys, bytewise ordered");
    let values: Vec<Vec<u8>> = scan(store, b"scan:a\xff").into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, vec![b"scan:a\xff".to_vec()], "a prefix ending in 0xff is exact");
    assert!(scan(store, b"scan:zzz").is_empty(), "a prefix with no keys scans empty");
    let all = scan(store, b"");
    assert!(all.windows(2).all(|w| w[0].0 < w[1].0), "an empty prefix scans everything in order");
    assert!(all.iter().any(|(key, _)| key == b"scan;"), "an empty prefix scans everything");
}

fn range_scans_are_ordered_and_half_open(store: &dyn Store) {
    for key in [&b"range:b"[..], b"range:a", b"range:c\0", b"range:c", b"range:d", b"rangf"] {
        store.put(key, key).expect("put");
    }
    let range = |start: &[u8], end: &[u8]| -> Vec<Vec<u8>> {
        let entries = store.scan_range(start, end).collect::<Result<Vec<_>, _>>().expect("scan");
        entries.into_iter().map(|(key, _)| key).collect()
    };
    let keys = |keys: &[&[u8]]| keys.iter().map(|k| k.to_vec()).collect::<Vec<_>>();
    assert_eq!(
        range(b"range:b", b"range:d"),
        keys(&[b"range:b", b"range:c", b"range:c\0"]),
        "a range scan starts at its start, stops before its end, in bytewise order"
    );
    assert_eq!(
        range(b"range:", b"range;"),
        keys(&[b"range:a", b"range:b", b"range:c", b"range:c\0", b"range:d"])
    );
    assert_eq!(
        range(b"range:", b"rangz"),
        {
            let mut all = keys(&[b"range:a", b"range:b", b"range:c", b"range:c\0", b"range:d"]);
            all.push(b"rangf".to_vec());
            all
        },
        "a range may cross prefixes"
    );
    assert!(range(b"range:d", b"range:d").is_empty(), "an empty range scans empty");
    assert!(range(b"range:z", b"range:a").is_empty(), "a reversed range scans empty");
}

fn batches_apply_in_order(store: &dyn Store) {
    store.put(b"batch:old", b"x").expect("put");
    let mut batch = WriteBatch::new();
    batch
        .put(b"batch:a".as_slice(), b"1".as_slice())
        .put(b"batch:b".as_slice(), b"2".as_slice())
        .delete(b"batch:a".as_slice())
        .delete(b"batch:old".as_slice())
        .delete(b"batch:c".as_slice())
        .put(b"batch:c".as_slice(), b"3".as_slice());
    assert_eq!(batch.len(), 6);
    store.apply(batch).expect("apply");
    assert_eq!(get(store, b"batch:a"), None, "a delete after a put in one batch wins");
    assert_eq!(get(store, b"batch:b"), Some(b"2".to_vec()), "batched puts land");
    assert_eq!(
        get(store, b"batch:c"),
        Some(b"3".to_vec()),
        "a put after a delete in one batch wins"
    );
    assert_eq!(get(store, b"batch:old"), None, "batched deletes land");
    store.apply(WriteBatch::new()).expect("an empty batch is fine");
}

fn flush(store: &dyn Store) {
    store.flush().expect("flush succeeds on a healthy store");
    store.flush().expect("flush twice is fine");
}
