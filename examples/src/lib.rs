//! The reference agents: the Rust versions of the Cloudflare seeds' examples, each behaving
//! as its namesake. `main.rs` serves them all; the integration tests drive them through real
//! sockets; the book includes them.

pub mod agents;
pub mod cli;

use agents_runtime::ServerBuilder;

pub use agents::{
    Catalog, CatalogClient, CatalogEntry, ChatAgent, ChatRoom, Counter, CounterClient,
    CounterState, FileAgent, HibernatingCounter, HibernatingCounterState, JsNumber, MyAgent, Note,
    Notebook, NotebookClient, PresenceAgent, Reminders, RemindersClient, RemindersState,
    SecureAgent, TagsAgent, ToolInfo, Toolbox, ToolboxClient,
};

/// Lets jemalloc (the binaries' allocator) give freed pages back to the system from a
/// background thread, within its 10-second decay, instead of only when the program next
/// allocates. This is what brings a server's memory down after hibernated instances park their
/// sockets; a binary that keeps glibc's malloc keeps most of those pages instead (see the
/// book's production chapter).
pub fn return_freed_memory() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!("jemalloc's background purging is off: {e}");
    }
}

/// A server builder hosting every reference agent (registered explicitly, so a binary that
/// links this crate gets all of them whatever the linker keeps) and the demo page at `/`.
pub fn server() -> ServerBuilder {
    agents_runtime::Server::builder()
        .agent::<MyAgent>()
        .agent::<ChatRoom>()
        .agent::<PresenceAgent>()
        .agent::<ChatAgent>()
        .agent::<SecureAgent>()
        .agent::<TagsAgent>()
        .agent::<FileAgent>()
        .agent::<Counter>()
        .agent::<HibernatingCounter>()
        .agent::<Notebook>()
        .agent::<Reminders>()
        .agent::<Catalog>()
        .agent::<Toolbox>()
        // ANCHOR: demo_assets
        // The demo page (examples/web): a chat room with presence and the Counter, written
        // against the official `agents` client and bundled by esbuild into dist/app.js.
        .asset("/", "text/html; charset=utf-8", &include_bytes!("../web/index.html")[..])
        .asset("/style.css", "text/css; charset=utf-8", &include_bytes!("../web/style.css")[..])
        .asset(
            "/app.js",
            "text/javascript; charset=utf-8",
            &include_bytes!("../web/dist/app.js")[..],
        )
    // ANCHOR_END: demo_assets
}

/// Milliseconds since the Unix epoch (JavaScript's `Date.now()`).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX))
}
