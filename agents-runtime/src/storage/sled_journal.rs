//! Atomic batches on sled without `Tree::apply_batch`, which in sled 0.34 seals and writes the
//! log's buffer on every call (a write and a sync-file-range each time): at thousands of
//! batches a second that alone would take a core.
//!
//! A batch is first inserted whole, as one record, into the `journal` tree (one insert is
//! atomic), then its operations are applied one by one, then the record is removed. sled
//! recovers a prefix of its log, so after a crash either the record is missing and so are all
//! of the batch's operations (they come after it in the log), or the record is there and the
//! batch is applied again from it when the store opens ([`replay`]); puts and deletes can be
//! applied twice. A reader may see a batch's operations one by one while it is applied; the
//! runtime's only readers of an instance's keys are that instance's own turns.

use std::sync::atomic::{AtomicU64, Ordering};

use super::{BatchOp, StoreError, WriteBatch};

/// The tree journal records are kept in.
pub(super) const JOURNAL: &[u8] = b"agents-runtime:journal";

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// Applies `batch` to `db` atomically across crashes, through `journal`.
pub(super) fn apply(
    db: &sled::Db,
    journal: &sled::Tree,
    next: &AtomicU64,
    batch: WriteBatch,
) -> sled::Result<()> {
    let ops = batch.into_ops();
    if let [op] = &ops[..] {
        // One operation is atomic by itself.
        return apply_op(db, op);
    }
    let id = next.fetch_add(1, Ordering::Relaxed).to_be_bytes();
    journal.insert(id, encode(&ops))?;
    for op in &ops {
        apply_op(db, op)?;
    }
    journal.remove(id)?;
    Ok(())
}

fn apply_op(db: &sled::Db, op: &BatchOp) -> sled::Result<()> {
    match op {
        BatchOp::Put(key, value) => db.insert(key.as_slice(), value.as_slice()).map(drop),
        BatchOp::Delete(key) => db.remove(key.as_slice()).map(drop),
    }
}

/// Applies the batches a crash interrupted and empties the journal; returns how many there
/// were.
pub(super) fn replay(db: &sled::Db, journal: &sled::Tree) -> Result<usize, StoreError> {
    let failed = |e: sled::Error| StoreError::backend("replay the journal of batches", e);
    let mut replayed = 0;
    for record in journal.iter() {
        let (id, ops) = record.map_err(failed)?;
        for op in decode(&ops)? {
            apply_op(db, &op).map_err(failed)?;
        }
        journal.remove(id).map_err(failed)?;
        replayed += 1;
    }
    if replayed > 0 {
        db.flush().map_err(failed)?;
    }
    Ok(replayed)
}

/// `op | u32 key length | key | (u32 value length | value)` for each operation.
fn encode(ops: &[BatchOp]) -> Vec<u8> {
    let mut out = Vec::new();
    let field = |out: &mut Vec<u8>, bytes: &[u8]| {
        out.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    for op in ops {
        match op {
            BatchOp::Put(key, value) => {
                out.push(PUT);
                field(&mut out, key);
                field(&mut out, value);
            }
            BatchOp::Delete(key) => {
                out.push(DELETE);
                field(&mut out, key);
            }
        }
    }
    out
}

fn decode(mut bytes: &[u8]) -> Result<Vec<BatchOp>, StoreError> {
    let damaged = || StoreError::msg("a record of the journal of batches is damaged");
    let field = |bytes: &mut &[u8]| -> Result<Vec<u8>, StoreError> {
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(damaged)?;
        let len = usize::try_from(u32::from_be_bytes(*len)).map_err(|_| damaged())?;
        let (value, rest) = rest.split_at_checked(len).ok_or_else(damaged)?;
        *bytes = rest;
        Ok(value.to_vec())
    };
    let mut ops = Vec::new();
    while let Some((&kind, rest)) = bytes.split_first() {
        bytes = rest;
        let key = field(&mut bytes)?;
        match kind {
            PUT => {
                let value = field(&mut bytes)?;
                ops.push(BatchOp::Put(key, value));
            }
            DELETE => ops.push(BatchOp::Delete(key)),
            _ => return Err(damaged()),
        }
    }
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_refused() {
        let ops = vec![
            BatchOp::Put(b"a".to_vec(), b"1".to_vec()),
            BatchOp::Delete(b"b".to_vec()),
            BatchOp::Put(Vec::new(), Vec::new()),
        ];
        let bytes = encode(&ops);
        assert_eq!(decode(&bytes).expect("decodes"), ops);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode(&[9, 0, 0, 0, 0]).is_err());
    }

    #[test]
    fn an_interrupted_batch_is_applied_when_the_store_opens() {
        let db = sled::Config::new().temporary(true).open().expect("opens");
        let journal = db.open_tree(JOURNAL).expect("opens");
        db.insert(b"gone", b"x").expect("inserts");
        // A crash after the record and before its operations.
        let ops =
            vec![BatchOp::Put(b"kept".to_vec(), b"1".to_vec()), BatchOp::Delete(b"gone".to_vec())];
        journal.insert(7u64.to_be_bytes(), encode(&ops)).expect("inserts");
        assert_eq!(replay(&db, &journal).expect("replays"), 1);
        assert_eq!(db.get(b"kept").expect("reads").as_deref(), Some(&b"1"[..]));
        assert_eq!(db.get(b"gone").expect("reads"), None);
        assert!(journal.is_empty(), "the journal is emptied");
        assert_eq!(replay(&db, &journal).expect("replays"), 0);
    }
}
