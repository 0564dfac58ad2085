//! The live connections of one instance, indexed by tag (the id is tag 0).

use std::collections::HashMap;
use std::collections::hash_map;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use crate::cluster::frames::Target;
use crate::instance::connection::{Connection, ConnectionKey};
use crate::message::Message;
use crate::outbox::{RemoteOutlet, Route};
use crate::storage::durability::WriteSeq;

/// The connections of one instance. Most instances have one or two (one agent per user or
/// document): up to [`SMALL`] are kept in a list and found by a scan, with no hash table to
/// allocate; past that they are indexed by key and by tag.
pub(crate) struct ConnectionTable<S> {
    table: Table<S>,
}

/// Most connections kept in a list; a table that grows past it is indexed, and one that
/// shrinks to half of it goes back to a list.
const SMALL: usize = 8;

enum Table<S> {
    Small(Vec<Connection<S>>),
    /// Boxed: the small tables most instances have (and keep while hibernated) take a list's
    /// room only.
    Indexed(Box<Index<S>>),
}

struct Index<S> {
    by_key: HashMap<ConnectionKey, Connection<S>, KeyHash>,
    by_tag: HashMap<Arc<str>, Keys>,
}

/// The connections carrying one tag. Most tags (every connection's id) have one: kept inline,
/// it costs no allocation of its own.
enum Keys {
    One(ConnectionKey),
    Many(Vec<ConnectionKey>),
}

impl Keys {
    fn as_slice(&self) -> &[ConnectionKey] {
        match self {
            Keys::One(key) => std::slice::from_ref(key),
            Keys::Many(keys) => keys,
        }
    }

    fn push(&mut self, key: ConnectionKey) {
        match self {
            Keys::One(first) => *self = Keys::Many(vec![*first, key]),
            Keys::Many(keys) => keys.push(key),
        }
    }

    /// Removes `key`; `true` if none is left.
    fn remove(&mut self, key: ConnectionKey) -> bool {
        match self {
            Keys::One(only) => *only == key,
            Keys::Many(keys) => {
                keys.retain(|k| *k != key);
                match keys[..] {
                    [] => return true,
                    [last] => *self = Keys::One(last),
                    _ => {}
                }
                false
            }
        }
    }
}

/// Hashes connection keys, which the server hands out in sequence (no client picks one): a
/// multiply by an odd constant spreads them over the table, at a fraction of SipHash's cost
/// (a lookup per message).
#[derive(Clone, Copy, Default)]
struct KeyHash;

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; this serves any other key all the same.
        for &byte in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(byte));
        }
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl<S> Default for ConnectionTable<S> {
    fn default() -> Self {
        Self { table: Table::Small(Vec::new()) }
    }
}

/// Indexes `conn` under its key and each of its tags.
fn index<S>(
    by_key: &mut HashMap<ConnectionKey, Connection<S>, KeyHash>,
    by_tag: &mut HashMap<Arc<str>, Keys>,
    conn: Connection<S>,
) {
    let key = conn.key();
    for tag in conn.tags() {
        match by_tag.entry(tag.clone()) {
            hash_map::Entry::Vacant(entry) => {
                entry.insert(Keys::One(key));
            }
            // A tag the connection repeats is indexed once (this connection's keys are
            // pushed together, so a repeat sees its own key last).
            hash_map::Entry::Occupied(mut keys) => {
                if keys.get().as_slice().last() != Some(&key) {
                    keys.get_mut().push(key);
                }
            }
        }
    }
    by_key.insert(key, conn);
}

impl<S> ConnectionTable<S> {
    pub(crate) fn insert(&mut self, conn: Connection<S>) {
        match &mut self.table {
            Table::Small(list) if list.len() < SMALL => list.push(conn),
            Table::Small(list) => {
                let (mut by_key, mut by_tag) = (HashMap::default(), HashMap::new());
                for conn in list.drain(..).chain([conn]) {
                    index(&mut by_key, &mut by_tag, conn);
                }
                self.table = Table::Indexed(Box::new(Index { by_key, by_tag }));
            }
            Table::Indexed(index_) => index(&mut index_.by_key, &mut index_.by_tag, conn),
        }
    }

    pub(crate) fn remove(&mut self, key: ConnectionKey) -> Option<Connection<S>> {
        let (by_key, by_tag) = match &mut self.table {
            Table::Small(list) => {
                let at = list.iter().position(|conn| conn.key() == key)?;
                return Some(list.remove(at));
            }
            Table::Indexed(index) => (&mut index.by_key, &mut index.by_tag),
        };
        let conn = by_key.remove(&key)?;
        for tag in conn.tags() {
            if let hash_map::Entry::Occupied(mut keys) = by_tag.entry(tag.clone())
                && keys.get_mut().remove(key)
            {
                keys.remove();
            }
        }
        if by_key.len() <= SMALL / 2 {
            self.table = Table::Small(by_key.drain().map(|(_, conn)| conn).collect());
        }
        Some(conn)
    }

