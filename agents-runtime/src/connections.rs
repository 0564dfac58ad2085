//! The live connections of one instance, indexed by tag (the id is tag 0).

use std::collections::HashMap;
use std::collections::hash_map;
use std::sync::Arc;

use crate::connection::{Connection, ConnectionKey};
use crate::message::Message;

pub(crate) struct ConnectionTable<S> {
    by_key: HashMap<ConnectionKey, Connection<S>>,
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

impl<S> Default for ConnectionTable<S> {
    fn default() -> Self {
        Self { by_key: HashMap::new(), by_tag: HashMap::new() }
    }
}

impl<S> ConnectionTable<S> {
    pub(crate) fn insert(&mut self, conn: Connection<S>) {
        let key = conn.key();
        for tag in conn.tags() {
            match self.by_tag.entry(tag.clone()) {
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
        self.by_key.insert(key, conn);
    }

    pub(crate) fn remove(&mut self, key: ConnectionKey) -> Option<Connection<S>> {
        let conn = self.by_key.remove(&key)?;
        for tag in conn.tags() {
            if let hash_map::Entry::Occupied(mut keys) = self.by_tag.entry(tag.clone())
                && keys.get_mut().remove(key)
            {
                keys.remove();
            }
        }
        Some(conn)
    }

    pub(crate) fn get(&self, key: ConnectionKey) -> Option<&Connection<S>> {
        self.by_key.get(&key)
    }

    pub(crate) fn len(&self) -> usize {
        self.by_key.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every connection, closing ones included.
    pub(crate) fn every(&self) -> impl Iterator<Item = &Connection<S>> {
        self.by_key.values()
    }

    /// Sends `message` to every open connection whose id is not in `without` (one shared
    /// payload; in a turn, encoded once into the instance's cork log); returns how many took
    /// it.
    pub(crate) fn broadcast(&self, message: &Message, without: &[&str]) -> usize {
        // One hold on the instance's corks for the connections its turn already listed.
        let mut batch = None;
        self.iter(None)
            .filter(|conn| !without.contains(&conn.id()))
            .filter(|conn| conn.send_batched(message, &mut batch).is_ok())
            .count()
    }

    /// Open connections, all or those carrying `tag`.
    pub(crate) fn iter(&self, tag: Option<&str>) -> Connections<'_, S> {
        let inner = match tag {
            None => Inner::All(self.by_key.values()),
            Some(tag) => Inner::Tagged {
                keys: self.by_tag.get(tag).map_or(&[][..], Keys::as_slice).iter(),
                table: &self.by_key,
            },
        };
        Connections { inner }
    }
}

/// The iterator of `Context::get_connections`: open connections only (not closing).
pub struct Connections<'a, S> {
    inner: Inner<'a, S>,
}

enum Inner<'a, S> {
    All(hash_map::Values<'a, ConnectionKey, Connection<S>>),
    Tagged {
        keys: std::slice::Iter<'a, ConnectionKey>,
        table: &'a HashMap<ConnectionKey, Connection<S>>,
    },
}

impl<'a, S> Iterator for Connections<'a, S> {
    type Item = &'a Connection<S>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let conn = match &mut self.inner {
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
    use super::Keys;

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
}
