//! How an instance's data is laid out in the one store: a length-prefixed `(agent, name)`
//! namespace, then a kind byte.
//!
//! `i | u16 agent length | agent | u32 name length | name | kind | rest`
//!
//! The lengths make one instance's namespace never a prefix of another's (`a`+`bc` against
//! `ab`+`c`), whatever bytes a name holds.

/// The kind byte of the agent state (`this.state`).
const STATE: u8 = b's';
/// The kind byte of the user key-value storage (`ctx.storage()`).
const KV: u8 = b'k';

/// The key builder of one instance.
#[derive(Clone, Debug)]
pub(crate) struct InstanceKeys {
    /// The namespace, up to and excluding the kind byte.
    namespace: Box<[u8]>,
}

impl InstanceKeys {
    pub(crate) fn new(agent: &str, name: &str) -> Self {
        let agent_len = u16::try_from(agent.len()).expect("agent route names are short");
        // Instance names come from a URL path segment, which hyper caps far below 4 GiB.
        let name_len = u32::try_from(name.len()).expect("instance names fit in a u32 length");
        let mut namespace = Vec::with_capacity(1 + 2 + agent.len() + 4 + name.len());
        namespace.push(b'i');
        namespace.extend_from_slice(&agent_len.to_be_bytes());
        namespace.extend_from_slice(agent.as_bytes());
        namespace.extend_from_slice(&name_len.to_be_bytes());
        namespace.extend_from_slice(name.as_bytes());
        Self { namespace: namespace.into() }
    }

    /// Where the agent state is kept.
    pub(crate) fn state(&self) -> Vec<u8> {
        self.with_kind(STATE, b"")
    }

    /// Where user key `key` is kept.
    pub(crate) fn kv(&self, key: &str) -> Vec<u8> {
        self.with_kind(KV, key.as_bytes())
    }

    /// The prefix of every user key.
    pub(crate) fn kv_prefix(&self) -> Vec<u8> {
        self.with_kind(KV, b"")
    }

    /// The user key of a full store key under [`kv_prefix`](Self::kv_prefix).
    pub(crate) fn user_key<'k>(&self, full: &'k [u8]) -> Option<&'k [u8]> {
        full.strip_prefix(&*self.namespace)?.strip_prefix(&[KV])
    }

    fn with_kind(&self, kind: u8, rest: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.namespace.len() + 1 + rest.len());
        key.extend_from_slice(&self.namespace);
        key.push(kind);
        key.extend_from_slice(rest);
        key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_never_overlap() {
        let ab_c = InstanceKeys::new("ab", "c");
        let a_bc = InstanceKeys::new("a", "bc");
        assert_ne!(ab_c.state(), a_bc.state());
        assert!(!ab_c.kv_prefix().starts_with(&a_bc.kv_prefix()));
        assert!(!a_bc.kv_prefix().starts_with(&ab_c.kv_prefix()));
        // A name that is a prefix of another name still gets its own namespace.
        let room = InstanceKeys::new("chat", "room");
        let room2 = InstanceKeys::new("chat", "room2");
        assert!(!room2.kv("x").starts_with(&room.kv_prefix()));
    }

    #[test]
    fn user_keys_round_trip() {
        let keys = InstanceKeys::new("counter", "a\0b");
        let full = keys.kv("msg:1");
        assert!(full.starts_with(&keys.kv_prefix()));
        assert_eq!(keys.user_key(&full), Some(&b"msg:1"[..]));
        assert_eq!(keys.user_key(&keys.state()), None);
        assert_eq!(InstanceKeys::new("counter", "other").user_key(&full), None);
    }
}