    pub(crate) fn get(&self, key: ConnectionKey) -> Option<&Connection<S>> {
        match &self.table {
            Table::Small(list) => list.iter().find(|conn| conn.key() == key),
            Table::Indexed(index) => index.by_key.get(&key),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.table {
            Table::Small(list) => list.len(),
            Table::Indexed(index) => index.by_key.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Gives back what the table holds beyond its connections (it goes to sleep with a
    /// hibernated instance).
    pub(crate) fn shrink_to_fit(&mut self) {
        match &mut self.table {
            Table::Small(list) => list.shrink_to_fit(),
            Table::Indexed(index) => {
                index.by_key.shrink_to_fit();
                index.by_tag.shrink_to_fit();
            }
        }
    }

    /// Every connection, closing ones included.
    pub(crate) fn every(&self) -> impl Iterator<Item = &Connection<S>> {
        let (list, by_key) = match &self.table {
            Table::Small(list) => (Some(list.iter()), None),
            Table::Indexed(index) => (None, Some(index.by_key.values())),
        };
        list.into_iter().flatten().chain(by_key.into_iter().flatten())
    }

    /// Sends `message` to every open connection whose id is not in `without` (one shared
    /// payload; in a turn, encoded once into the instance's cork log); returns how many took
    /// it.
    pub(crate) fn broadcast(&self, message: &Message, without: &[&str]) -> usize {
        // One hold on the instance's gate and turn for all the connections; one frame per
        // gateway node for the sockets on other nodes.
        let mut fanout = None;
        let mut remote = RemoteFanout::default();
        let sent = self
            .iter(None)
            .filter(|conn| !without.contains(&conn.id()))
            .filter(|conn| match conn.remote() {
                Some(outlet) => remote.add(conn, outlet),
                None => conn.send_batched(message, &mut fanout).is_ok(),
            })
            .count();
        remote.send(message);
        sent
    }

    /// Sends a protocol frame (state, MCP servers) to every open protocol-enabled connection
    /// but `without`, as [`broadcast`](Self::broadcast) sends.
    pub(crate) fn broadcast_protocol(&self, message: &Message, without: Option<&str>) {
        let mut fanout = None;
        let mut remote = RemoteFanout::default();
        for conn in self.iter(None) {
            if conn.is_protocol_enabled() && Some(conn.id()) != without {
                match conn.remote() {
                    Some(outlet) => {
                        remote.add(conn, outlet);
                    }
                    None => {
                        let _ = conn.send_batched(message, &mut fanout);
                    }
                }
            }
        }
        remote.send(message);
    }

    /// Open connections, all or those carrying `tag`.
    pub(crate) fn iter(&self, tag: Option<&str>) -> Connections<'_, S> {
        let inner = match (&self.table, tag) {
            (Table::Small(list), None) => Inner::Listed { list: list.iter(), tag: None },
            (Table::Small(list), Some(tag)) => {
                // The tag as the first connection carrying it holds it (none: no connection).
                let held = list.iter().find_map(|conn| conn.tags().iter().find(|t| &***t == tag));
                match held {
                    Some(tag) => Inner::Listed { list: list.iter(), tag: Some(tag) },
                    None => Inner::Listed { list: [].iter(), tag: None },
                }
            }
            (Table::Indexed(index), None) => Inner::All(index.by_key.values()),
            (Table::Indexed(index), Some(tag)) => Inner::Tagged {
                keys: index.by_tag.get(tag).map_or(&[][..], Keys::as_slice).iter(),
                table: &index.by_key,
            },
        };
        Connections { inner }
    }
}

/// A broadcast's sockets on other nodes, by route (a gateway node): one frame each.
#[derive(Default)]
struct RemoteFanout {
    routes: Vec<(Arc<Route>, Vec<u64>)>,
    after: WriteSeq,
}

impl RemoteFanout {
    /// Adds `conn`, whose socket is on another node; `true` (it takes the message).
    fn add<S>(&mut self, conn: &Connection<S>, outlet: &RemoteOutlet) -> bool {
        self.after = conn.pending_write();
        match self.routes.iter_mut().find(|(route, _)| Arc::ptr_eq(route, &outlet.route)) {
            Some((_, conns)) => conns.push(outlet.conn),
            None => self.routes.push((outlet.route.clone(), vec![outlet.conn])),
        }
        true
    }

    fn send(self, message: &Message) {
        for (route, conns) in self.routes {
            let _ = route.send(Target::Some(conns), message.clone(), self.after);
        }
    }
}

/// The iterator of `Context::get_connections`: open connections only (not closing).
pub struct Connections<'a, S> {
    inner: Inner<'a, S>,
}

enum Inner<'a, S> {
    /// A small table's list, and the tag looked for.
    Listed {
        list: std::slice::Iter<'a, Connection<S>>,
        tag: Option<&'a str>,
    },
    All(hash_map::Values<'a, ConnectionKey, Connection<S>>),
    Tagged {
        keys: std::slice::Iter<'a, ConnectionKey>,
        table: &'a HashMap<ConnectionKey, Connection<S>, KeyHash>,
    },
}

impl<'a, S> Iterator for Connections<'a, S> {
    type Item = &'a Connection<S>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let conn = match &mut self.inner {
                Inner::Listed { list, tag: None } => list.next()?,
                Inner::Listed { list, tag: Some(tag) } => {
                    list.find(|conn| conn.tags().iter().any(|t| &**t == *tag))?
                }
                Inner::All(values) => values.next()?,
                Inner::Tagged { keys, table } => match table.get(keys.next()?) {
                    Some(conn) => conn,
                    None => continue,
                },
            };
            if !conn.is_closing() {
                return Some(conn);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Poll, Waker};
    use std::time::Duration;

    use super::{ConnectionTable, KeyHash, Keys};
    use crate::instance::connection::{Connection, ConnectionParts, connection_id};
    use crate::instance::shared::Instance;
    use crate::message::Message;
    use crate::outbox::{Link, LinkHandle, Outgoing};
    use crate::wire::frame::tests::{Trickle, decode};

    #[test]
    fn keys_in_sequence_fill_every_bucket_and_spread_their_tags() {
        use std::collections::HashSet;
        use std::hash::BuildHasher;
        // A table of 4,096 buckets indexes by the low 12 bits, and hashbrown matches within a
        // group by the top 7: keys handed out in sequence must spread over both.
        let hashes: Vec<u64> = (1..=4096u64).map(|key| KeyHash.hash_one(key)).collect();
        let buckets: HashSet<u64> = hashes.iter().map(|hash| hash & 4095).collect();
        let tags: HashSet<u64> = hashes.iter().map(|hash| hash >> 57).collect();
        assert_eq!(buckets.len(), 4096);
        assert_eq!(tags.len(), 128);
    }

    /// A table answers the same whether it lists its connections (a few) or indexes them
    /// (many), across the moves between the two.
    #[test]
    fn a_small_table_lists_and_a_large_one_indexes_with_the_same_answers() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = runtime.enter();
        let instance = Instance::detached();
        let mut table = ConnectionTable::<()>::default();
        let tagged = |table: &ConnectionTable<()>, tag: &str| {
            let mut keys: Vec<u64> = table.iter(Some(tag)).map(Connection::key).collect();
            keys.sort_unstable();
            keys
        };
        for key in 0..20u64 {
            let link = Arc::new(Link::new(16, None));
            let parts = ConnectionParts {
                key,
                id: format!("id-{key}").into(),
                uri: "http://127.0.0.1/agents/test/room".into(),
                link: LinkHandle::new(link).into(),
            };
            let conn = Connection::new(parts, instance.clone());
            let parity = if key % 2 == 0 { "even" } else { "odd" };
            // The id is tag 0; "even" is repeated, and indexed once.
            let mut tags = vec![conn.id().into(), parity.into(), "all".into()];
            if key % 2 == 0 {
                tags.push("even".into());
            }
            conn.set_tags(tags.into());
            table.insert(conn);
            let expected: Vec<u64> = (0..=key).filter(|k| k % 2 == 0).collect();
            assert_eq!(tagged(&table, "even"), expected, "after {key}");
            assert_eq!(tagged(&table, &format!("id-{key}")), [key]);
            assert_eq!(table.len() as u64, key + 1);
        }
        assert!(matches!(table.table, super::Table::Indexed(_)));
        assert_eq!(tagged(&table, "all").len(), 20);
        assert!(tagged(&table, "nobody").is_empty());
        for key in (0..20u64).rev() {
            assert_eq!(table.remove(key).map(|conn| conn.key()), Some(key));
            assert!(table.get(key).is_none());
            assert!(table.remove(key).is_none(), "once");
            let left: Vec<u64> = (0..key).filter(|k| k % 2 == 1).collect();
            assert_eq!(tagged(&table, "odd"), left, "after removing {key}");
            if key > 0 {
                assert_eq!(table.get(key - 1).map(Connection::key), Some(key - 1));
            }
        }
        assert!(matches!(&table.table, super::Table::Small(list) if list.is_empty()));
        assert!(table.is_empty());
        assert_eq!(table.every().count(), 0);
    }

