//! [`PostgresStore`]: the [`Store`] of a cluster, every key a row of `agents_rs_data`.
//!
//! The `Store` trait is synchronous, so the store is a write-through cache. The instances a
//! node owns are *resident*: loaded whole when the node acquires them ([`load`]), read from
//! memory afterwards. Writes go to memory at once and into a list of pending writes (the last
//! write of each key); [`flush`](Store::flush) commits that list in one transaction, which
//! first checks for every instance with writes in it that this node still owns it at the epoch
//! it acquired it with, under a lease that holds (the *fence*). A fenced instance fails the
//! whole transaction: nothing of it lands.
//!
//! Keys of no resident instance (another backend's keys, the index of alarms read as a whole)
//! are read from PostgreSQL, merged with the writes not committed yet; such a read waits for
//! PostgreSQL on the calling thread.
//!
//! [`load`]: PostgresStore::load

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use super::error::ClusterError;
use super::node::Lease;
use super::pg::{Pg, QUERY_TIMEOUT};
use crate::storage::{
    BatchOp, InstanceKeys, ScanIter, Store, StoreError, WriteBatch, instance_of, namespace_len,
};
use crate::sync::lock;

/// Entries in key order, as a scan returns them.
type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes by key: `Some(value)` a put, `None` a delete.
type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A [`Store`] on PostgreSQL: the cluster's, or one of its own with [`PostgresStore::open`].
pub struct PostgresStore {
    pg: Arc<Pg>,
    /// In a cluster: the node's lease, which every flush checks. `None`: no fence.
    lease: Option<Arc<Lease>>,
    state: Mutex<State>,
    /// The last flush failed the fence: retrying cannot help.
    fenced: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct State {
    /// The instances loaded here, by namespace.
    resident: HashMap<Box<[u8]>, Resident>,
    /// The values of the resident instances, with every write made since they were loaded.
    cache: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Writes not committed yet.
    pending: Writes,
    /// Writes of the flush under way.
    flushing: Writes,
}

/// An instance this node owns: at which epoch, under which incarnation of the node.
#[derive(Clone, Debug)]
struct Resident {
    agent: String,
    name: String,
    node: Arc<str>,
    incarnation: i64,
    epoch: i64,
}

/// What a flush commits for an instance it must fence.
struct FenceRow {
    agent: String,
    name: String,
    node: String,
    incarnation: i64,
    epoch: i64,
}

impl PostgresStore {
    /// A store of its own on the database at `url`, with no cluster around it: nothing is
    /// resident, so every read asks PostgreSQL, and flushes are not fenced. Creates or
    /// migrates the tables.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pg = Pg::new(url, 4).map_err(StoreError::from)?;
        super::schema::migrate(&pg).await.map_err(StoreError::from)?;
        Ok(Self::new(pg, None))
    }

    pub(crate) fn new(pg: Arc<Pg>, lease: Option<Arc<Lease>>) -> Self {
        Self { pg, lease, state: Mutex::default(), fenced: Default::default() }
    }

