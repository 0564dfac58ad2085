//! Code generation: the `Agent` impl and the inventory registration.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ItemImpl;
use syn::spanned::Spanned;

use crate::attr::AgentArgs;
use crate::hooks::HookKind;
use crate::model::{AgentDef, HookDef};

/// `#[agent(args)] item` → the item unchanged, plus its `Agent` impl and registration.
/// On error the item is still emitted, so the user's code keeps resolving.
pub(crate) fn agent(args: TokenStream, item: TokenStream) -> TokenStream {
    let item_impl = match syn::parse2::<ItemImpl>(item.clone()) {
        Ok(item_impl) => item_impl,
        Err(_) => {
            let error = syn::Error::new(
                proc_macro2::Span::call_site(),
                "#[agent] goes on the agent's impl block: `#[agent] impl MyAgent { ... }`",
            );
            return with_error(item, error);
        }
    };
    let def =
        syn::parse2::<AgentArgs>(args).and_then(|args| AgentDef::from_syntax(args, &item_impl));
    match def {
        Ok(def) => {
            let generated = expand(&def);
            quote! { #item_impl #generated }
        }
        Err(error) => with_error(quote! { #item_impl }, error),
    }
}

fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote! { #item #error }
}

fn expand(def: &AgentDef) -> TokenStream {
    let self_ty = &def.self_ty;
    let route_name = &def.route_name;
    let connection_state = match &def.connection_state {
        Some(ty) => quote_spanned!(ty.span()=> #ty),
        None => quote!(()),
    };
    let create = quote_spanned! {self_ty.span()=>
        fn create() -> Self {
            <Self as ::core::default::Default>::default()
        }
    };
    let hooks = def.hooks.iter().map(hook_method);
    quote! {
        const _: () = {
            impl ::agents_runtime::Agent for #self_ty {
                const NAME: &'static str = #route_name;
                type ConnectionState = #connection_state;
                #create
                #(#hooks)*
            }

            ::agents_runtime::__private::inventory::submit! {
                ::agents_runtime::__private::AgentRegistration::of::<#self_ty>()
            }
        };
    }
}

/// The trait method that calls the user's hook and converts what it returns.
fn hook_method(hook: &HookDef) -> TokenStream {
    let rt = quote!(::agents_runtime);
    let ident = &hook.ident;
    let (params, args, output) = match hook.kind {
        HookKind::OnStart => (quote!(), quote!(), quote!(())),
        HookKind::OnRequest => {
            (quote!(__request: #rt::Request), quote!(__request), quote!(#rt::Response))
        }
        HookKind::ConnectionTags | HookKind::OnConnect => (
            quote!(__conn: &#rt::Connection<Self::ConnectionState>, __conn_ctx: &#rt::ConnectionContext),
            quote!(__conn, __conn_ctx),
            if hook.kind == HookKind::ConnectionTags {
                quote!(::std::vec::Vec<::std::string::String>)
            } else {
                quote!(())
            },
        ),
        HookKind::OnMessage => (
            quote!(__conn: &#rt::Connection<Self::ConnectionState>, __message: #rt::Message),
            quote!(__conn, __message),
            quote!(()),
        ),
        HookKind::OnClose => (
            quote!(__conn: &#rt::Connection<Self::ConnectionState>, __code: u16, __reason: &str, __was_clean: bool),
            quote!(__conn, __code, __reason, __was_clean),
            quote!(()),
        ),
        HookKind::OnError => (
            quote!(__conn: ::core::option::Option<&#rt::Connection<Self::ConnectionState>>, __error: &#rt::Error),
            quote!(__conn, __error),
            quote!(()),
        ),
    };
    let params = if params.is_empty() { params } else { quote!(, #params) };
    // Spanned at the user's signature, so type errors (wrong parameter or return types, a
    // future that is not Send) point at the hook rather than at the macro.
    let call = quote_spanned!(hook.span=> Self::#ident(self, __ctx, #args));
    let call = if hook.is_async { quote_spanned!(hook.span=> #call.await) } else { call };
    quote_spanned! {hook.span=>
        #[allow(clippy::manual_async_fn)]
        fn #ident(&mut self, __ctx: &mut #rt::Context<Self> #params)
            -> impl ::core::future::Future<Output = #rt::Result<#output>> + ::core::marker::Send
        {
            async move { #rt::__private::IntoHookResult::into_hook_result(#call) }
        }
    }
}
