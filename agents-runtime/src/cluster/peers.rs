//! [`Peers`]: the links between nodes. A gateway dials the owner of an agent one of its
//! sockets is for (one link per owner node, reused for every agent it owns) and sends its
//! clients' events; the owner answers on the same link with what its turns send them.
//!
//! A link starts as an HTTP/1.1 upgrade to `agents-rs-link/1` on `/_agents/cluster/link`, so a
//! node serves clients and other nodes on one address; the request names the dialling node
//! and carries the cluster's secret (kept in PostgreSQL, so only nodes of the cluster know
//! it). Then [`Frame`]s flow both ways. Writes go through a buffer that a task of the link
//! writes out, so a frame never waits for the network; a link whose buffer passes
//! [`MAX_BUFFERED`] is given up on (the peer hears it end).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

use super::frames::{Frame, MAX_FRAME, Sink};
use super::node::Lease;
use crate::sync::lock;

/// The path a link's upgrade asks for.
pub(crate) const LINK_PATH: &str = "/_agents/cluster/link";
/// The protocol a link's upgrade asks for.
pub(crate) const LINK_PROTOCOL: &str = "agents-rs-link/1";
/// The header naming the dialling node.
pub(crate) const NODE_HEADER: &str = "x-agents-node";

/// Bytes a link may hold unwritten before it is given up on.
const MAX_BUFFERED: usize = 64 << 20;
/// How long dialling a node (connect and handshake) may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(3);

/// A delivery the link waits for before it reads on (backpressure).
pub(crate) type Delivery<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What a node does with the frames its links bring.
pub(crate) trait Inbound: Send + Sync + 'static {
    /// A frame from a gateway, for an agent this node owns (or is asked to).
    fn gateway_frame<'a>(&'a self, link: &'a Arc<GatewayLink>, frame: Frame) -> Delivery<'a>;
    /// A frame from an owner, for sockets this node holds.
    fn owner_frame<'a>(&'a self, owner: &'a Arc<str>, frame: Frame) -> Delivery<'a>;
    /// A gateway's link ended: its sockets are gone for the agents this node owns.
    fn gateway_lost<'a>(&'a self, link: &'a Arc<GatewayLink>) -> Delivery<'a>;
    /// The link to an owner ended: the sockets relayed to it must find their agent again.
    fn owner_lost<'a>(&'a self, owner: &'a Arc<str>) -> Delivery<'a>;
}

/// The links of one node.
pub(crate) struct Peers {
    me: Arc<str>,
    secret: String,
    lease: Arc<Lease>,
    inbound: OnceLock<Weak<dyn Inbound>>,
    /// Links this node dialled, by owner node id.
    owners: Mutex<HashMap<String, Arc<OwnerLink>>>,
    /// One dial at a time, so one link per owner carries each agent's frames in order.
    dialing: tokio::sync::Mutex<()>,
    /// Links gateways dialled, to end them all when this node is fenced.
    gateways: Mutex<Vec<Weak<GatewayLink>>>,
    next_link: AtomicU64,
}

impl Peers {
    pub(crate) fn new(me: Arc<str>, secret: String, lease: Arc<Lease>) -> Arc<Self> {
        Arc::new(Self {
            me,
            secret,
            lease,
            inbound: OnceLock::new(),
            owners: Mutex::default(),
            dialing: tokio::sync::Mutex::new(()),
            gateways: Mutex::default(),
            next_link: AtomicU64::new(1),
        })
    }

    /// Where incoming frames go (set once, when the server is built).
    pub(crate) fn set_inbound(&self, inbound: Weak<dyn Inbound>) {
        let _ = self.inbound.set(inbound);
    }

    fn inbound(&self) -> Option<Arc<dyn Inbound>> {
        self.inbound.get()?.upgrade()
    }

