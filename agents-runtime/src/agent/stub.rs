//! [`AgentStub`]: calling another agent in the same process by name, without a socket
//! (`getAgentByName`).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::oneshot;

use crate::client::{CallStream, PendingCall, RpcTransport};
use crate::error::{Error, Result};
use crate::instance::AgentClass;
use crate::instance::directory::Directory;
use crate::instance::event::Event;
use crate::instance::rpc::{Call, CallOutcome, StreamingResponse};
use crate::sync::lock;
use crate::wire::AGENT_UNAVAILABLE;

/// A handle on an agent instance of this server, reached through its mailbox. Wrap it in the
/// agent's generated client for typed calls: `CounterClient::new(stub)`.
///
/// The call is one event of the target instance, so it waits for the target's current turn;
/// two agents that call each other at the same time wait for each other until the call times
/// out (see [`with_timeout`](Self::with_timeout)), so keep calls one-directional. An agent
/// cannot call itself this way at all.
///
/// ```no_run
/// use agents_runtime::prelude::*;
///
/// #[derive(Default)]
/// struct Scoreboard;
///
/// #[agent]
/// impl Scoreboard {
///     #[callable]
///     fn record(&mut self, _ctx: &mut Context<Self>, points: u64) -> Result<u64> {
///         Ok(points)
///     }
/// }
///
/// #[derive(Default)]
/// struct Player;
///
/// #[agent]
/// impl Player {
///     async fn on_message(&mut self, ctx: &mut Context<Self>, _conn: &Connection, _message: Message) -> Result<()> {
///         // `getAgentByName(env.Scoreboard, "global")`, then a typed call on its client.
///         let board = ScoreboardClient::new(ctx.get_agent_by_name::<Scoreboard>("global")?);
///         let recorded = board.record(10).await?;
///         let _ = recorded;
///         Ok(())
///     }
/// }
/// ```
#[derive(Clone)]
pub struct AgentStub {
    directory: Arc<Directory>,
    class: AgentClass,
    name: Arc<str>,
    timeout: Duration,
}

/// How long an in-process call may take by default, as the JS client's calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

impl AgentStub {
    pub(crate) fn new(directory: Arc<Directory>, agent: &str, name: &str) -> Result<Self> {
        let class = directory.classes.get(agent).copied().ok_or_else(|| {
            Error::msg(format!("no agent named `{agent}` is registered on this server"))
        })?;
        Ok(Self { directory, class, name: name.into(), timeout: CALL_TIMEOUT })
    }

    /// How long a call may wait for its answer (default 30 s). Agents that call each other in
    /// a cycle wait for each other; the timeout turns that into an error.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The target's agent route name and instance name.
    pub fn target(&self) -> (&str, &str) {
        (self.class.name, &self.name)
    }

    async fn send(&self, call: Call) -> Result<CallOutcome> {
        let method = call.method.clone();
        let (reply, answer) = oneshot::channel();
        let event = Event::Call { call, reply };
        let exchange = async {
            self.directory
                .dispatch(&self.class, &self.name, event)
                .await
                .ok_or_else(|| Error::msg(AGENT_UNAVAILABLE))?;
            answer.await.map_err(|_| Error::msg("the agent dropped the call (a hook panicked)"))
        };
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or_else(|_| {
            Err(Error::msg(format!(
                "RPC call to {method} on {}/{} timed out after {}ms",
                self.class.name,
                self.name,
                self.timeout.as_millis()
            )))
        })
    }
}

/// An outcome as the caller sees it.
fn answer(method: &str, outcome: CallOutcome) -> Result<Option<Value>> {
    match outcome {
        CallOutcome::Value(value) => Ok(value),
        CallOutcome::Streamed => Err(Error::msg(format!("Method {method} streams: use stream()"))),
        CallOutcome::Error(error) => Err(Error::msg(error)),
        CallOutcome::NotFound => Err(Error::msg(format!("Method {method} does not exist"))),
        CallOutcome::NotCallable => Err(Error::msg(format!("Method {method} is not callable"))),
    }
}

impl RpcTransport for AgentStub {
    async fn call(&self, method: &str, args: Vec<Value>) -> Result<Option<Value>> {
        let outcome = self.send(Call { method: method.to_owned(), args, stream: None }).await?;
        answer(method, outcome)
    }

    async fn stream(&self, method: &str, args: Vec<Value>) -> Result<CallStream> {
        let (items, stream) = CallStream::channel();
        // The method answers with what it would send a socket; route it back.
        let pending = Arc::new(Mutex::new(Some(PendingCall::Stream(items))));
        let route = pending.clone();
        let sink = StreamingResponse::new("in-process".into(), move |answer| {
            let mut slot = lock(&route);
            *slot = slot.take().and_then(|call| call.deliver(answer));
            Ok(())
        });
        let call = Call { method: method.to_owned(), args, stream: Some(sink) };
        match self.send(call).await? {
            CallOutcome::Streamed => Ok(stream),
            other => {
                let error = match answer(method, other) {
                    Err(error) => error.to_string(),
                    Ok(_) => format!("Method {method} does not stream: use call()"),
                };
                if let Some(call) = lock(&pending).take() {
                    call.fail(&error);
                }
                Ok(stream)
            }
        }
    }
}

impl fmt::Debug for AgentStub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentStub")
            .field("agent", &self.class.name)
            .field("name", &self.name)
            .finish()
    }
}
