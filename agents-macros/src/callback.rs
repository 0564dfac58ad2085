//! `#[callback]` methods: their model, and the code generated for them: the
//! `{Agent}Callback` enum that `ctx.schedule` and `ctx.queue` take, and the `run_callback`
//! dispatcher that calls them when a schedule is due or a queued item runs.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ImplItemFn, ReturnType, Type};

use crate::model::AgentDef;

/// One `#[callback]` method.
pub(crate) struct CallbackDef {
    pub(crate) ident: syn::Ident,
    pub(crate) name: String,
    pub(crate) variant: syn::Ident,
    pub(crate) cfgs: Vec<syn::Attribute>,
    pub(crate) is_async: bool,
    pub(crate) takes_ctx: bool,
    /// The payload's type, if the method takes one.
    pub(crate) payload: Option<Type>,
    /// What its last parameter takes: a `&Schedule` or a `&QueueItem`.
    pub(crate) trigger: Option<Trigger>,
    pub(crate) output_span: Span,
}

/// The kind of run a callback's last parameter describes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    Schedule,
    Queue,
}

pub(crate) fn callback_attr(method: &ImplItemFn) -> Option<&syn::Attribute> {
    method.attrs.iter().find(|attr| attr.path().is_ident("callback"))
}

const SHAPE: &str = "`fn name(&mut self, [ctx: &mut Context<Self>,] [payload: T,] [schedule: &Schedule | item: &QueueItem])`";

impl CallbackDef {
    pub(crate) fn from_method(method: &ImplItemFn) -> syn::Result<Self> {
        let attr = callback_attr(method).expect("called for callbacks only");
        if !matches!(attr.meta, syn::Meta::Path(_)) {
            return Err(syn::Error::new_spanned(&attr.meta, "#[callback] takes no arguments"));
        }
        let sig = &method.sig;
        let name = sig.ident.unraw().to_string();
        if !sig.generics.params.is_empty() {
            let why = format!("callback `{name}` cannot be generic");
            return Err(syn::Error::new_spanned(&sig.generics, why));
        }
        let mut inputs = sig.inputs.iter().peekable();
        match inputs.next() {
            Some(FnArg::Receiver(receiver))
                if receiver.reference.is_some() || matches!(*receiver.ty, Type::Reference(_)) => {}
            _ => {
                let why =
                    format!("callback `{name}` must take `&mut self` or `&self`; expected {SHAPE}");
                return Err(syn::Error::new(sig.paren_token.span.join(), why));
            }
        }
        let takes_ctx =
            matches!(inputs.peek(), Some(FnArg::Typed(arg)) if is_reference_to(&arg.ty, "Context"));
        if takes_ctx {
            inputs.next();
        }
        let mut payload = None;
        let mut trigger = None;
        for input in inputs {
            let FnArg::Typed(arg) = input else { continue };
            let kind = if is_reference_to(&arg.ty, "Schedule") {
                Some(Trigger::Schedule)
            } else if is_reference_to(&arg.ty, "QueueItem") {
                Some(Trigger::Queue)
            } else {
                None
            };
            match (kind, &payload, trigger) {
                (Some(kind), _, None) => trigger = Some(kind),
                (None, None, None) => payload = Some((*arg.ty).clone()),
                (None, None, Some(_)) => {
                    let why = format!(
                        "the payload of callback `{name}` comes before its `&Schedule` or `&QueueItem`; expected {SHAPE}"
                    );
                    return Err(syn::Error::new(arg.ty.span(), why));
                }
                _ => {
                    let why = format!(
                        "callback `{name}` takes one payload at most (put several values in a struct or a tuple); expected {SHAPE}"
                    );
                    return Err(syn::Error::new(arg.span(), why));
                }
            }
        }
        let output_span = match &sig.output {
            ReturnType::Default => sig.ident.span(),
            ReturnType::Type(_, ty) => ty.span(),
        };
        Ok(Self {
            ident: sig.ident.clone(),
            variant: syn::Ident::new(&upper_camel_case(&name), sig.ident.span()),
            name,
            cfgs: method.attrs.iter().filter(|attr| attr.path().is_ident("cfg")).cloned().collect(),
            is_async: sig.asyncness.is_some(),
            takes_ctx,
            payload,
            trigger,
            output_span,
        })
    }
}

/// `&T` or `&mut T` where `T`'s path ends in `name`.
fn is_reference_to(ty: &Type, name: &str) -> bool {
    let Type::Reference(reference) = ty else { return false };
    matches!(&*reference.elem, Type::Path(path) if path.path.segments.last().is_some_and(|s| s.ident == name))
}

/// `remind_me` → `RemindMe`.
fn upper_camel_case(name: &str) -> String {
    name.split('_')
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        })
        .collect::<Vec<String>>()
        .concat()
}

