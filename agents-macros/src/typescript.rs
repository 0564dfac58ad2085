//! `#[derive(TypeScript)]` and the TypeScript interface of `#[agent(typescript)]` agents.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Attribute, Data, DataEnum, DeriveInput, Fields, FieldsNamed, LitStr};

use crate::callable::Output;
use crate::model::AgentDef;

/// `impl TypeScript for T`, following serde's `rename_all`, `rename` and `skip`.
pub(crate) fn derive(input: TokenStream) -> TokenStream {
    let input = match syn::parse2::<DeriveInput>(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    match derive_impl(&input) {
        Ok(tokens) => tokens,
        Err(error) => error.to_compile_error(),
    }
}

fn derive_impl(input: &DeriveInput) -> syn::Result<TokenStream> {
    if !input.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &input.generics,
            "#[derive(TypeScript)] does not support generic types",
        ));
    }
    let rt = quote!(::agents_runtime::typescript);
    let ident = &input.ident;
    let name = ident.to_string();
    let rule = serde_value(&input.attrs, "rename_all")?;
    let doc = docs(&input.attrs);
    let body = match &input.data {
        Data::Struct(data) => struct_body(&data.fields, &name, &doc, rule.as_deref())?,
        Data::Enum(data) => enum_body(data, &name, &doc, rule.as_deref())?,
        Data::Union(data) => {
            return Err(syn::Error::new_spanned(
                data.union_token,
                "#[derive(TypeScript)] does not support unions",
            ));
        }
    };
    Ok(quote! {
        const _: () = {
            impl #rt::TypeScript for #ident {
                fn ts_type(decls: &mut #rt::Declarations) -> ::std::string::String {
                    decls.declare(#name, |decls| { let _ = &decls; #body });
                    ::std::string::String::from(#name)
                }
            }
        };
    })
}

