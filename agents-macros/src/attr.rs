//! Parsing `#[agent(...)]` and `#[callable(...)]` arguments.

use syn::parse::{Parse, ParseStream};
use syn::{LitBool, LitStr, Path, Token, Type};

mod kw {
    syn::custom_keyword!(name);
    syn::custom_keyword!(connection_state);
    syn::custom_keyword!(state);
    syn::custom_keyword!(rename_all);
    syn::custom_keyword!(streaming);
    syn::custom_keyword!(description);
    syn::custom_keyword!(typescript);
    syn::custom_keyword!(hibernate);
    syn::custom_keyword!(durability);
}

/// The arguments of `#[agent(...)]`, as written.
#[derive(Default)]
pub(crate) struct AgentArgs {
    pub(crate) name: Option<LitStr>,
    pub(crate) connection_state: Option<Type>,
    pub(crate) state: Option<Type>,
    pub(crate) rename_all: Option<LitStr>,
    /// `typescript`: declare the agent's TypeScript interface.
    pub(crate) typescript: bool,
    /// `hibernate = false`: stay in memory while connected.
    pub(crate) hibernate: Option<LitBool>,
    /// `durability = "relaxed"`: frames do not wait for writes.
    pub(crate) durability: Option<LitStr>,
    /// `crate = path` or `crate = "path"`: where the generated code finds the runtime.
    pub(crate) krate: Option<Path>,
}

impl Parse for AgentArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        parse_list(input, |input| {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::name) {
                let key: kw::name = input.parse()?;
                set_once(&mut args.name, value(input)?, key.span, "name")
            } else if lookahead.peek(kw::connection_state) {
                let key: kw::connection_state = input.parse()?;
                set_once(&mut args.connection_state, value(input)?, key.span, "connection_state")
            } else if lookahead.peek(kw::state) {
                let key: kw::state = input.parse()?;
                set_once(&mut args.state, value(input)?, key.span, "state")
            } else if lookahead.peek(kw::rename_all) {
                let key: kw::rename_all = input.parse()?;
                let rule: LitStr = value(input)?;
                if !matches!(rule.value().as_str(), "camelCase" | "snake_case") {
                    return Err(syn::Error::new(
                        rule.span(),
                        "expected \"camelCase\" or \"snake_case\"",
                    ));
                }
                set_once(&mut args.rename_all, rule, key.span, "rename_all")
            } else if lookahead.peek(kw::hibernate) {
                let key: kw::hibernate = input.parse()?;
                set_once(&mut args.hibernate, value(input)?, key.span, "hibernate")
            } else if lookahead.peek(kw::durability) {
                let key: kw::durability = input.parse()?;
                let mode: LitStr = value(input)?;
                if !matches!(mode.value().as_str(), "confirmed" | "relaxed") {
                    return Err(syn::Error::new(
                        mode.span(),
                        "expected \"confirmed\" (the default: frames wait until writes are on disk) or \"relaxed\"",
                    ));
                }
                set_once(&mut args.durability, mode, key.span, "durability")
            } else if lookahead.peek(kw::typescript) {
                let key: kw::typescript = input.parse()?;
                if args.typescript {
                    return Err(syn::Error::new(
                        key.span,
                        "`typescript` is specified more than once",
                    ));
                }
                args.typescript = true;
                Ok(())
            } else if lookahead.peek(Token![crate]) {
                let key: Token![crate] = input.parse()?;
                set_once(&mut args.krate, crate_path(input)?, key.span, "crate")
            } else {
                Err(lookahead.error())
            }
        })?;
        Ok(args)
    }
}

/// The arguments of `#[callable(...)]`, as written.
#[derive(Default)]
pub(crate) struct CallableArgs {
    pub(crate) streaming: bool,
    pub(crate) name: Option<LitStr>,
    pub(crate) description: Option<LitStr>,
}

impl Parse for CallableArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Self::default();
        let mut streaming = None;
        parse_list(input, |input| {
            let lookahead = input.lookahead1();
            if lookahead.peek(kw::streaming) {
                let key: kw::streaming = input.parse()?;
                set_once(&mut streaming, true, key.span, "streaming")
            } else if lookahead.peek(kw::name) {
                let key: kw::name = input.parse()?;
                set_once(&mut args.name, value(input)?, key.span, "name")
            } else if lookahead.peek(kw::description) {
                let key: kw::description = input.parse()?;
                set_once(&mut args.description, value(input)?, key.span, "description")
            } else {
                Err(lookahead.error())
            }
        })?;
        args.streaming = streaming.unwrap_or(false);
        Ok(args)
    }
}

/// `item, item, ...` with an optional trailing comma.
fn parse_list(
    input: ParseStream<'_>,
    mut item: impl FnMut(ParseStream<'_>) -> syn::Result<()>,
) -> syn::Result<()> {
    while !input.is_empty() {
        item(input)?;
        if input.is_empty() {
            break;
        }
        input.parse::<Token![,]>()?;
    }
    Ok(())
}

/// `= path` or `= "path"` after `crate`, like serde's `#[serde(crate = "...")]`: a path without
/// generic arguments, such as `my_reexport::agents_runtime` or `::agents_runtime`.
fn crate_path(input: ParseStream<'_>) -> syn::Result<Path> {
    input.parse::<Token![=]>()?;
    let expected = |span| {
        syn::Error::new(
            span,
            "expected the path of the runtime crate, like `crate = my_reexport::agents_runtime` or `crate = \"my_reexport::agents_runtime\"`",
        )
    };
    if input.peek(LitStr) {
        let path: LitStr = input.parse()?;
        return path.parse_with(Path::parse_mod_style).map_err(|_| expected(path.span()));
    }
    Path::parse_mod_style(input).map_err(|error| expected(error.span()))
}

/// `= value` after a key.
fn value<T: Parse>(input: ParseStream<'_>) -> syn::Result<T> {
    input.parse::<Token![=]>()?;
    input.parse()
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

#[cfg(test)]
mod tests {
    use super::*;
    use quote::{ToTokens, quote};

    fn krate(args: proc_macro2::TokenStream) -> syn::Result<String> {
        let args = syn::parse2::<AgentArgs>(args)?;
        Ok(args.krate.expect("a crate path").to_token_stream().to_string())
    }

    #[test]
    fn crate_takes_a_path_or_a_string() {
        assert_eq!(krate(quote!(crate = renamed)).unwrap(), "renamed");
        assert_eq!(krate(quote!(crate = ::my::path)).unwrap(), ":: my :: path");
        assert_eq!(krate(quote!(crate = "my::path")).unwrap(), "my :: path");
        assert_eq!(krate(quote!(crate = "::my::path",)).unwrap(), ":: my :: path");
        assert_eq!(krate(quote!(name = "x", crate = crate::rt)).unwrap(), "crate :: rt");
    }

    #[test]
    fn crate_rejects_what_is_not_a_path() {
        let expected = "expected the path of the runtime crate";
        for args in [quote!(crate = 42), quote!(crate = "not a path"), quote!(crate = "a::b<T>")] {
            let error = krate(args.clone()).err().unwrap_or_else(|| panic!("{args} parses"));
            assert!(error.to_string().starts_with(expected), "{args}: {error}");
        }
        let twice = krate(quote!(crate = a, crate = b)).expect_err("an error");
        assert_eq!(twice.to_string(), "`crate` is specified more than once");
    }
}