    /// Whether an upgrade's headers come from a node of this cluster: the dialling node's id.
    pub(crate) fn check(&self, headers: &http::HeaderMap) -> Option<String> {
        let bearer = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let secret = bearer.strip_prefix("Bearer ")?;
        // Compared in full, whatever the first difference: no timing to learn it from.
        let same = secret.len() == self.secret.len()
            && secret.bytes().zip(self.secret.bytes()).fold(0, |acc, (a, b)| acc | (a ^ b)) == 0;
        let node = headers.get(NODE_HEADER)?.to_str().ok()?;
        (same && !node.is_empty()).then(|| node.to_owned())
    }

    /// Serves a link a gateway dialled, on its upgraded stream (`read`: bytes already read
    /// past the request).
    pub(crate) fn serve(self: &Arc<Self>, gateway: String, stream: TcpStream, read: Vec<u8>) {
        let id = self.next_link.fetch_add(1, Ordering::Relaxed);
        let link = Arc::new(GatewayLink {
            id,
            gateway: gateway.into(),
            instances: Mutex::default(),
            out: Writer::new(),
            lease: self.lease.clone(),
        });
        lock(&self.gateways).retain(|link| link.strong_count() > 0);
        lock(&self.gateways).push(Arc::downgrade(&link));
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        tokio::spawn(link.out.clone().write_to(writer));
        let peers = self.clone();
        tokio::spawn(async move {
            let ended = peers.read_link(reader, read, &link.out, Side::Gateway(&link)).await;
            tracing::info!(gateway = %link.gateway, "a gateway's link ended: {ended}");
            link.out.close();
            if let Some(inbound) = peers.inbound() {
                inbound.gateway_lost(&link).await;
            }
        });
    }

    /// The link to owner `node` (under `incarnation`) at `addr`, dialled if there is none.
    pub(crate) async fn owner(
        self: &Arc<Self>,
        node: &str,
        incarnation: i64,
        addr: &str,
    ) -> Result<Arc<OwnerLink>, String> {
        if let Some(link) = self.open_owner(node, incarnation) {
            return Ok(link);
        }
        let _dialing = self.dialing.lock().await;
        if let Some(link) = self.open_owner(node, incarnation) {
            return Ok(link);
        }
        let (stream, read) = tokio::time::timeout(DIAL_TIMEOUT, self.dial(addr))
            .await
            .map_err(|_| format!("dialling node {node} at {addr} timed out"))??;
        let link = Arc::new(OwnerLink { node: node.into(), incarnation, out: Writer::new() });
        let (reader, writer) = stream.into_split();
        tokio::spawn(link.out.clone().write_to(writer));
        lock(&self.owners).insert(node.to_owned(), link.clone());
        let peers = self.clone();
        let owner = link.clone();
        tokio::spawn(async move {
            let ended = peers.read_link(reader, read, &owner.out, Side::Owner(&owner.node)).await;
            tracing::info!(owner = %owner.node, "the link to an owner ended: {ended}");
            owner.out.close();
            {
                let mut owners = lock(&peers.owners);
                if owners.get(&*owner.node).is_some_and(|link| Arc::ptr_eq(link, &owner)) {
                    owners.remove(&*owner.node);
                }
            }
            if let Some(inbound) = peers.inbound() {
                inbound.owner_lost(&owner.node).await;
            }
        });
        Ok(link)
    }

    /// Hands each frame a link brings to the server, waiting for its delivery (a full mailbox
    /// holds the link back), until the link ends or this node ends it (`out` closed); why it
    /// ended.
    async fn read_link(
        &self,
        reader: impl AsyncRead + Unpin,
        read: Vec<u8>,
        out: &Writer,
        from: Side<'_>,
    ) -> String {
        let mut frames = FrameReader::new(reader, read);
        loop {
            let next = tokio::select! {
                next = frames.next() => next,
                () = out.closed() => Err("this node ended it".to_owned()),
            };
            let frame = match next {
                Ok(frame) => frame,
                Err(error) => return error,
            };
            let Some(inbound) = self.inbound() else { return "the server is gone".to_owned() };
            match from {
                Side::Gateway(link) => inbound.gateway_frame(link, frame).await,
                Side::Owner(node) => inbound.owner_frame(node, frame).await,
            }
        }
    }