    /// Loads instance `(agent, name)`, acquired by `node` under `incarnation` at `epoch`:
    /// its keys are read from memory from now on.
    pub(crate) async fn load(
        &self,
        namespace: &[u8],
        owner: (&Arc<str>, i64, i64),
        instance: (&str, &str),
    ) -> Result<(), ClusterError> {
        if self.has_writes(namespace) {
            return Err(ClusterError::new(
                "this node still holds writes it made when it last owned the agent; they are \
                 being given up, try again in a moment",
            ));
        }
        let (start, end) = (namespace.to_vec(), successor(namespace));
        let rows = self
            .pg
            .run("loading an agent's data", QUERY_TIMEOUT, move |client| async move {
                let rows = match &end {
                    Some(end) => {
                        client
                            .query(
                                "SELECT key, value FROM agents_rs_data
                                  WHERE key >= $1 AND key < $2 ORDER BY key",
                                &[&start, end],
                            )
                            .await?
                    }
                    None => client
                        .query(
                            "SELECT key, value FROM agents_rs_data WHERE key >= $1 ORDER BY key",
                            &[&start],
                        )
                        .await?,
                };
                Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect::<Vec<_>>())
            })
            .await?;
        let mut state = lock(&self.state);
        let resident = Resident {
            agent: instance.0.to_owned(),
            name: instance.1.to_owned(),
            node: owner.0.clone(),
            incarnation: owner.1,
            epoch: owner.2,
        };
        state.resident.insert(namespace.into(), resident);
        for (key, value) in rows {
            state.cache.insert(key, value);
        }
        Ok(())
    }

    /// Forgets instance `namespace`, loaded at `epoch`: its keys are read from PostgreSQL
    /// again. Refused while it has writes not committed yet (they need its fence); nothing
    /// happens if it was loaded again since, at another epoch.
    pub(crate) fn unload(&self, namespace: &[u8], epoch: i64) -> Result<(), ClusterError> {
        if self.has_writes(namespace) {
            return Err(ClusterError::new(
                "an agent with writes not committed yet cannot be let go",
            ));
        }
        let mut state = lock(&self.state);
        if state.resident.get(namespace).is_none_or(|resident| resident.epoch != epoch) {
            return Ok(());
        }
        state.resident.remove(namespace);
        let keys: Vec<Vec<u8>> = state
            .cache
            .range(namespace.to_vec()..)
            .take_while(|(key, _)| key.starts_with(namespace))
            .map(|(key, _)| key.clone())
            .collect();
        for key in keys {
            state.cache.remove(&key);
        }
        Ok(())
    }

    /// Whether `namespace` is loaded here, for the owner at `epoch` under `incarnation`.
    pub(crate) fn is_resident(&self, namespace: &[u8], epoch: i64, incarnation: i64) -> bool {
        let state = lock(&self.state);
        let resident = state.resident.get(namespace);
        resident.is_some_and(|r| r.epoch == epoch && r.incarnation == incarnation)
    }

    /// Whether writes inside `namespace` wait to be committed (or are being committed).
    fn has_writes(&self, namespace: &[u8]) -> bool {
        let state = lock(&self.state);
        let within = |writes: &Writes| {
            let next = writes.range(namespace.to_vec()..).next();
            next.is_some_and(|(key, _)| key.starts_with(namespace))
        };
        within(&state.pending) || within(&state.flushing)
    }

    /// Records one write in memory.
    fn write(state: &mut State, key: &[u8], value: Option<&[u8]>) {
        if state.is_resident_key(key) {
            match value {
                Some(value) => state.cache.insert(key.to_vec(), value.to_vec()),
                None => state.cache.remove(key),
            };
        }
        state.pending.insert(key.to_vec(), value.map(<[u8]>::to_vec));
    }

    /// Reads `[start, end)` from PostgreSQL and lays the writes not committed yet over it.
    fn read_through(&self, start: &[u8], end: Option<&[u8]>) -> Result<Entries, StoreError> {
        let (from, to) = (start.to_vec(), end.map(<[u8]>::to_vec));
        let rows = self.pg.block("reading the store", QUERY_TIMEOUT, move |client| async move {
            let rows = match &to {
                Some(to) => {
                    client
                        .query(
                            "SELECT key, value FROM agents_rs_data WHERE key >= $1 AND key < $2 ORDER BY key",
                            &[&from, to],
                        )
                        .await?
                }
                None => {
                    client
                        .query("SELECT key, value FROM agents_rs_data WHERE key >= $1 ORDER BY key", &[&from])
                        .await?
                }
            };
            Ok(rows.into_iter().map(|row| (row.get::<_, Vec<u8>>(0), row.get::<_, Vec<u8>>(1))).collect::<BTreeMap<_, _>>())
        })?;
        let mut merged = rows;
        let state = lock(&self.state);
        let range = (
            Bound::Included(start.to_vec()),
            end.map_or(Bound::Unbounded, |end| Bound::Excluded(end.to_vec())),
        );
        for writes in [&state.flushing, &state.pending] {
            for (key, value) in writes.range::<Vec<u8>, _>(range.clone()) {
                match value {
                    Some(value) => merged.insert(key.clone(), value.clone()),
                    None => merged.remove(key),
                };
            }
        }
        Ok(merged.into_iter().collect())
    }

    /// The instances with writes in `writes`, each once, with the fence each must pass;
    /// an error if one is not resident (a write for an instance this node does not own).
    fn fences(state: &State, writes: &Writes) -> Result<Vec<FenceRow>, StoreError> {
        let mut fences: HashMap<Vec<u8>, FenceRow> = HashMap::new();
        for key in writes.keys() {
            let Some(namespace) = namespace_of(key) else { continue };
            if fences.contains_key(&*namespace) {
                continue;
            }
            let resident = state.resident.get(&*namespace).ok_or_else(|| not_owned(key))?;
            fences.insert(
                namespace.into_owned(),
                FenceRow {
                    agent: resident.agent.clone(),
                    name: resident.name.clone(),
                    node: resident.node.to_string(),
                    incarnation: resident.incarnation,
                    epoch: resident.epoch,
                },
            );
        }
        Ok(fences.into_values().collect())
    }

    /// Commits `writes` in one transaction, after the fence of every instance in `fences`.
    fn commit(&self, writes: &Writes, fences: Vec<FenceRow>) -> Result<(), StoreError> {
        let (mut put_keys, mut put_values, mut deletes) = (Vec::new(), Vec::new(), Vec::new());
        for (key, value) in writes {
            match value {
                Some(value) => {
                    put_keys.push(key.clone());
                    put_values.push(value.clone());
                }
                None => deletes.push(key.clone()),
            }
        }
        let outcome = self.pg.block("committing writes", QUERY_TIMEOUT * 2, move |mut client| async move {
            let tx = client.transaction().await?;
            if !fences.is_empty() {
                let passed = fence(&tx, &fences).await?;
                if let Some(fenced) = fences.iter().find(|f| !passed.contains(&(f.agent.clone(), f.name.clone()))) {
                    return Ok(Err(format!(
                        "{}/{} is no longer this node's at epoch {}: its writes do not land",
                        fenced.agent, fenced.name, fenced.epoch
                    )));
                }
            }
            if !put_keys.is_empty() {
                tx.execute(
                    "INSERT INTO agents_rs_data (key, value) SELECT * FROM UNNEST($1::bytea[], $2::bytea[])
                     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    &[&put_keys, &put_values],
                )
                .await?;
            }
            if !deletes.is_empty() {
                tx.execute("DELETE FROM agents_rs_data WHERE key = ANY($1)", &[&deletes]).await?;
            }
            tx.commit().await?;
            Ok(Ok(()))
        })?;
        outcome.map_err(|fenced| {
            self.fenced.store(true, std::sync::atomic::Ordering::Release);
            StoreError::msg(format!("fenced: {fenced}"))
        })
    }
}