    #[test]
    fn a_tag_keeps_one_key_inline_and_many_in_order() {
        let mut keys = Keys::One(1);
        assert_eq!(keys.as_slice(), [1]);
        keys.push(2);
        keys.push(3);
        assert_eq!(keys.as_slice(), [1, 2, 3]);
        assert!(!keys.remove(2));
        assert_eq!(keys.as_slice(), [1, 3]);
        assert!(!keys.remove(1));
        assert!(matches!(keys, Keys::One(3)), "back inline once one is left");
        assert!(!keys.remove(7), "a key it does not hold");
        assert!(keys.remove(3), "the last one: the tag goes");
        let mut many = Keys::Many(vec![4]);
        assert!(many.remove(4));
    }

    /// A broadcast locks the turn's corks, then each link it must; a send from another thread
    /// during the turn takes them in the same order. Neither blocks the other for good, and
    /// each socket gets each sender's frames in the order they were sent.
    #[test]
    fn a_send_from_another_thread_during_broadcasting_turns_keeps_its_order() {
        const TURNS: usize = 2000;
        const SIDE: usize = 5000;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let _entered = runtime.enter();
        let instance = Instance::detached();
        let wires: Vec<_> =
            (0..4).map(|_| Arc::new(Trickle::new(usize::MAX, usize::MAX))).collect();
        let links: Vec<_> =
            wires.iter().map(|wire| Arc::new(Link::new(1 << 16, Some(wire.clone())))).collect();
        let mut table = ConnectionTable::<()>::default();
        for (key, link) in links.iter().enumerate() {
            let parts = ConnectionParts {
                key: key as u64,
                id: connection_id(None),
                uri: "http://127.0.0.1/agents/test/room".into(),
                link: LinkHandle::new(link.clone()).into(),
            };
            table.insert(Connection::new(parts, instance.clone()));
        }
        let first = table.iter(None).find(|conn| conn.key() == 0).unwrap().clone();
        let start = Arc::new(std::sync::Barrier::new(2));
        let (done, finished) = std::sync::mpsc::channel();
        let side = {
            let (start, done) = (start.clone(), done.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..SIDE {
                    first.send(format!("side {i}")).expect("sent");
                }
                done.send(()).unwrap();
            })
        };
        // The turns run on a thread of their own too: a deadlock fails the test, not hangs it.
        let turns = std::thread::spawn(move || {
            start.wait();
            for turn in 0..TURNS {
                let mut poll = pin!(std::future::poll_fn(|_| {
                    for i in 0..5 {
                        let message = Message::from(format!("all {turn} {i}"));
                        assert_eq!(table.broadcast(&message, &[]), 4);
                    }
                    Poll::Ready(())
                }));
                let waker = Waker::noop();
                assert!(
                    instance.corks.poll(poll.as_mut(), &mut Context::from_waker(waker)).is_ready()
                );
            }
            done.send(()).unwrap();
        });
        for _ in 0..2 {
            finished.recv_timeout(Duration::from_secs(60)).expect("both threads finished");
        }
        side.join().unwrap();
        turns.join().unwrap();
        let all: Vec<String> =
            (0..TURNS).flat_map(|turn| (0..5).map(move |i| format!("all {turn} {i}"))).collect();
        for (key, (wire, link)) in wires.iter().zip(&links).enumerate() {
            // What the socket took, then what queued behind it for the socket task (a send
            // that found the turn's frames still on their way: there is no socket task here).
            let mut texts: Vec<String> = decode(&wire.taken())
                .into_iter()
                .map(|m| m.into_text().unwrap().to_string())
                .collect();
            while let Some(outgoing) = link.try_pop() {
                let Outgoing::Message(message, _) = outgoing else { panic!("a close") };
                texts.push(message.as_text().unwrap().to_string());
            }
            let (sides, broadcasts): (Vec<_>, Vec<_>) =
                texts.into_iter().partition(|text| text.starts_with("side"));
            assert_eq!(broadcasts, all, "socket {key}: every broadcast, in order");
            let expected: Vec<String> =
                if key == 0 { (0..SIDE).map(|i| format!("side {i}")).collect() } else { vec![] };
            assert_eq!(sides, expected, "socket {key}: the other thread's frames, in order");
        }
    }
}
