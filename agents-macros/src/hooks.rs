//! The hooks `#[agent]` knows: names, signatures, and "did you mean" for near misses.
//!
//! [`HookKind::spec`] is the one table of the hook signatures: the checks of a hook method
//! (`model.rs`), the expected signature in messages, and the generated `Agent` method that
//! calls the hook (`expand.rs`) are all read from it.

use proc_macro2::TokenStream;
use quote::quote;

/// One of the agent lifecycle hooks, in Rust case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HookKind {
    OnStart,
    OnRequest,
    ConnectionTags,
    OnConnect,
    OnMessage,
    OnClose,
    OnError,
    ShouldSendProtocolMessages,
    ShouldConnectionBeReadonly,
    OnStateChanged,
    ValidateStateChange,
    InitialState,
    OnAlarm,
}

/// One parameter of a hook after the receiver: its name and type.
pub(crate) type Param = (&'static str, ParamType);

/// The type of a hook parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ParamType {
    /// `&mut Context<Self>`.
    Context,
    /// `&Context<Self>`, for a hook that only reads.
    ContextRef,
    Request,
    /// `&Connection<S>`.
    Connection,
    /// `Option<&Connection<S>>`.
    MaybeConnection,
    /// `&ConnectionContext`.
    ConnectionContext,
    Message,
    /// `u16`: a close code.
    Code,
    /// `&str`.
    Text,
    Bool,
    /// `&State`: the agent state.
    State,
    /// `StateSource<'_, S>`.
    StateSource,
    /// `&Error`.
    Error,
    /// `AlarmInfo`.
    AlarmInfo,
}

