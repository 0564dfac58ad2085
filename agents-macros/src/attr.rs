//! Parsing `#[agent(name = "...", connection_state = Type)]`.

use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Token, Type};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(connection_state);
}

/// The arguments of `#[agent(...)]`, as written.
#[derive(Default)]
pub(crate) struct AgentArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) connection_state: Option<Type>,
}

impl Parse for AgentArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        while !input.is_empty() {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::name) {
                let key: kw::name = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: LitStr = input.parse()?;
                set_once(&mut args.name, value, key.span, "name")?;
            } else if lookahead.peek(kw::connection_state) {
                let key: kw::connection_state = input.parse()?;
                input.parse::<Token![=]>()?;
                let value: Type = input.parse()?;
                set_once(&mut args.connection_state, value, key.span, "connection_state")?;
            } else {
                return Err(lookahead.error());
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        Ok(args)
    }
}

fn set_once<T>(
    slot: &mut Option<T>,
    value: T,
    span: proc_macro2::Span,
    key: &str,
) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new(span, format!("`{key}` is specified more than once")));
    }
    *slot = Some(value);
    Ok(())
}