    fn open_owner(&self, node: &str, incarnation: i64) -> Option<Arc<OwnerLink>> {
        let owners = lock(&self.owners);
        let link = owners.get(node)?;
        if link.incarnation < incarnation {
            // The owner restarted: the old link leads nowhere.
            link.out.close();
            return None;
        }
        // (An older incarnation asked for than the link's: the node restarted since the owner
        // was read. The node now there answers that it does not own the agent.)
        (!link.out.is_closed()).then(|| link.clone())
    }

    /// Ends the links to owners that are not live any more (`live`: node id and incarnation
    /// of every node whose lease holds), so the sockets relayed to them find their agents
    /// again: an owner that stopped (a paused process) keeps its links open, but not its lease.
    pub(crate) fn keep_live(&self, live: &HashMap<String, i64>) {
        for link in lock(&self.owners).values() {
            if live.get(&*link.node) != Some(&link.incarnation) && !link.out.is_closed() {
                tracing::info!(owner = %link.node, "the owner's lease ran out: its link is ended");
                link.out.close();
            }
        }
        // A gateway whose lease ran out (stopped, cut off): its sockets count as gone, and the
        // agents they were in hear them close.
        let gateways: Vec<_> = lock(&self.gateways).iter().filter_map(Weak::upgrade).collect();
        for link in gateways {
            if !live.contains_key(&*link.gateway) && !link.out.is_closed() {
                tracing::info!(gateway = %link.gateway, "the gateway's lease ran out: its link is ended");
                link.out.close();
            }
        }
    }

    /// Connects to `addr` and upgrades to a link: the stream and what was read past the 101.
    async fn dial(&self, addr: &str) -> Result<(TcpStream, Vec<u8>), String> {
        let mut stream =
            TcpStream::connect(addr).await.map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let request = format!(
            "GET {LINK_PATH} HTTP/1.1\r\nHost: {addr}\r\nConnection: upgrade\r\nUpgrade: {LINK_PROTOCOL}\r\n\
             {NODE_HEADER}: {}\r\nAuthorization: Bearer {}\r\n\r\n",
            self.me, self.secret
        );
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("writing to {addr}: {e}"))?;
        let mut head = Vec::with_capacity(256);
        loop {
            let mut chunk = [0u8; 512];
            let n =
                stream.read(&mut chunk).await.map_err(|e| format!("reading from {addr}: {e}"))?;
            if n == 0 {
                return Err(format!("{addr} closed the link before answering"));
            }
            head.extend_from_slice(&chunk[..n]);
            if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                let status = head.split(|&b| b == b'\n').next().unwrap_or_default();
                if !status.starts_with(b"HTTP/1.1 101") {
                    let status = String::from_utf8_lossy(status).trim().to_owned();
                    return Err(format!("{addr} refused the link: {status}"));
                }
                return Ok((stream, head[end + 4..].to_vec()));
            }
            if head.len() > 8192 {
                return Err(format!("{addr} answered with an endless head"));
            }
        }
    }

    /// Ends every link gateways dialled (this node was fenced: their sockets go elsewhere).
    pub(crate) fn drop_gateways(&self) {
        for link in lock(&self.gateways).drain(..).filter_map(|link| link.upgrade()) {
            link.out.close();
        }
    }
}