/// Runs the fence of every instance in `fences` (a no-op update of their rows, so the commit
/// also waits for anyone acquiring them); the ones that passed.
async fn fence(
    tx: &deadpool_postgres::Transaction<'_>,
    fences: &[FenceRow],
) -> Result<Vec<(String, String)>, tokio_postgres::Error> {
    let agents: Vec<&str> = fences.iter().map(|f| f.agent.as_str()).collect();
    let names: Vec<&str> = fences.iter().map(|f| f.name.as_str()).collect();
    let nodes: Vec<&str> = fences.iter().map(|f| f.node.as_str()).collect();
    let incarnations: Vec<i64> = fences.iter().map(|f| f.incarnation).collect();
    let epochs: Vec<i64> = fences.iter().map(|f| f.epoch).collect();
    let rows = tx
        .query(
            "UPDATE agents_rs_agents a SET epoch = a.epoch
               FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
                    AS f(agent, name, node, inc, epoch),
                    agents_rs_nodes n
              WHERE a.agent = f.agent AND a.name = f.name AND a.epoch = f.epoch
                AND a.owner_node = f.node AND a.owner_inc = f.inc
                AND n.node_id = f.node AND n.incarnation = f.inc AND n.lease_until > now()
          RETURNING a.agent, a.name",
            &[&agents, &names, &nodes, &incarnations, &epochs],
        )
        .await?;
    Ok(rows.into_iter().map(|row| (row.get(0), row.get(1))).collect())
}

impl State {
    fn is_resident_key(&self, key: &[u8]) -> bool {
        namespace_len(key).is_some_and(|len| self.resident.contains_key(&key[..len]))
    }

    /// Whether `[start, end)` lies inside one resident instance.
    fn resident_range(&self, start: &[u8], end: Option<&[u8]>) -> bool {
        let Some(len) = namespace_len(start) else { return false };
        let namespace = &start[..len];
        self.resident.contains_key(namespace)
            && end.is_some_and(|end| {
                end.starts_with(namespace) || successor(namespace).as_deref() == Some(end)
            })
    }
}

