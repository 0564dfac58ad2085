//! [`Edge`]: what the network edge's tasks share: the directory of instances, the static
//! assets, the open sockets and the parking lot.

use std::sync::{Arc, OnceLock};

use crate::instance::Directory;
use crate::limits::Limits;
use crate::outbox::{OpenSockets, SocketSlot};
use crate::storage::durability::GroupCommit;
use crate::transport::assets::Assets;
use crate::transport::lot::ParkingLot;
use crate::wire::budget::InputBudget;

/// The network edge of one server.
pub(crate) struct Edge {
    /// The instances, and what their hosts share.
    pub(crate) directory: Arc<Directory>,
    pub(crate) assets: Assets,
    /// The open sockets: counted, and reached at shutdown.
    pub(crate) sockets: Arc<OpenSockets>,
    /// Where hibernated instances' idle sockets wait, started by the first to park (`None`
    /// inside if it could not be: sockets then stay unparked).
    parking: OnceLock<Option<ParkingLot>>,
    /// What the sockets' unfinished messages may hold together.
    pub(crate) input: Arc<InputBudget>,
}

impl Edge {
    pub(crate) fn new(directory: Arc<Directory>, assets: Assets) -> Self {
        let limits = &directory.limits;
        let input = InputBudget::new(
            limits.max_unfinished_input,
            limits.message_timeout,
            limits.max_message_size,
            limits.read_buffer_size,
        );
        let input = Arc::new(input);
        Self { directory, assets, sockets: Arc::default(), parking: OnceLock::new(), input }
    }

    pub(crate) fn limits(&self) -> &Limits {
        &self.directory.limits
    }

    pub(crate) fn commits(&self) -> &Arc<GroupCommit> {
        &self.directory.commits
    }

    /// A slot for one more WebSocket, or `None` at `max_connections`. Freed on drop.
    pub(crate) fn admit_connection(&self) -> Option<SocketSlot> {
        self.sockets.admit(self.limits().max_connections)
    }

    /// The server's parking lot, started by the first socket to park; `None` if it could
    /// not be.
    pub(crate) fn parking_lot(&self) -> Option<&ParkingLot> {
        let lot = self.parking.get_or_init(|| {
            ParkingLot::start(Arc::downgrade(&self.sockets))
                .inspect_err(|e| tracing::warn!("sockets will not park: {e}"))
                .ok()
        });
        lot.as_ref()
    }

    /// The parking lot if one was started.
    pub(crate) fn parked_lot(&self) -> Option<&ParkingLot> {
        self.parking.get().and_then(Option::as_ref)
    }
}
