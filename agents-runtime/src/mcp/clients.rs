//! The owner of an instance's MCP servers: made on first use, it moves with the instance's
//! connections while it hibernates (so the sessions stay), connects to the servers on the
//! list when the instance starts, and stops every connection when it is dropped (the instance
//! leaves memory).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::connection;
use super::http;
use super::stored;
use super::table::Shared;
use crate::error::{Error, Result};
use crate::instance::directory::Directory;
use crate::instance::shared::Instance;
use crate::message::Message;
use crate::wire::protocol;

/// An instance's MCP servers: `None` until it has some.
#[derive(Default)]
pub(crate) struct McpClients {
    shared: Option<Arc<Shared>>,
    /// Whether the list was read from storage (on the instance's first start).
    loaded: bool,
    /// Whether the next broadcast goes out even with no change (after a restart).
    announce: AtomicBool,
}

impl McpClients {
    /// The instance starts: on its first start it connects to the servers on its list; when
    /// it wakes, it tries again the ones that failed a while ago (as the SDK does on every
    /// start). A list that cannot be read is read again at the next start.
    pub(crate) fn start(&mut self, directory: &Directory, instance: &Arc<Instance>) {
        if self.loaded {
            if let Some(shared) = &self.shared {
                for id in shared.failed() {
                    if let Some((server, generation)) = shared.renew(&id, None) {
                        connection::connect(shared, server, generation);
                    }
                }
            }
            return;
        }
        let loaded = stored::load(instance).and_then(|servers| {
            if servers.is_empty() {
                return Ok(());
            }
            let shared = self.shared(directory, instance)?;
            // Servers added meanwhile (after a load that failed) are listed already.
            for server in servers.into_iter().filter(|server| !shared.contains(&server.id)) {
                let generation = shared.insert(server.clone());
                connection::connect(shared, server, generation);
            }
            Ok(())
        });
        match loaded {
            Ok(()) => self.loaded = true,
            Err(e) => tracing::error!(
                name = %instance.name,
                "the MCP servers cannot be read or reached; the next start tries again: {e}"
            ),
        }
    }

    /// The instance restarts from what is durable (an add or a removal may have been lost
    /// with the writes): the servers in memory are forgotten, their connections stop, and
    /// the list is read again; if it had servers, the next broadcast goes out whatever the
    /// list holds now.
    pub(crate) fn reset(&mut self) {
        let had_servers = self.shared.is_some();
        *self = Self::default();
        self.announce.store(had_servers, Ordering::Release);
    }

    /// The table, made on first use.
    pub(crate) fn shared(
        &mut self,
        directory: &Directory,
        instance: &Arc<Instance>,
    ) -> Result<&Arc<Shared>> {
        if self.shared.is_none() {
            let client = http::client(directory).map_err(Error::msg)?;
            let loopback = directory.limits.mcp_loopback;
            self.shared = Some(Arc::new(Shared::new(instance.clone(), client, loopback)));
        }
        Ok(self.shared.as_ref().expect("made above"))
    }

    /// The table, if the instance has MCP servers (or had).
    pub(crate) fn get(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// The `cf_agent_mcp_servers` frame a new connection gets.
    pub(crate) fn frame(&self) -> Message {
        match &self.shared {
            Some(shared) => shared.frame(),
            None => protocol::mcp_servers(),
        }
    }

    /// The frame to broadcast, if the servers changed since the last one (or the instance
    /// restarted).
    pub(crate) fn take_broadcast(&self) -> Option<Message> {
        let announce = self.announce.swap(false, Ordering::AcqRel);
        match &self.shared {
            Some(shared) => shared.take_broadcast().or_else(|| announce.then(|| shared.frame())),
            None => announce.then(protocol::mcp_servers),
        }
    }
}

impl Drop for McpClients {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            shared.close_all();
        }
    }
}
