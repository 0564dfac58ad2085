//! Code generation: the `Agent` impl (hooks, state, RPC dispatch) and the registration.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ImplItem, ItemImpl};

use crate::attr::AgentArgs;
use crate::callable::{CallableDef, Output};
use crate::hooks::HookKind;
use crate::model::{AgentDef, Errors, HookDef};

/// `#[agent(args)] item` → the item (less its `#[callable]` markers), plus its `Agent` impl
/// and registration. On error the item is still emitted, so the user's code keeps resolving.
pub(crate) fn agent(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut item_impl = match syn::parse2::<ItemImpl>(item.clone()) {
        Ok(item_impl) => item_impl,
        Err(_) => {
            let error = syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[agent] goes on the agent's impl block: `#[agent] impl MyAgent { ... }`",
            );
            let error = error.to_compile_error();
            return quote! { #item #error };
        }
    };
    let mut errors = Errors::default();
    // Bad arguments are reported, and the agent is still generated with the defaults.
    let args = syn::parse2::<AgentArgs>(args).unwrap_or_else(|error| {
        errors.push(error);
        AgentArgs::default()
    });
    let generated = AgentDef::from_syntax(args, &item_impl, &mut errors).map(|def| expand(&def));
    strip_callable_markers(&mut item_impl);
    let errors = errors.into_compile_error();
    quote! { #item_impl #generated #errors }
}

/// `#[callable]` is read by `#[agent]`; the compiler never needs to see it.
fn strip_callable_markers(item: &mut ItemImpl) {
    for impl_item in &mut item.items {
        if let ImplItem::Fn(method) = impl_item {
            method.attrs.retain(|attr| {
                !attr.path().is_ident("callable") && !attr.path().is_ident("callback")
            });
        }
    }
}

fn expand(def: &AgentDef) -> TokenStream {
    let rt = &def.runtime;
    let self_ty = &def.self_ty;
    let route_name = &def.route_name;
    let connection_state = match &def.connection_state {
        Some(ty) => quote_spanned!(ty.span()=> #ty),
        None => quote!(()),
    };
    let (state, has_state) = match &def.state {
        Some(ty) => (quote_spanned!(ty.span()=> #ty), true),
        None => (quote!(()), false),
    };
    let create = quote_spanned! {self_ty.span()=>
        fn create() -> Self {
            <Self as ::core::default::Default>::default()
        }
    };
    let initial_state = initial_state_method(def);
    let hooks = def
        .hooks
        .iter()
        .filter(|hook| hook.kind != HookKind::InitialState)
        .map(|hook| hook_method(hook, rt));
    let callables = def.callables.iter().map(|callable| {
        let name = &callable.wire_name;
        let streaming = callable.streaming;
        let description = match &callable.description {
            Some(text) => quote!(::core::option::Option::Some(#text)),
            None => quote!(::core::option::Option::None),
        };
        quote!(#rt::CallableInfo { name: #name, description: #description, streaming: #streaming })
    });
    let call = call_method(def);
    let client = crate::client::render(def);
    let callback_enum = crate::callback::render_enum(def);
    let run_callback = crate::callback::render_dispatch(def);
    let typescript = match (&def.self_ty, def.typescript) {
        (syn::Type::Path(path), true) => path
            .path
            .segments
            .last()
            .map(|segment| crate::typescript::agent_interface(def, &segment.ident.to_string())),
        _ => None,
    };
    let hibernate = def.hibernate;
    let stateful = has_state.then(|| quote!(impl #rt::StatefulAgent for #self_ty {}));
    let durability = if def.relaxed { quote!(Relaxed) } else { quote!(Confirmed) };
    quote! {
        #client

        #callback_enum

        const _: () = {
            impl #rt::Agent for #self_ty {
                const NAME: &'static str = #route_name;
                const HAS_STATE: bool = #has_state;
                const CALLABLES: &'static [#rt::CallableInfo] = &[#(#callables),*];
                const HIBERNATE: bool = #hibernate;
                const DURABILITY: #rt::storage::Durability = #rt::storage::Durability::#durability;
                type ConnectionState = #connection_state;
                type State = #state;
                #create
                #initial_state
                #(#hooks)*
                #call
                #run_callback
            }

            #stateful

            #rt::__private::inventory::submit! {
                #rt::__private::AgentRegistration::of::<#self_ty>()
            }

            #typescript
        };
    }
}

/// The user's `initial_state`, or the state type's `Default` (reported at the state type).
fn initial_state_method(def: &AgentDef) -> TokenStream {
    match def.hooks.iter().find(|hook| hook.kind == HookKind::InitialState) {
        Some(hook) => {
            let ident = &hook.ident;
            quote_spanned!(ident.span()=> fn initial_state() -> Self::State { Self::#ident() })
        }
        None => {
            let span = def.state.as_ref().map_or_else(|| def.self_ty.span(), |ty| ty.span());
            quote_spanned!(span=> fn initial_state() -> Self::State { ::core::default::Default::default() })
        }
    }
}

/// The trait method that calls the user's hook and converts what it returns. Its parameters
/// and return type come from the hook's row in the table of `hooks.rs`.
fn hook_method(hook: &HookDef, rt: &syn::Path) -> TokenStream {
    let ident = &hook.ident;
    // Each parameter is declared and passed with the span of the user's parameter type: a type
    // error points there, and declaration and use share one hygiene context even when the impl
    // block comes out of a `macro_rules!`.
    let mut spans = hook.param_spans.iter().copied();
    let params: Vec<(syn::Ident, TokenStream)> = hook
        .kind
        .params()
        .iter()
        .map(|(name, ty)| {
            let span = spans.next().unwrap_or_else(|| ident.span());
            (syn::Ident::new(&format!("__{name}"), span), ty.tokens(rt))
        })
        .collect();
    let declared = params.iter().map(|(name, ty)| quote!(#name: #ty));
    let passed = params.iter().map(|(name, _)| name);
    let output = hook.kind.returns().tokens(rt);
    let cfgs = &hook.cfgs;
    if !hook.kind.has_receiver() {
        // `validate_state_change`: no receiver, not async; it runs inside `set_state`.
        let convert = quote_spanned!(hook.output_span=>
            #rt::__private::IntoHookResult::<#output>::into_hook_result(Self::#ident(#(#passed),*)));
        return quote_spanned! {ident.span()=>
            #(#cfgs)*
            fn #ident(#(#declared),*) -> #rt::Result<#output> {
                #convert
            }
        };
    }
    let call = quote_spanned!(ident.span()=> Self::#ident(self, #(#passed),*));
    let call = if hook.is_async { quote_spanned!(ident.span()=> #call.await) } else { call };
    let convert = quote_spanned!(hook.output_span=>
        #rt::__private::IntoHookResult::<#output>::into_hook_result(#call));
    quote_spanned! {ident.span()=>
        #(#cfgs)*
        #[allow(clippy::manual_async_fn)]
        fn #ident(&mut self, #(#declared),*)
            -> impl ::core::future::Future<Output = #rt::Result<#output>> + ::core::marker::Send
        {
            async move { #convert }
        }
    }
}

/// The RPC dispatcher: wire name → decode arguments → call → outcome.
fn call_method(def: &AgentDef) -> TokenStream {
    let rt = &def.runtime;
    let arms = def.callables.iter().map(|callable| call_arm(callable, rt));
    let not_callable = &def.not_callable;
    let not_callable = (!not_callable.is_empty())
        .then(|| quote!(#(#not_callable)|* => #rt::CallOutcome::NotCallable,));
    quote! {
        fn call(&mut self, __ctx: &mut #rt::Context<Self>, __call: #rt::Call)
            -> impl ::core::future::Future<Output = #rt::CallOutcome> + ::core::marker::Send
        {
            async move {
                let #rt::Call { method: __method, args: __args, stream: __stream } = __call;
                let _ = (&__ctx, &__args, &__stream);
                match __method.as_str() {
                    #(#arms)*
                    #not_callable
                    __other if #rt::__private::is_agent_method(__other) => #rt::CallOutcome::NotCallable,
                    _ => #rt::CallOutcome::NotFound,
                }
            }
        }
    }
}

fn call_arm(callable: &CallableDef, rt: &syn::Path) -> TokenStream {
    let ident = &callable.ident;
    let wire = &callable.wire_name;
    let arity = callable.params.len();
    let decoded = callable.params.iter().enumerate().map(|(index, param)| {
        let (name, ty) = (&param.name, &param.ty);
        let var = syn::Ident::new(&format!("__arg{index}"), ty.span());
        // Spanned at the parameter type, the runtime's path included: a type that cannot be
        // decoded is reported there.
        let rt_here = respanned(rt, ty.span());
        quote_spanned! {ty.span()=>
            let #var: #ty = match #rt_here::__private::decode_arg(&mut __args, #wire, #index, #name) {
                ::core::result::Result::Ok(value) => value,
                ::core::result::Result::Err(error) => return #rt::CallOutcome::Error(error),
            };
        }
    });
    let vars = (0..arity)
        .map(|index| syn::Ident::new(&format!("__arg{index}"), callable.params[index].ty.span()));
    let ctx = callable.takes_ctx.then(|| quote!(__ctx,));
    let stream = callable.streaming.then(|| quote!(__stream.clone(),));
    let call = quote_spanned!(ident.span()=> Self::#ident(self, #ctx #stream #(#vars),*));
    let call = if callable.is_async { quote_spanned!(ident.span()=> #call.await) } else { call };
    let answer = if callable.streaming {
        let result = quote_spanned!(callable.output_span=>
            #rt::__private::IntoHookResult::<()>::into_hook_result(#call));
        quote! {
            // An error the method did not send itself ends the stream.
            if let ::core::result::Result::Err(error) = #result {
                if !__stream.is_closed() {
                    __stream.error(&error);
                }
            }
            #rt::CallOutcome::Streamed
        }
    } else {
        match callable.output {
            Output::Unit => quote! {
                #call;
                #rt::CallOutcome::Value(::core::option::Option::None)
            },
            Output::Value => quote_spanned! {callable.output_span=>
                #rt::CallOutcome::from_result(::core::result::Result::<_, #rt::Error>::Ok(#call), false)
            },
            Output::Result { unit } => quote_spanned! {callable.output_span=>
                #rt::CallOutcome::from_result(#call, #unit)
            },
        }
    };
    let stream_guard = callable.streaming.then(|| {
        quote! {
            let ::core::option::Option::Some(__stream) = __stream else {
                return #rt::CallOutcome::Error(::std::format!(
                    "Method {} streams its answer: call it over a WebSocket", #wire
                ));
            };
        }
    });
    let cfgs = &callable.cfgs;
    quote! {
        #(#cfgs)*
        #wire => {
            if let ::core::result::Result::Err(error) = #rt::__private::check_arity(&__args, #wire, #arity) {
                return #rt::CallOutcome::Error(error);
            }
            #stream_guard
            let mut __args = __args.into_iter();
            #(#decoded)*
            #answer
        }
    }
}

/// `path` with every token at `span`, for a path that must point where the tokens around it do.
pub(crate) fn respanned(path: &syn::Path, span: Span) -> TokenStream {
    path.to_token_stream()
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An agent using every kind of generated item: hooks of each shape, callables of each
    /// output, a state, and its TypeScript interface.
    fn everything(args: TokenStream) -> String {
        let item = quote! {
            impl Everything {
                async fn on_start(&mut self, ctx: &mut Context<Self>) {}
                fn on_request(&mut self, ctx: &mut Context<Self>, request: Request) -> Response { todo!() }
                fn connection_tags(&self, ctx: &mut Context<Self>, conn: &Connection, c: &ConnectionContext) -> Vec<String> { todo!() }
                async fn on_connect(&mut self, ctx: &mut Context<Self>, conn: &Connection, c: &ConnectionContext) {}
                async fn on_message(&mut self, ctx: &mut Context<Self>, conn: &Connection, message: Message) {}
                fn on_close(&mut self, ctx: &mut Context<Self>, conn: &Connection, code: u16, reason: &str, clean: bool) {}
                fn on_error(&mut self, ctx: &mut Context<Self>, conn: Option<&Connection>, error: &Error) {}
                fn should_send_protocol_messages(&self, ctx: &mut Context<Self>, conn: &Connection, c: &ConnectionContext) -> bool { true }
                fn should_connection_be_readonly(&self, ctx: &mut Context<Self>, conn: &Connection, c: &ConnectionContext) -> bool { false }
                fn on_state_changed(&mut self, ctx: &mut Context<Self>, state: &u32, source: StateSource<'_>) {}
                fn validate_state_change(ctx: &Context<Self>, next: &u32, source: StateSource<'_>) -> Result<()> { Ok(()) }
                fn initial_state() -> u32 { 0 }
                #[callable]
                fn add(&mut self, ctx: &mut Context<Self>, a: i64, b: i64) -> i64 { a + b }
                #[callable]
                fn check(&self, value: String) -> Result<(), Error> { Ok(()) }
                #[callable(streaming)]
                async fn count(&self, stream: StreamingResponse, to: u32) {}
                fn helper(&self) {}
            }
        };
        agent(args, item).to_string()
    }

    #[test]
    fn the_runtime_path_defaults_to_agents_runtime() {
        let out = everything(quote!(state = u32, typescript));
        assert!(out.contains(":: agents_runtime :: Agent for Everything"), "{out}");
        assert!(!out.contains("compile_error"), "{out}");
    }

    #[test]
    fn every_generated_path_starts_from_the_crate_argument() {
        for args in [
            quote!(state = u32, typescript, crate = renamed::rt),
            quote!(state = u32, typescript, crate = "renamed::rt"),
        ] {
            let out = everything(args);
            assert!(!out.contains("compile_error"), "{out}");
            assert!(!out.contains("agents_runtime"), "{out}");
            assert!(out.contains("renamed :: rt :: Agent for Everything"), "{out}");
            assert!(out.contains("renamed :: rt :: __private :: decode_arg"), "{out}");
            assert!(out.contains("renamed :: rt :: __private :: encode_arg"), "{out}");
            assert!(out.contains("renamed :: rt :: typescript :: Declarations"), "{out}");
            assert!(out.contains("[`AgentClient`](renamed::rt::client::AgentClient)"), "{out}");
        }
    }

    #[test]
    fn hooks_get_their_signature_from_the_table() {
        let out = everything(quote!(state = u32));
        let on_close = "fn on_close (& mut self , __ctx : & mut :: agents_runtime :: Context < Self > , \
            __conn : & :: agents_runtime :: Connection < Self :: ConnectionState > , \
            __code : u16 , __reason : & str , __was_clean : bool)";
        assert!(out.contains(on_close), "{out}");
        let validate = "fn validate_state_change (__ctx : & :: agents_runtime :: Context < Self > , \
            __next : & Self :: State , \
            __source : :: agents_runtime :: StateSource < '_ , Self :: ConnectionState >) \
            -> :: agents_runtime :: Result < () >";
        assert!(out.contains(validate), "{out}");
    }
}
