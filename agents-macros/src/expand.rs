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
    let conn = quote!(&#rt::Connection<Self::ConnectionState>);
    let (params, output): (Vec<(&str, TokenStream)>, TokenStream) = match hook.kind {
        HookKind::OnStart => (vec![], quote!(())),
        HookKind::OnRequest => (vec![("__request", quote!(#rt::Request))], quote!(#rt::Response)),
        HookKind::ConnectionTags => (
            vec![("__conn", conn), ("__conn_ctx", quote!(&#rt::ConnectionContext))],
            quote!(::std::vec::Vec<::std::string::String>),
        ),
        HookKind::OnConnect => {
            (vec![("__conn", conn), ("__conn_ctx", quote!(&#rt::ConnectionContext))], quote!(()))
        }
        HookKind::OnMessage => {
            (vec![("__conn", conn), ("__message", quote!(#rt::Message))], quote!(()))
        }
        HookKind::OnClose => (
            vec![
                ("__conn", conn),
                ("__code", quote!(u16)),
                ("__reason", quote!(&str)),
                ("__was_clean", quote!(bool)),
            ],
            quote!(()),
        ),
        HookKind::OnError => (
            vec![
                ("__conn", quote!(::core::option::Option<#conn>)),
                ("__error", quote!(&#rt::Error)),
            ],
            quote!(()),
        ),
    };
    // Each parameter is declared and passed with the span of the user's parameter type: a type
    // error points there, and declaration and use share one hygiene context even when the impl
    // block comes out of a `macro_rules!`.
    let mut spans = hook.param_spans.iter().copied();
    let ctx = syn::Ident::new("__ctx", spans.next().unwrap_or_else(|| ident.span()));
    let params: Vec<(syn::Ident, TokenStream)> = params
        .into_iter()
        .map(|(name, ty)| (syn::Ident::new(name, spans.next().unwrap_or_else(|| ident.span())), ty))
        .collect();
    let declared = params.iter().map(|(name, ty)| quote!(#name: #ty));
    let passed = params.iter().map(|(name, _)| name);
    let call = quote_spanned!(ident.span()=> Self::#ident(self, #ctx #(, #passed)*));
    let call = if hook.is_async { quote_spanned!(ident.span()=> #call.await) } else { call };
    let convert = quote_spanned!(hook.output_span=> #rt::__private::IntoHookResult::<#output>::into_hook_result(#call));
    let cfgs = &hook.cfgs;
    quote_spanned! {ident.span()=>
        #(#cfgs)*
        #[allow(clippy::manual_async_fn)]
        fn #ident(&mut self, #ctx: &mut #rt::Context<Self> #(, #declared)*)
            -> impl ::core::future::Future<Output = #rt::Result<#output>> + ::core::marker::Send
        {
            async move { #convert }
        }
    }
}
