//! Code generation: the `Agent` impl and the inventory registration.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::ItemImpl;
use syn::spanned::Spanned;

use crate::attr::AgentArgs;
use crate::hooks::HookKind;
use crate::model::{AgentDef, Errors, HookDef};

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
    let mut errors = Errors::default();
    // Bad arguments are reported, and the agent is still generated with the defaults.
    let args = syn::parse2::<AgentArgs>(args).unwrap_or_else(|error| {
        errors.push(error);
        AgentArgs::default()
    });
    let generated = AgentDef::from_syntax(args, &item_impl, &mut errors).map(|def| expand(&def));
    let errors = errors.into_compile_error();
    quote! { #item_impl #generated #errors }
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
    let state = quote!(#rt::Connection<Self::ConnectionState>);
    let (params, output) = match hook.kind {
        HookKind::OnStart => (vec![], quote!(())),
        HookKind::OnRequest => (vec![quote!(__request: #rt::Request)], quote!(#rt::Response)),
        HookKind::ConnectionTags | HookKind::OnConnect => (
            vec![quote!(__conn: &#state), quote!(__conn_ctx: &#rt::ConnectionContext)],
            if hook.kind == HookKind::ConnectionTags {
                quote!(::std::vec::Vec<::std::string::String>)
            } else {
                quote!(())
            },
        ),
        HookKind::OnMessage => {
            (vec![quote!(__conn: &#state), quote!(__message: #rt::Message)], quote!(()))
        }
        HookKind::OnClose => (
            vec![
                quote!(__conn: &#state),
                quote!(__code: u16),
                quote!(__reason: &str),
                quote!(__was_clean: bool),
            ],
            quote!(()),
        ),
        HookKind::OnError => (
            vec![quote!(__conn: ::core::option::Option<&#state>), quote!(__error: &#rt::Error)],
            quote!(()),
        ),
    };
    // Each argument carries the span of the user's parameter type, the conversion that of
    // the return type, the call that of the name: type errors point at the user's hook.
    let names = std::iter::once("__ctx".to_owned()).chain(params.iter().map(|param| {
        let name = param.clone().into_iter().next().expect("a parameter starts with its name");
        name.to_string()
    }));
    // A fresh identifier per argument: `quote_spanned!` does not re-span interpolated tokens.
    let args = names.zip(&hook.param_spans).map(|(name, span)| syn::Ident::new(&name, *span));
    let call = quote_spanned!(ident.span()=> Self::#ident(self, #(#args),*));
    let call = if hook.is_async { quote_spanned!(ident.span()=> #call.await) } else { call };
    let convert = quote_spanned!(hook.output_span=> #rt::__private::IntoHookResult::<#output>::into_hook_result(#call));
    quote_spanned! {ident.span()=>
        #[allow(clippy::manual_async_fn)]
        fn #ident(&mut self, __ctx: &mut #rt::Context<Self> #(, #params)*)
            -> impl ::core::future::Future<Output = #rt::Result<#output>> + ::core::marker::Send
        {
            async move { #convert }
        }
    }
}
