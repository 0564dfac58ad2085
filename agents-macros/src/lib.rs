//! The `#[agent]` attribute. Use it through `agents_runtime` (`agents_runtime::agent`), whose
//! documentation describes the hooks and their signatures.

mod attr;
mod callable;
mod callback;
mod client;
mod expand;
mod hooks;
mod kebab;
mod model;
mod sql;
mod typescript;

use proc_macro::TokenStream;

/// Turns an inherent impl block into an agent: the hooks found there (`on_start`,
/// `on_request`, `connection_tags`, `on_connect`, `on_message`, `on_close`, `on_error`,
/// `on_alarm`, `should_send_protocol_messages`, `should_connection_be_readonly`,
/// `initial_state`, `validate_state_change`, `on_state_changed`), its `#[callable]` methods
/// and its `#[callback]` methods make up its `agents_runtime::Agent` implementation; the agent
/// is registered with the server, and a typed `{Agent}Client` is generated next to it, with
/// `{Agent}Callback` when it has callbacks.
///
/// Arguments, all optional:
/// - `name = "route-name"`: the route (default: the type name in kebab-case,
///   `ChatRoom` → `chat-room`);
/// - `state = Type`: the synced agent state (`Serialize + DeserializeOwned + Send + Sync`);
/// - `connection_state = Type` (default `()`): the per-connection state, which must be
///   `Serialize + DeserializeOwned + Send`;
/// - `rename_all = "camelCase"`: the wire names of the callables;
/// - `typescript`: declare a TypeScript interface for the agent;
/// - `hibernate = false`: keep the instance in memory while it has connections;
/// - `durability = "relaxed"`: frames do not wait for the agent's writes to be on disk
///   (default `"confirmed"`);
/// - `crate = path` or `crate = "path"`: the path the generated code names the runtime by
///   (default `::agents_runtime`), for a crate that reaches the runtime through a re-export or
///   under another name. `#[callable]` markers are read under that name whatever the path.
#[proc_macro_attribute]
pub fn agent(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::agent(args.into(), item.into()).into()
}

/// Marks a method of an `#[agent]` impl block as a callback that schedules and the queue call
/// (the `callback` of `this.schedule(when, callback, payload)`): `#[callback]`. Its parameters
/// after `&mut self` are an optional `ctx: &mut Context<Self>`, an optional payload of any
/// serde type, and an optional `&Schedule` or `&QueueItem`. `#[agent]` reads and removes it,
/// and generates `{Agent}Callback` with one variant per callback; used anywhere else it is an
/// error.
#[proc_macro_attribute]
pub fn callback(_args: TokenStream, item: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        proc_macro2::Span::call_site(),
        "#[callback] only works on methods inside an #[agent] impl block",
    )
    .to_compile_error();
    let item = proc_macro2::TokenStream::from(item);
    quote::quote!(#error #item).into()
}

/// Runs an SQL statement on the instance's database with values written in place:
/// `sql!(ctx, "SELECT value FROM cache WHERE key = {key}")`, like the Agents SDK's
/// ``this.sql`… ${key}` `` template. Each `{expr}` is bound as a parameter (`?1`, `?2`…),
/// never spliced into the text; `{{` and `}}` are literal braces. It evaluates to
/// `Result<SqlCursor, SqlError>`, as `ctx.sql().exec(…)`. The expressions are evaluated first,
/// in order, so they may borrow `ctx`; an expression holding `}` goes into a variable first.
#[proc_macro]
pub fn sql(input: TokenStream) -> TokenStream {
    sql::expand(input.into()).into()
}

/// Implements `agents_runtime::typescript::TypeScript` for a struct or enum: the TypeScript
/// type matching its JSON form, following serde's `rename_all`, `rename` and `skip`. Needed
/// for the state and callable types of a `#[agent(typescript)]` agent. The generated impl
/// names the runtime as `::agents_runtime`.
#[proc_macro_derive(TypeScript, attributes(serde))]
pub fn derive_typescript(item: TokenStream) -> TokenStream {
    typescript::derive(item.into()).into()
}

/// Marks a method of an `#[agent]` impl block as callable by clients over RPC
/// (`@callable()`): `#[callable]`, `#[callable(streaming)]`,
/// `#[callable(name = "wireName", description = "...")]`. `#[agent]` reads and removes it; used
/// anywhere else it is an error.
#[proc_macro_attribute]
pub fn callable(_args: TokenStream, item: TokenStream) -> TokenStream {
    let error = syn::Error::new(
        proc_macro2::Span::call_site(),
        "#[callable] only works on methods inside an #[agent] impl block",
    )
    .to_compile_error();
    let item = proc_macro2::TokenStream::from(item);
    quote::quote!(#error #item).into()
}