/// Which end of a link this node reads: frames from a gateway, or from an owner.
#[derive(Clone, Copy)]
enum Side<'a> {
    Gateway(&'a Arc<GatewayLink>),
    Owner(&'a Arc<str>),
}

/// A link this node dialled to an owner: it sends its clients' events on it.
pub(crate) struct OwnerLink {
    pub(crate) node: Arc<str>,
    incarnation: i64,
    out: Arc<Writer>,
}

impl OwnerLink {
    /// Whether the link still carries frames.
    pub(crate) fn is_open(&self) -> bool {
        !self.out.is_closed()
    }

    /// Sends `frame`; `false` if the link is gone.
    pub(crate) fn send(&self, frame: &Frame) -> bool {
        self.out.send(frame)
    }
}

/// A link a gateway dialled to this node: the owner's frames for its sockets go back on it.
pub(crate) struct GatewayLink {
    /// Unique among this node's links.
    pub(crate) id: u64,
    pub(crate) gateway: Arc<str>,
    /// The instances it brought sockets for: told when it ends.
    pub(crate) instances: Mutex<HashSet<(&'static str, String)>>,
    out: Arc<Writer>,
    lease: Arc<Lease>,
}

impl Sink for GatewayLink {
    fn send(&self, frame: Frame) -> bool {
        // A node whose lease ran out speaks for no agent.
        self.lease.holding().is_some() && self.out.send(&frame)
    }

    fn abort(&self) {
        self.out.close();
    }
}

impl GatewayLink {
    /// Sends `frame` whatever the lease (a `NotOwner` answer).
    pub(crate) fn answer(&self, frame: &Frame) {
        self.out.send(frame);
    }
}

/// A link's write side: frames are encoded into a buffer that a task writes out.
struct Writer {
    buffer: Mutex<(BytesMut, bool)>,
    ready: Notify,
    closed: AtomicBool,
    /// The link was closed: its reader stops too.
    ended: Notify,
}

impl Writer {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            buffer: Mutex::default(),
            ready: Notify::new(),
            closed: AtomicBool::new(false),
            ended: Notify::new(),
        })
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    fn send(&self, frame: &Frame) -> bool {
        let mut buffer = lock(&self.buffer);
        if buffer.1 {
            return false;
        }
        let was_empty = buffer.0.is_empty();
        frame.encode(&mut buffer.0);
        if buffer.0.len() > MAX_BUFFERED {
            drop(buffer);
            tracing::warn!("a node link is not taking frames: giving up on it");
            self.close();
            return false;
        }
        drop(buffer);
        if was_empty {
            self.ready.notify_one();
        }
        true
    }

    fn close(&self) {
        lock(&self.buffer).1 = true;
        self.closed.store(true, Ordering::Release);
        self.ready.notify_one();
        self.ended.notify_waiters();
    }

    /// Resolves once the link is closed.
    async fn closed(&self) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.is_closed() {
                return;
            }
            ended.await;
        }
    }

    /// Writes what is buffered until the link closes (then shuts the stream down).
    async fn write_to(self: Arc<Self>, mut stream: impl AsyncWrite + Unpin) {
        loop {
            let (bytes, closed) = {
                let mut buffer = lock(&self.buffer);
                (std::mem::take(&mut buffer.0), buffer.1)
            };
            if closed {
                let _ = stream.shutdown().await;
                return;
            }
            if bytes.is_empty() {
                self.ready.notified().await;
                continue;
            }
            if stream.write_all(&bytes).await.is_err() {
                self.close();
                return;
            }
        }
    }
}

/// Reads a link's frames.
struct FrameReader<R> {
    stream: R,
    buffer: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    fn new(stream: R, read: Vec<u8>) -> Self {
        Self { stream, buffer: BytesMut::from(&read[..]) }
    }

    /// The next frame; an error when the stream ends or a frame is bad.
    async fn next(&mut self) -> Result<Frame, String> {
        loop {
            let buffer = &mut self.buffer;
            if buffer.len() >= 4 {
                let len = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
                if len > MAX_FRAME {
                    return Err(format!("a frame of {len} bytes"));
                }
                if buffer.len() >= 4 + len {
                    buffer.advance(4);
                    return Frame::decode(buffer.split_to(len).freeze());
                }
                buffer.reserve(4 + len - buffer.len());
            }
            let n = self.stream.read_buf(&mut self.buffer).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the link closed".into());
            }
        }
    }
}