impl ParamType {
    /// The type as messages write it: `S` is the connection state, `State` the agent state.
    pub(crate) fn written(self) -> &'static str {
        match self {
            Self::Context => "&mut Context<Self>",
            Self::ContextRef => "&Context<Self>",
            Self::Request => "Request",
            Self::Connection => "&Connection<S>",
            Self::MaybeConnection => "Option<&Connection<S>>",
            Self::ConnectionContext => "&ConnectionContext",
            Self::Message => "Message",
            Self::Code => "u16",
            Self::Text => "&str",
            Self::Bool => "bool",
            Self::State => "&State",
            Self::StateSource => "StateSource<'_, S>",
            Self::Error => "&Error",
            Self::AlarmInfo => "AlarmInfo",
        }
    }

    /// The type in the generated `Agent` method, the runtime named by `rt`.
    pub(crate) fn tokens(self, rt: &syn::Path) -> TokenStream {
        let conn = quote!(&#rt::Connection<Self::ConnectionState>);
        match self {
            Self::Context => quote!(&mut #rt::Context<Self>),
            Self::ContextRef => quote!(&#rt::Context<Self>),
            Self::Request => quote!(#rt::Request),
            Self::Connection => conn,
            Self::MaybeConnection => quote!(::core::option::Option<#conn>),
            Self::ConnectionContext => quote!(&#rt::ConnectionContext),
            Self::Message => quote!(#rt::Message),
            Self::Code => quote!(u16),
            Self::Text => quote!(&str),
            Self::Bool => quote!(bool),
            Self::State => quote!(&Self::State),
            Self::StateSource => quote!(#rt::StateSource<'_, Self::ConnectionState>),
            Self::Error => quote!(&#rt::Error),
            Self::AlarmInfo => quote!(#rt::storage::AlarmInfo),
        }
    }
}

/// What a hook's result converts into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Returns {
    Unit,
    Response,
    /// `Vec<String>`: connection tags.
    Tags,
    Bool,
    /// The agent state.
    State,
}

impl Returns {
    /// The type in the generated `Agent` method, the runtime named by `rt`.
    pub(crate) fn tokens(self, rt: &syn::Path) -> TokenStream {
        match self {
            Self::Unit => quote!(()),
            Self::Response => quote!(#rt::Response),
            Self::Tags => quote!(::std::vec::Vec<::std::string::String>),
            Self::Bool => quote!(bool),
            Self::State => quote!(Self::State),
        }
    }
}

/// One row of the hook table.
struct Spec {
    name: &'static str,
    /// Why the hook takes no `self`; `None` for the hooks that take `&mut self`.
    no_self_because: Option<&'static str>,
    /// The parameters after the receiver, in order.
    params: &'static [Param],
    returns: Returns,
}

const CTX: Param = ("ctx", ParamType::Context);
const CONN: Param = ("conn", ParamType::Connection);
const CONN_CTX: Param = ("conn_ctx", ParamType::ConnectionContext);
const SOURCE: Param = ("source", ParamType::StateSource);

impl HookKind {
    pub(crate) const ALL: [Self; 13] = [
        Self::OnStart,
        Self::OnRequest,
        Self::ConnectionTags,
        Self::OnConnect,
        Self::OnMessage,
        Self::OnClose,
        Self::OnError,
        Self::ShouldSendProtocolMessages,
        Self::ShouldConnectionBeReadonly,
        Self::OnStateChanged,
        Self::ValidateStateChange,
        Self::InitialState,
        Self::OnAlarm,
    ];

    /// The hook's signature. The runtime's `Agent` trait declares the same methods; the
    /// generated impl of it fails to compile if the two disagree.
    fn spec(self) -> Spec {
        use ParamType as T;
        const fn with_self(name: &'static str, params: &'static [Param], returns: Returns) -> Spec {
            Spec { name, no_self_because: None, params, returns }
        }
        match self {
            Self::OnStart => with_self("on_start", &[CTX], Returns::Unit),
            Self::OnRequest => {
                with_self("on_request", &[CTX, ("request", T::Request)], Returns::Response)
            }
            Self::ConnectionTags => {
                with_self("connection_tags", &[CTX, CONN, CONN_CTX], Returns::Tags)
            }
            Self::OnConnect => with_self("on_connect", &[CTX, CONN, CONN_CTX], Returns::Unit),
            Self::OnMessage => {
                with_self("on_message", &[CTX, CONN, ("message", T::Message)], Returns::Unit)
            }
            Self::OnClose => with_self(
                "on_close",
                &[CTX, CONN, ("code", T::Code), ("reason", T::Text), ("was_clean", T::Bool)],
                Returns::Unit,
            ),
            Self::OnError => with_self(
                "on_error",
                &[CTX, ("conn", T::MaybeConnection), ("error", T::Error)],
                Returns::Unit,
            ),
            Self::ShouldSendProtocolMessages => {
                with_self("should_send_protocol_messages", &[CTX, CONN, CONN_CTX], Returns::Bool)
            }
            Self::ShouldConnectionBeReadonly => {
                with_self("should_connection_be_readonly", &[CTX, CONN, CONN_CTX], Returns::Bool)
            }
            Self::OnStateChanged => {
                with_self("on_state_changed", &[CTX, ("state", T::State), SOURCE], Returns::Unit)
            }
            Self::OnAlarm => with_self("on_alarm", &[CTX, ("info", T::AlarmInfo)], Returns::Unit),
            Self::ValidateStateChange => Spec {
                name: "validate_state_change",
                no_self_because: Some("it runs inside `set_state`, while the agent is busy"),
                params: &[("ctx", T::ContextRef), ("next", T::State), SOURCE],
                returns: Returns::Unit,
            },
            Self::InitialState => Spec {
                name: "initial_state",
                no_self_because: Some("it runs before the agent is built"),
                params: &[],
                returns: Returns::State,
            },
        }
    }

    pub(crate) fn name(self) -> &'static str {
        self.spec().name
    }

    /// Whether the hook takes `self`. The two that do not run where the agent is busy
    /// (`validate_state_change`, inside `set_state`) or not built yet (`initial_state`).
    pub(crate) fn has_receiver(self) -> bool {
        self.spec().no_self_because.is_none()
    }

    /// Why the hook takes no `self`, for the hooks that take none.
    pub(crate) fn no_self_because(self) -> Option<&'static str> {
        self.spec().no_self_because
    }

    /// Whether the hook may be `async`.
    pub(crate) fn may_be_async(self) -> bool {
        self.has_receiver()
    }

    /// Whether the hook only makes sense for an agent with `#[agent(state = ...)]`.
    pub(crate) fn needs_state(self) -> bool {
        self.spec().params.iter().any(|(_, ty)| *ty == ParamType::State)
            || self.spec().returns == Returns::State
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|hook| hook.name() == name)
    }

    /// The parameters after the receiver, in order.
    pub(crate) fn params(self) -> &'static [Param] {
        self.spec().params
    }

    /// What the hook's result converts into.
    pub(crate) fn returns(self) -> Returns {
        self.spec().returns
    }

    /// How many parameters follow the receiver.
    pub(crate) fn arity(self) -> usize {
        self.params().len()
    }

    /// The signature as messages write it: `fn on_message(&mut self, ctx: ..., ...)`.
    pub(crate) fn signature(self) -> String {
        let params: Vec<String> =
            self.params().iter().map(|(name, ty)| format!("{name}: {}", ty.written())).collect();
        let params = params.join(", ");
        match (self.has_receiver(), self.returns()) {
            (true, _) => format!("fn {}(&mut self, {params})", self.name()),
            (false, Returns::State) => format!("fn {}({params}) -> State", self.name()),
            (false, _) => format!("fn {}({params}) -> Result<()>", self.name()),
        }
    }
}

/// The hook a method name was probably meant to be: a camelCase spelling of it
/// (`onMessage`), the JavaScript name (`get_connection_tags`), or a one-letter slip
/// (`on_mesage`, `on_strat`). Names that only extend a hook's (`on_closed`, `on_messages`) or
/// differ by more (`on_state`) are helpers, not typos.
pub(crate) fn near_miss(name: &str) -> Option<HookKind> {
    if HookKind::from_name(name).is_some() || name.len() < 5 {
        return None;
    }
    let snake = to_snake_case(name);
    if let Some(hook) = HookKind::from_name(&snake) {
        return Some(hook);
    }
    if snake == "get_connection_tags" {
        return Some(HookKind::ConnectionTags);
    }
    HookKind::ALL
        .into_iter()
        .find(|hook| !snake.starts_with(hook.name()) && edit_distance(&snake, hook.name()) == 1)
}

fn to_snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Optimal-string-alignment distance over bytes (hook names are ASCII): insertions,
/// deletions, substitutions and swaps of two neighbours each count one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best =
                (rows[i - 1][j] + 1).min(rows[i][j - 1] + 1).min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn near_misses_are_found() {
        assert_eq!(near_miss("on_mesage"), Some(HookKind::OnMessage));
        assert_eq!(near_miss("onMessage"), Some(HookKind::OnMessage));
        assert_eq!(near_miss("on_conect"), Some(HookKind::OnConnect));
        assert_eq!(near_miss("get_connection_tags"), Some(HookKind::ConnectionTags));
        assert_eq!(near_miss("connection_tag"), Some(HookKind::ConnectionTags));
        assert_eq!(near_miss("onClose"), Some(HookKind::OnClose));
        assert_eq!(near_miss("on_strat"), Some(HookKind::OnStart));
    }

    #[test]
    fn hooks_and_unrelated_helpers_are_not_near_misses() {
        for name in
            ["on_message", "broadcast_presence", "get_presence", "notify_admins", "new", "handle"]
        {
            assert_eq!(near_miss(name), None, "{name}");
        }
    }

    #[test]
    fn signatures_are_written_from_the_table() {
        assert_eq!(
            HookKind::OnStart.signature(),
            "fn on_start(&mut self, ctx: &mut Context<Self>)"
        );
        assert_eq!(
            HookKind::OnClose.signature(),
            "fn on_close(&mut self, ctx: &mut Context<Self>, conn: &Connection<S>, code: u16, reason: &str, was_clean: bool)"
        );
        assert_eq!(
            HookKind::ValidateStateChange.signature(),
            "fn validate_state_change(ctx: &Context<Self>, next: &State, source: StateSource<'_, S>) -> Result<()>"
        );
        assert_eq!(HookKind::InitialState.signature(), "fn initial_state() -> State");
    }

    #[test]
    fn state_hooks_need_a_state() {
        let needing: Vec<_> = HookKind::ALL.into_iter().filter(|hook| hook.needs_state()).collect();
        assert_eq!(
            needing,
            [HookKind::OnStateChanged, HookKind::ValidateStateChange, HookKind::InitialState]
        );
    }

    #[test]
    fn arity_counts_parameters() {
        assert_eq!(HookKind::OnStart.arity(), 1);
        assert_eq!(HookKind::OnMessage.arity(), 3);
        assert_eq!(HookKind::OnClose.arity(), 5);
        assert_eq!(HookKind::InitialState.arity(), 0);
        assert_eq!(HookKind::ValidateStateChange.arity(), 3);
    }
}