/// The declaration of a struct: an interface for named fields, an alias for a newtype,
/// `null` for a unit struct.
fn struct_body(
    fields: &Fields,
    name: &str,
    doc: &str,
    rule: Option<&str>,
) -> syn::Result<TokenStream> {
    let rt = quote!(::agents_runtime::typescript);
    Ok(match fields {
        Fields::Named(fields) => interface_body(fields, name, doc, rule)?,
        Fields::Unnamed(fields) if fields.unnamed.len() == 1 => {
            let ty = &fields.unnamed[0].ty;
            quote! {
                let inner = <#ty as #rt::TypeScript>::ts_type(decls);
                ::std::format!("{}export type {} = {};", ::agents_runtime::__private::doc_comment(#doc, ""), #name, inner)
            }
        }
        Fields::Unit => quote!(::std::format!("export type {} = null;", #name)),
        Fields::Unnamed(fields) => {
            return Err(syn::Error::new_spanned(
                fields,
                "#[derive(TypeScript)] supports structs with named fields, newtypes and unit structs",
            ));
        }
    })
}

/// `export interface Name { key: type; ... }`, skipping the fields serde skips.
fn interface_body(
    fields: &FieldsNamed,
    name: &str,
    doc: &str,
    rule: Option<&str>,
) -> syn::Result<TokenStream> {
    let rt = quote!(::agents_runtime::typescript);
    let mut lines = Vec::new();
    for field in &fields.named {
        if serde_flag(&field.attrs, "skip")? || serde_flag(&field.attrs, "skip_serializing")? {
            continue;
        }
        let rust_name = field.ident.as_ref().expect("named").to_string();
        let key = match serde_value(&field.attrs, "rename")? {
            Some(rename) => rename,
            None => rename(&rust_name, rule),
        };
        let ty = &field.ty;
        let field_doc = docs(&field.attrs);
        lines.push(quote! {
            out.push_str(&::agents_runtime::__private::doc_comment(#field_doc, "  "));
            out.push_str(&::std::format!("  {}: {};\n", #key, <#ty as #rt::TypeScript>::ts_type(decls)));
        });
    }
    Ok(quote! {
        let mut out = ::agents_runtime::__private::doc_comment(#doc, "");
        out.push_str(&::std::format!("export interface {} {{\n", #name));
        #(#lines)*
        out.push('}');
        out
    })
}

/// A union of string literals, one per unit variant.
fn enum_body(
    data: &DataEnum,
    name: &str,
    doc: &str,
    rule: Option<&str>,
) -> syn::Result<TokenStream> {
    let mut variants = Vec::new();
    for variant in &data.variants {
        if !matches!(variant.fields, Fields::Unit) {
            return Err(syn::Error::new_spanned(
                variant,
                "#[derive(TypeScript)] supports enums of unit variants (a string union) only",
            ));
        }
        let value = match serde_value(&variant.attrs, "rename")? {
            Some(rename) => rename,
            None => rename_variant(&variant.ident.to_string(), rule),
        };
        variants.push(format!("{value:?}"));
    }
    let union = if variants.is_empty() { "never".to_owned() } else { variants.join(" | ") };
    Ok(quote!(
        ::std::format!("{}export type {} = {};", ::agents_runtime::__private::doc_comment(#doc, ""), #name, #union)
    ))
}

/// The agent's interface: `readonly state` and one method per callable.
pub(crate) fn agent_interface(def: &AgentDef, interface: &str) -> TokenStream {
    let runtime = &def.runtime;
    let rt = quote!(#runtime::typescript);
    let state = def.state.as_ref().map(|state| {
        quote!(out.push_str(&::std::format!("  readonly state: {};\n", <#state as #rt::TypeScript>::ts_type(decls)));)
    });
    let methods = def.callables.iter().map(|callable| {
        let wire = &callable.wire_name;
        let doc = callable.description.clone().unwrap_or_default();
        let params = callable.params.iter().map(|param| {
            let (name, ty) = (&param.name, &param.ty);
            quote!(::std::format!("{}: {}", #name, <#ty as #rt::TypeScript>::ts_type(decls)))
        });
        let returns = match (callable.streaming, callable.output, &callable.output_type) {
            (true, _, _) => quote!(::std::string::String::from("unknown")),
            (false, Output::Unit, _) | (false, _, None) => quote!(::std::string::String::from("void")),
            (false, Output::Value, Some(ty)) => quote!(<#ty as #rt::TypeScript>::ts_type(decls)),
            (false, Output::Result { .. }, Some(ty)) => match crate::client::result_ok_type(ty) {
                Some(ok) => quote!(<#ok as #rt::TypeScript>::ts_type(decls)),
                None => quote!(::std::string::String::from("void")),
            },
        };
        quote! {
            out.push_str(&#runtime::__private::doc_comment(#doc, "  "));
            let params: ::std::vec::Vec<::std::string::String> = ::std::vec![#(#params),*];
            let returns = #returns;
            out.push_str(&::std::format!("  {}({}): Promise<{}>;\n", #wire, params.join(", "), returns));
        }
    });
    let header = format!(
        "/** The `{}` agent: its state and callable methods, for `AgentClient<{interface}>`. */\nexport interface {interface} {{\n",
        def.route_name
    );
    quote! {
        fn __declare_typescript(decls: &mut #rt::Declarations) {
            decls.declare(#interface, |decls| {
                let mut out = ::std::string::String::from(#header);
                #state
                #(#methods)*
                out.push('}');
                out
            });
        }
        #runtime::__private::inventory::submit! {
            #runtime::__private::TypeScriptAgent { declare: __declare_typescript }
        }
    }
}

fn docs(attrs: &[Attribute]) -> String {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|attr| attr.path().is_ident("doc"))
        .filter_map(|attr| match &attr.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => {
                    Some(s.value().trim().to_owned())
                }
                _ => None,
            },
            _ => None,
        })
        .collect();
    lines.join(" ")
}

/// `#[serde(key = "value")]`, if present.
fn serde_value(attrs: &[Attribute], key: &str) -> syn::Result<Option<String>> {
    let mut found = None;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(key) {
                found = Some(meta.value()?.parse::<LitStr>()?.value());
            } else if meta.input.peek(syn::Token![=]) {
                let _ = meta.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// `#[serde(flag)]` present.
fn serde_flag(attrs: &[Attribute], flag: &str) -> syn::Result<bool> {
    let mut found = false;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(flag) {
                found = true;
            } else if meta.input.peek(syn::Token![=]) {
                let _ = meta.value()?.parse::<syn::Expr>()?;
            }
            Ok(())
        })?;
    }
    Ok(found)
}

/// A field name under serde's `rename_all`.
fn rename(field: &str, rule: Option<&str>) -> String {
    match rule {
        Some("camelCase") => crate::callable::wire_name(field, true),
        Some("PascalCase") => {
            let camel = crate::callable::wire_name(field, true);
            let mut chars = camel.chars();
            chars
                .next()
                .map(|first| first.to_uppercase().chain(chars).collect())
                .unwrap_or_default()
        }
        Some("SCREAMING_SNAKE_CASE") => field.to_uppercase(),
        Some("kebab-case") => field.replace('_', "-"),
        _ => field.to_owned(),
    }
}

/// A variant name (PascalCase in Rust) under serde's `rename_all`.
fn rename_variant(variant: &str, rule: Option<&str>) -> String {
    let snake = {
        let mut out = String::new();
        for (i, c) in variant.chars().enumerate() {
            if c.is_uppercase() && i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        }
        out
    };
    match rule {
        Some("lowercase") => variant.to_lowercase(),
        Some("UPPERCASE") => variant.to_uppercase(),
        Some("snake_case") => snake,
        Some("SCREAMING_SNAKE_CASE") => snake.to_uppercase(),
        Some("kebab-case") => snake.replace('_', "-"),
        Some("camelCase") => crate::callable::wire_name(&snake, true),
        _ => variant.to_owned(),
    }
}