/// The `{Agent}Callback` enum and its `Callback` impl; nothing without callbacks.
pub(crate) fn render_enum(def: &AgentDef) -> TokenStream {
    let type_ident = match &def.self_ty {
        Type::Path(path) => path.path.segments.last().map(|segment| &segment.ident),
        _ => None,
    };
    let Some(type_ident) = type_ident.filter(|_| !def.callbacks.is_empty()) else {
        return TokenStream::new();
    };
    let rt = &def.runtime;
    let self_ty = &def.self_ty;
    let name = format_ident!("{}Callback", type_ident);
    let doc = format!(
        "A call of one of [`{type_ident}`]'s `#[callback]` methods with its payload, for \
         `ctx.schedule` and `ctx.queue`. Generated by `#[agent]`."
    );
    let variants = def.callbacks.iter().map(|callback| {
        let (variant, cfgs) = (&callback.variant, &callback.cfgs);
        let doc = format!("Calls [`{type_ident}::{}`].", callback.ident);
        match &callback.payload {
            Some(ty) => quote!(#(#cfgs)* #[doc = #doc] #variant(#ty)),
            None => quote!(#(#cfgs)* #[doc = #doc] #variant),
        }
    });
    let arms = |body: &dyn Fn(&CallbackDef) -> TokenStream| -> Vec<TokenStream> {
        def.callbacks
            .iter()
            .map(|callback| {
                let (variant, cfgs) = (&callback.variant, &callback.cfgs);
                let pattern = match &callback.payload {
                    Some(_) => quote!(Self::#variant(__payload)),
                    None => quote!(Self::#variant),
                };
                let body = body(callback);
                quote!(#(#cfgs)* #pattern => #body,)
            })
            .collect()
    };
    let names = arms(&|callback| {
        let name = &callback.name;
        quote!(#name)
    });
    let triggers = arms(&|callback| match callback.trigger {
        Some(Trigger::Schedule) => {
            quote!(::core::option::Option::Some(#rt::TriggerKind::Schedule))
        }
        Some(Trigger::Queue) => quote!(::core::option::Option::Some(#rt::TriggerKind::Queue)),
        None => quote!(::core::option::Option::None),
    });
    let payloads = arms(&|callback| match &callback.payload {
        Some(ty) => quote_spanned!(ty.span()=> #rt::serde_json::to_value(__payload)),
        None => quote!(::core::result::Result::Ok(#rt::serde_json::Value::Null)),
    });
    quote! {
        #[doc = #doc]
        #[allow(dead_code, private_interfaces)]
        pub enum #name {
            #(#variants,)*
        }

        impl #rt::Callback<#self_ty> for #name {
            fn name(&self) -> &'static str {
                match self { #(#names)* }
            }

            fn trigger(&self) -> ::core::option::Option<#rt::TriggerKind> {
                match self { #(#triggers)* }
            }

            fn into_payload(self) -> #rt::serde_json::Result<#rt::serde_json::Value> {
                match self { #(#payloads)* }
            }
        }
    }
}

/// The `Agent::run_callback` method and the `CALLBACKS` table.
pub(crate) fn render_dispatch(def: &AgentDef) -> TokenStream {
    if def.callbacks.is_empty() {
        return TokenStream::new();
    }
    let rt = &def.runtime;
    let names = def.callbacks.iter().map(|callback| {
        let (name, cfgs) = (&callback.name, &callback.cfgs);
        quote!(#(#cfgs)* #name)
    });
    let arms = def.callbacks.iter().map(|callback| dispatch_arm(callback, rt));
    quote! {
        const CALLBACKS: &'static [&'static str] = &[#(#names),*];

        fn run_callback(
            &mut self,
            __ctx: &mut #rt::Context<Self>,
            __callback: &str,
            __payload: #rt::serde_json::Value,
            __trigger: #rt::Trigger<'_>,
        ) -> impl ::core::future::Future<Output = #rt::Result<()>> + ::core::marker::Send {
            async move {
                let _ = (&__ctx, &__payload, &__trigger);
                match __callback {
                    #(#arms)*
                    __other => ::core::result::Result::Err(#rt::__private::unknown_callback::<Self>(__other)),
                }
            }
        }
    }
}

fn dispatch_arm(callback: &CallbackDef, rt: &syn::Path) -> TokenStream {
    let (ident, name, cfgs) = (&callback.ident, &callback.name, &callback.cfgs);
    let ctx = callback.takes_ctx.then(|| quote!(__ctx,));
    let payload = callback.payload.as_ref().map(|ty| {
        let rt_here = crate::expand::respanned(rt, ty.span());
        quote_spanned! {ty.span()=>
            let __payload: #ty = #rt_here::__private::decode_payload(__payload, #name)?;
        }
    });
    let payload_arg = callback.payload.as_ref().map(|_| quote!(__payload,));
    let trigger = match callback.trigger {
        Some(Trigger::Schedule) => Some(quote!(__trigger.schedule(#name)?)),
        Some(Trigger::Queue) => Some(quote!(__trigger.queue_item(#name)?)),
        None => None,
    };
    let call = quote_spanned!(ident.span()=> Self::#ident(self, #ctx #payload_arg #trigger));
    let call = if callback.is_async { quote_spanned!(ident.span()=> #call.await) } else { call };
    let convert = quote_spanned!(callback.output_span=>
        #rt::__private::IntoHookResult::<()>::into_hook_result(#call));
    quote! {
        #(#cfgs)*
        #name => {
            #payload
            #convert
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variant_names() {
        assert_eq!(upper_camel_case("remind"), "Remind");
        assert_eq!(upper_camel_case("remind_me_later"), "RemindMeLater");
        assert_eq!(upper_camel_case("_private"), "Private");
    }
}
