//! `sql!(ctx, "SELECT … WHERE key = {key}")`: a statement whose `{expr}`s are bound as
//! parameters, like the seeds' ``this.sql`… ${key}` `` tagged template.
//!
//! Parse (`ctx`, a string literal) → model (the text with `?1`, `?2`… in place of each
//! `{expr}`, and the expressions) → expand (the expressions bound in order, then
//! `ctx.sql().exec(text, bindings)`).

use proc_macro2::{Group, Span, TokenStream, TokenTree};
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, LitStr, Token};

/// The macro's input: the context, a comma, the statement.
struct Input {
    ctx: Expr,
    text: LitStr,
}

impl Parse for Input {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let ctx = input.parse()?;
        input.parse::<Token![,]>()?;
        let text = input.parse().map_err(|e| {
            syn::Error::new(e.span(), "sql! takes the context, then the statement as a string literal: sql!(ctx, \"SELECT …\")")
        })?;
        let _ = input.parse::<Option<Token![,]>>()?;
        if !input.is_empty() {
            return Err(input
                .error("sql! takes two arguments: write values into the statement as `{expr}`"));
        }
        Ok(Self { ctx, text })
    }
}

/// The statement as SQLite gets it, and what its parameters are bound to.
struct Statement {
    text: String,
    params: Vec<Expr>,
}

/// Reads `{expr}`s out of the statement; `{{` and `}}` are literal braces.
fn model(literal: &LitStr) -> syn::Result<Statement> {
    let source = literal.value();
    let span = literal.span();
    let mut text = String::with_capacity(source.len());
    let mut params = Vec::new();
    let mut chars = source.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                chars.next();
                text.push('}');
            }
            '}' => {
                return Err(syn::Error::new(
                    span,
                    format!(
                        "unmatched `}}` at byte {at} of the statement: write `}}}}` for a literal brace"
                    ),
                ));
            }
            '{' => {
                let start = at + 1;
                let end = source[start..].find('}').map(|end| start + end).ok_or_else(|| {
                    syn::Error::new(
                        span,
                        format!("unclosed `{{` at byte {at} of the statement: write `{{{{` for a literal brace"),
                    )
                })?;
                let inner = source[start..end].trim();
                if inner.is_empty() {
                    return Err(syn::Error::new(
                        span,
                        format!(
                            "empty `{{}}` at byte {at} of the statement: put the value to bind inside, like `{{key}}`"
                        ),
                    ));
                }
                let expr: Expr = syn::parse_str(inner).map_err(|e| {
                    syn::Error::new(span, format!("`{{{inner}}}` is not a Rust expression: {e}"))
                })?;
                params.push(respan(expr, span)?);
                text.push_str(&format!("?{}", params.len()));
                while chars.peek().is_some_and(|(i, _)| *i <= end) {
                    chars.next();
                }
            }
            c => text.push(c),
        }
    }
    Ok(Statement { text, params })
}

/// `expr` with every token at `span` (the literal), so errors in it point at the statement.
fn respan(expr: Expr, span: Span) -> syn::Result<Expr> {
    fn walk(tokens: TokenStream, span: Span) -> TokenStream {
        tokens
            .into_iter()
            .map(|mut token| {
                if let TokenTree::Group(group) = &token {
                    let mut inner = Group::new(group.delimiter(), walk(group.stream(), span));
                    inner.set_span(span);
                    token = TokenTree::Group(inner);
                } else {
                    token.set_span(span);
                }
                token
            })
            .collect()
    }
    syn::parse2(walk(quote!(#expr), span))
}

/// Expands `sql!(ctx, "…")`.
pub(crate) fn expand(input: TokenStream) -> TokenStream {
    let expanded = syn::parse2::<Input>(input).and_then(|input| {
        let statement = model(&input.text)?;
        Ok((input.ctx, input.text.span(), statement))
    });
    match expanded {
        Ok((ctx, span, Statement { text, params })) => {
            let text = LitStr::new(&text, span);
            quote! {{
                let __agents_bindings = ::agents_runtime::__private::Bindings::new()
                    #( .bind(&(#params)) )*;
                ::agents_runtime::Context::sql(#ctx).exec(#text, __agents_bindings)
            }}
        }
        Err(e) => e.to_compile_error(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(source: &str) -> syn::Result<(String, usize)> {
        let literal = LitStr::new(source, Span::call_site());
        model(&literal).map(|s| (s.text, s.params.len()))
    }

    #[test]
    fn interpolations_become_numbered_parameters() {
        let (text, n) =
            statement("SELECT * FROM t WHERE k = {key} AND v > {limit + 1}").expect("ok");
        assert_eq!(text, "SELECT * FROM t WHERE k = ?1 AND v > ?2");
        assert_eq!(n, 2);
        let (text, n) = statement("SELECT '{{}}' || {x}").expect("ok");
        assert_eq!(text, "SELECT '{}' || ?1");
        assert_eq!(n, 1);
        for bad in ["SELECT {", "SELECT {}", "SELECT }", "SELECT {1 +}"] {
            assert!(statement(bad).is_err(), "{bad}");
        }
    }
}
