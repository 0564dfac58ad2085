//! How an instance's data is laid out in the one store: a length-prefixed `(agent, name)`
//! namespace, then a kind byte.
//!
//! `i | u16 agent length | agent | u32 name length | name | kind | rest`
//!
//! The lengths make one instance's namespace never a prefix of another's (`a`+`bc` against
//! `ab`+`c`), whatever bytes a name holds.
//!
//! Beside the instances, the index of their next alarms by due time, one entry per instance
//! with one pending: `w | u64 due (ms since the epoch, big-endian) | u16 agent length | agent |
//! u32 name length | name`. Big-endian times sort as numbers, so a range scan from the start
//! reads the earliest alarms first.

/// The kind byte of the agent state (`this.state`).
const STATE: u8 = b's';
/// The kind byte of the user key-value storage (`ctx.storage()`).
const KV: u8 = b'k';
/// The kind byte of the alarm (`storage.setAlarm`).
const ALARM: u8 = b'a';
/// The kind byte of schedules, by id.
const SCHEDULE: u8 = b't';
/// The kind byte of the schedules' index by due time: `d | u64 due | id`.
const DUE: u8 = b'd';
/// The kind byte of the queue, by sequence number.
const QUEUE: u8 = b'q';
/// The kind byte of the queue's next sequence number.
const QUEUE_TAIL: u8 = b'Q';
/// The kind byte of the instance's entry in the index of alarms (its due time).
const WAKE: u8 = b'w';
/// The kind byte of the MCP servers the instance added (`ctx.mcp()`), by id.
const MCP_SERVER: u8 = b'm';
/// The kind byte of the image of the instance's SQL database (cluster mode, where the
/// database moves between nodes with the agent).
const SQL_IMAGE: u8 = b'S';

/// The first byte of the index of alarms by due time.
const INDEX: u8 = b'w';

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

    /// Where the alarm is kept.
    pub(crate) fn alarm(&self) -> Vec<u8> {
        self.with_kind(ALARM, b"")
    }

    /// Where schedule `id` is kept.
    pub(crate) fn schedule(&self, id: &str) -> Vec<u8> {
        self.with_kind(SCHEDULE, id.as_bytes())
    }

    /// The prefix of every schedule.
    pub(crate) fn schedule_prefix(&self) -> Vec<u8> {
        self.with_kind(SCHEDULE, b"")
    }

    /// The entry of schedule `id`, due at `due`, in the instance's index by due time.
    pub(crate) fn due(&self, due: u64, id: &str) -> Vec<u8> {
        let mut rest = Vec::with_capacity(8 + id.len());
        rest.extend_from_slice(&due.to_be_bytes());
        rest.extend_from_slice(id.as_bytes());
        self.with_kind(DUE, &rest)
    }

    /// The index entries due before `end` start at `due_start()` and end before `due(end, "")`.
    pub(crate) fn due_start(&self) -> Vec<u8> {
        self.with_kind(DUE, b"")
    }

    /// The due time and schedule id of an entry of the index by due time.
    pub(crate) fn due_entry<'k>(&self, full: &'k [u8]) -> Option<(u64, &'k [u8])> {
        let rest = full.strip_prefix(&*self.namespace)?.strip_prefix(&[DUE])?;
        let (due, id) = rest.split_first_chunk::<8>()?;
        Some((u64::from_be_bytes(*due), id))
    }

    /// Where queue item `seq` is kept.
    pub(crate) fn queue(&self, seq: u64) -> Vec<u8> {
        self.with_kind(QUEUE, &seq.to_be_bytes())
    }

    /// The prefix of every queue item.
    pub(crate) fn queue_prefix(&self) -> Vec<u8> {
        self.with_kind(QUEUE, b"")
    }

    /// Where the queue's next sequence number is kept.
    pub(crate) fn queue_tail(&self) -> Vec<u8> {
        self.with_kind(QUEUE_TAIL, b"")
    }

    /// Where MCP server `id` is kept.
    pub(crate) fn mcp_server(&self, id: &str) -> Vec<u8> {
        self.with_kind(MCP_SERVER, id.as_bytes())
    }

    /// The prefix of every MCP server.
    pub(crate) fn mcp_server_prefix(&self) -> Vec<u8> {
        self.with_kind(MCP_SERVER, b"")
    }

    /// Where the image of the instance's SQL database is kept (cluster mode).
    pub(crate) fn sql_image(&self) -> Vec<u8> {
        self.with_kind(SQL_IMAGE, b"")
    }

    /// Where the instance's due time in the index of alarms is kept.
    pub(crate) fn wake(&self) -> Vec<u8> {
        self.with_kind(WAKE, b"")
    }

    /// The instance's entry in the index of alarms, due at `due`.
    pub(crate) fn index_entry(&self, due: u64) -> Vec<u8> {
        let instance = &self.namespace[1..];
        let mut key = Vec::with_capacity(1 + 8 + instance.len());
        key.push(INDEX);
        key.extend_from_slice(&due.to_be_bytes());
        key.extend_from_slice(instance);
        key
    }

    /// The namespace: every key of the instance starts with it.
    pub(crate) fn namespace(&self) -> &[u8] {
        &self.namespace
    }

    fn with_kind(&self, kind: u8, rest: &[u8]) -> Vec<u8> {
        let mut key = Vec::with_capacity(self.namespace.len() + 1 + rest.len());
        key.extend_from_slice(&self.namespace);
        key.push(kind);
        key.extend_from_slice(rest);
        key
    }
}