impl Store for PostgresStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        {
            let state = lock(&self.state);
            if state.is_resident_key(key) {
                return Ok(state.cache.get(key).cloned());
            }
            for writes in [&state.pending, &state.flushing] {
                if let Some(value) = writes.get(key) {
                    return Ok(value.clone());
                }
            }
        }
        let mut end = key.to_vec();
        end.push(0);
        Ok(self.read_through(key, Some(&end))?.pop().map(|(_, value)| value))
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.check_owned(key)?;
        Self::write(&mut lock(&self.state), key, Some(value));
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<bool, StoreError> {
        self.check_owned(key)?;
        let was_there = self.get(key)?.is_some();
        Self::write(&mut lock(&self.state), key, None);
        Ok(was_there)
    }

    fn scan_prefix<'a>(&'a self, prefix: &[u8]) -> ScanIter<'a> {
        self.scan(prefix, successor(prefix).as_deref())
    }

    fn scan_range<'a>(&'a self, start: &[u8], end: &[u8]) -> ScanIter<'a> {
        if start >= end {
            return Box::new(std::iter::empty());
        }
        self.scan(start, Some(end))
    }

    fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let ops = batch.into_ops();
        for op in &ops {
            let (BatchOp::Put(key, _) | BatchOp::Delete(key)) = op;
            self.check_owned(key)?;
        }
        let mut state = lock(&self.state);
        for op in &ops {
            match op {
                BatchOp::Put(key, value) => Self::write(&mut state, key, Some(value)),
                BatchOp::Delete(key) => Self::write(&mut state, key, None),
            }
        }
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        let (writes, fences) = {
            let mut state = lock(&self.state);
            if !state.flushing.is_empty() {
                return Err(StoreError::msg("a flush is already under way"));
            }
            let writes = std::mem::take(&mut state.pending);
            let fences = match self.lease.is_some() {
                true => Self::fences(&state, &writes),
                false => Ok(Vec::new()),
            };
            match fences {
                Ok(fences) => {
                    state.flushing = writes.clone();
                    (writes, fences)
                }
                Err(error) => {
                    state.pending = writes;
                    return Err(error);
                }
            }
        };
        if writes.is_empty() {
            return Ok(());
        }
        if let Some(lease) = &self.lease
            && lease.holding().is_none()
        {
            self.put_back();
            self.fenced.store(true, std::sync::atomic::Ordering::Release);
            return Err(StoreError::msg("fenced: this node's lease has run out"));
        }
        let committed = self.commit(&writes, fences);
        match &committed {
            Ok(()) => lock(&self.state).flushing.clear(),
            Err(_) => self.put_back(),
        }
        committed
    }

    fn failed_for_good(&self) -> bool {
        self.fenced.load(std::sync::atomic::Ordering::Acquire)
    }

    fn recover(&self) -> Result<(), StoreError> {
        self.fenced.store(false, std::sync::atomic::Ordering::Release);
        // Give up the writes not committed, and read the resident instances again.
        let namespaces: Vec<(Box<[u8]>, Resident)> = {
            let mut state = lock(&self.state);
            state.pending.clear();
            state.flushing.clear();
            state.cache.clear();
            state.resident.drain().collect()
        };
        let holding = self.lease.as_ref().map(|lease| lease.holding());
        for (namespace, resident) in namespaces {
            // An instance owned under an incarnation that is over is not this node's any more.
            if holding.is_some_and(|holding| holding != Some(resident.incarnation)) {
                continue;
            }
            let end = successor(&namespace);
            let rows = self.read_through(&namespace, end.as_deref())?;
            let mut state = lock(&self.state);
            state.cache.extend(rows);
            state.resident.insert(namespace, resident);
        }
        Ok(())
    }
}

impl PostgresStore {
    fn scan<'a>(&'a self, start: &[u8], end: Option<&[u8]>) -> ScanIter<'a> {
        {
            let state = lock(&self.state);
            if state.resident_range(start, end) {
                let range = (
                    Bound::Included(start.to_vec()),
                    end.map_or(Bound::Unbounded, |end| Bound::Excluded(end.to_vec())),
                );
                let entries: Vec<_> = state
                    .cache
                    .range::<Vec<u8>, _>(range)
                    .map(|(key, value)| Ok((key.clone(), value.clone())))
                    .collect();
                return Box::new(entries.into_iter());
            }
        }
        match self.read_through(start, end) {
            Ok(entries) => Box::new(entries.into_iter().map(Ok)),
            Err(error) => Box::new(std::iter::once(Err(error))),
        }
    }

    /// In a cluster, a write inside an instance's data is refused unless this node owns it.
    fn check_owned(&self, key: &[u8]) -> Result<(), StoreError> {
        if self.lease.is_none() {
            return Ok(());
        }
        let Some(namespace) = namespace_of(key) else { return Ok(()) };
        match lock(&self.state).resident.contains_key(&*namespace) {
            true => Ok(()),
            false => Err(not_owned(key)),
        }
    }

    /// A failed flush's writes go back in front of the ones made since.
    fn put_back(&self) {
        let mut state = lock(&self.state);
        let failed = std::mem::take(&mut state.flushing);
        for (key, value) in failed {
            state.pending.entry(key).or_insert(value);
        }
    }
}

/// The namespace of the instance a key belongs to (see [`instance_of`]).
fn namespace_of(key: &[u8]) -> Option<Cow<'_, [u8]>> {
    if let Some(len) = namespace_len(key) {
        return Some(Cow::Borrowed(&key[..len]));
    }
    let (agent, name) = instance_of(key)?;
    Some(Cow::Owned(InstanceKeys::new(agent, name).namespace().to_vec()))
}

/// The error of a write for an instance this node does not own.
fn not_owned(key: &[u8]) -> StoreError {
    let (agent, name) = instance_of(key).unwrap_or(("?", "?"));
    StoreError::msg(format!(
        "{agent}/{name} is not owned by this node: its data cannot be written here"
    ))
}

/// The first key after every key that starts with `prefix`; `None` if there is none (the
/// prefix is empty or all `0xff`).
fn successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl From<ClusterError> for StoreError {
    fn from(error: ClusterError) -> Self {
        StoreError::msg(error)
    }
}
