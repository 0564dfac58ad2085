//! The hooks `#[agent]` knows: names, signatures, and "did you mean" for near misses.

/// One of the seeds' lifecycle hooks, in Rust case.
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
}

impl HookKind {
    pub(crate) const ALL: [Self; 12] = [
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
    ];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::OnStart => "on_start",
            Self::OnRequest => "on_request",
            Self::ConnectionTags => "connection_tags",
            Self::OnConnect => "on_connect",
            Self::OnMessage => "on_message",
            Self::OnClose => "on_close",
            Self::OnError => "on_error",
            Self::ShouldSendProtocolMessages => "should_send_protocol_messages",
            Self::ShouldConnectionBeReadonly => "should_connection_be_readonly",
            Self::OnStateChanged => "on_state_changed",
            Self::ValidateStateChange => "validate_state_change",
            Self::InitialState => "initial_state",
        }
    }

    /// Whether the hook takes `self`. The two that do not run where the agent is busy
    /// (`validate_state_change`, inside `set_state`) or not built yet (`initial_state`).
    pub(crate) fn has_receiver(self) -> bool {
        !matches!(self, Self::ValidateStateChange | Self::InitialState)
    }

    /// Whether the hook may be `async`.
    pub(crate) fn may_be_async(self) -> bool {
        self.has_receiver()
    }

    pub(crate) fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|hook| hook.name() == name)
    }

    /// The parameters after `&mut self`, for messages.
    pub(crate) fn params(self) -> &'static str {
        match self {
            Self::OnStart => "ctx: &mut Context<Self>",
            Self::OnRequest => "ctx: &mut Context<Self>, request: Request",
            Self::ConnectionTags
            | Self::OnConnect
            | Self::ShouldSendProtocolMessages
            | Self::ShouldConnectionBeReadonly => {
                "ctx: &mut Context<Self>, conn: &Connection<S>, conn_ctx: &ConnectionContext"
            }
            Self::OnStateChanged => {
                "ctx: &mut Context<Self>, state: &State, source: StateSource<'_, S>"
            }
            Self::ValidateStateChange => {
                "ctx: &Context<Self>, next: &State, source: StateSource<'_, S>"
            }
            Self::InitialState => "",
            Self::OnMessage => "ctx: &mut Context<Self>, conn: &Connection<S>, message: Message",
            Self::OnClose => {
                "ctx: &mut Context<Self>, conn: &Connection<S>, code: u16, reason: &str, was_clean: bool"
            }
            Self::OnError => "ctx: &mut Context<Self>, conn: Option<&Connection<S>>, error: &Error",
        }
    }

    /// How many parameters follow the receiver.
    pub(crate) fn arity(self) -> usize {
        let params = self.params();
        if params.is_empty() {
            return 0;
        }
        // Top-level commas only: `StateSource<'_, S>` is one parameter.
        let mut depth = 0i32;
        1 + params
            .chars()
            .filter(|c| {
                match c {
                    '<' => depth += 1,
                    '>' => depth -= 1,
                    _ => {}
                }
                *c == ',' && depth == 0
            })
            .count()
    }

    pub(crate) fn signature(self) -> String {
        match (self.has_receiver(), self) {
            (true, _) => format!("fn {}(&mut self, {})", self.name(), self.params()),
            (false, Self::InitialState) => "fn initial_state() -> State".to_owned(),
            (false, _) => format!("fn {}({}) -> Result<()>", self.name(), self.params()),
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
    fn arity_counts_parameters() {
        assert_eq!(HookKind::OnStart.arity(), 1);
        assert_eq!(HookKind::OnMessage.arity(), 3);
        assert_eq!(HookKind::OnClose.arity(), 5);
        assert_eq!(HookKind::InitialState.arity(), 0);
        assert_eq!(HookKind::ValidateStateChange.arity(), 3);
    }
}