/// The first key of the index of alarms due at or after `due`.
pub(crate) fn index_from(due: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(INDEX);
    key.extend_from_slice(&due.to_be_bytes());
    key
}

/// The due time, agent and instance name of an entry of the index of alarms; `None` for a
/// key that is not one (or whose names are not UTF-8).
pub(crate) fn parse_index_entry(key: &[u8]) -> Option<(u64, &str, &str)> {
    let rest = key.strip_prefix(&[INDEX])?;
    let (due, rest) = rest.split_first_chunk::<8>()?;
    let (agent_len, rest) = rest.split_first_chunk::<2>()?;
    let (agent, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*agent_len)))?;
    let (name_len, name) = rest.split_first_chunk::<4>()?;
    if name.len() != usize::try_from(u32::from_be_bytes(*name_len)).ok()? {
        return None;
    }
    let (agent, name) = (std::str::from_utf8(agent).ok()?, std::str::from_utf8(name).ok()?);
    Some((u64::from_be_bytes(*due), agent, name))
}

/// The instance a store key belongs to, `(agent, name)`: the one whose namespace holds it, or
/// whose entry of the index of alarms it is. `None` for any other key, and for names that are
/// not UTF-8.
pub(crate) fn instance_of(key: &[u8]) -> Option<(&str, &str)> {
    match key.first()? {
        b'i' => {
            let (agent, name, _) = split_instance(&key[1..])?;
            Some((agent, name))
        }
        &INDEX => parse_index_entry(key).map(|(_, agent, name)| (agent, name)),
        _ => None,
    }
}

/// The length of the namespace a key inside an instance's namespace starts with.
pub(crate) fn namespace_len(key: &[u8]) -> Option<usize> {
    let rest = key.strip_prefix(b"i")?;
    let (_, _, len) = split_instance(rest)?;
    Some(1 + len)
}

/// `u16 len | agent | u32 len | name` at the start of `bytes`, and how many bytes that is.
fn split_instance(bytes: &[u8]) -> Option<(&str, &str, usize)> {
    let (agent_len, rest) = bytes.split_first_chunk::<2>()?;
    let (agent, rest) = rest.split_at_checked(usize::from(u16::from_be_bytes(*agent_len)))?;
    let (name_len, rest) = rest.split_first_chunk::<4>()?;
    let (name, _) = rest.split_at_checked(usize::try_from(u32::from_be_bytes(*name_len)).ok()?)?;
    let len = 2 + agent.len() + 4 + name.len();
    Some((std::str::from_utf8(agent).ok()?, std::str::from_utf8(name).ok()?, len))
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

    #[test]
    fn index_entries_sort_by_due_time_and_parse_back() {
        let a = InstanceKeys::new("reminders", "a\0b");
        let b = InstanceKeys::new("r", "z");
        let early = b.index_entry(5);
        let late = a.index_entry(256);
        assert!(early < late, "the due time sorts first");
        assert!(index_from(5) <= early && early < index_from(6));
        assert_eq!(parse_index_entry(&late), Some((256, "reminders", "a\0b")));
        assert_eq!(parse_index_entry(&early), Some((5, "r", "z")));
        assert_eq!(parse_index_entry(&late[..late.len() - 1]), None, "a cut entry is refused");
        assert_eq!(parse_index_entry(&a.state()), None);
    }

    #[test]
    fn keys_name_their_instance() {
        let keys = InstanceKeys::new("chat-room", "lobby");
        for key in [keys.state(), keys.kv("x"), keys.index_entry(7), keys.namespace().to_vec()] {
            assert_eq!(instance_of(&key), Some(("chat-room", "lobby")), "{key:?}");
        }
        assert_eq!(namespace_len(&keys.kv("x")), Some(keys.namespace().len()));
        assert_eq!(namespace_len(&keys.index_entry(7)), None);
        assert_eq!(instance_of(b"rw:k"), None);
        assert_eq!(instance_of(&keys.state()[..5]), None, "a cut namespace names nobody");
        assert_eq!(instance_of(b""), None);
    }

    #[test]
    fn due_entries_sort_by_time_within_an_instance() {
        let keys = InstanceKeys::new("reminders", "r");
        let (early, late) = (keys.due(9, "zz"), keys.due(10, "aa"));
        assert!(early < late);
        assert!(keys.due_start() < early);
        assert_eq!(keys.due_entry(&late), Some((10, &b"aa"[..])));
        assert_eq!(keys.due_entry(&keys.schedule("aa")), None);
        assert!(!keys.queue(1).starts_with(&keys.queue_tail()));
        assert!(keys.queue(1) < keys.queue(256));
    }
}
