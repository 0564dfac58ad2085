//! The model of a `#[callable]` method: its wire name, parameters and what it returns.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ImplItemFn, Pat, PathArguments, ReturnType, Signature, Type};

use crate::attr::CallableArgs;

/// One `#[callable]` method.
pub(crate) struct CallableDef {
    pub(crate) ident: syn::Ident,
    pub(crate) cfgs: Vec<syn::Attribute>,
    pub(crate) is_async: bool,
    pub(crate) wire_name: String,
    pub(crate) description: Option<String>,
    pub(crate) streaming: bool,
    /// Whether the first parameter is `ctx: &mut Context<Self>`.
    pub(crate) takes_ctx: bool,
    /// The JSON arguments, in order.
    pub(crate) params: Vec<ParamDef>,
    pub(crate) output: Output,
    /// The return type as written, for the generated client.
    pub(crate) output_type: Option<Type>,
    pub(crate) output_span: Span,
}

/// One argument a client passes.
pub(crate) struct ParamDef {
    pub(crate) name: String,
    pub(crate) ty: Type,
}

/// What the method returns, as far as the answer frame is concerned.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Output {
    /// `()`: the answer has no `result`.
    Unit,
    /// A value to serialize.
    Value,
    /// `Result<T, E>`; `unit` when `T` is `()`.
    Result { unit: bool },
}

/// The `#[callable]` attribute of a method, if it has one.
pub(crate) fn callable_attr(method: &ImplItemFn) -> Option<&syn::Attribute> {
    method.attrs.iter().find(|attr| attr.path().is_ident("callable"))
}

impl CallableDef {
    pub(crate) fn from_method(method: &ImplItemFn, camel_case: bool) -> syn::Result<Self> {
        let args = callable_args(method)?;
        let sig = &method.sig;
        let name = sig.ident.unraw().to_string();
        check_name_and_generics(sig, &name)?;
        let mut inputs = sig.inputs.iter();
        let takes_ctx = leading_inputs(sig, &name, args.streaming, &mut inputs)?;
        let params = inputs.enumerate().map(|(index, input)| param_of(index, input)).collect();
        let (output, output_span) = match &sig.output {
            ReturnType::Default => (Output::Unit, sig.ident.span()),
            ReturnType::Type(_, ty) => (output_of(ty), ty.span()),
        };
        if args.streaming && output == Output::Value {
            return Err(syn::Error::new(
                output_span,
                format!(
                    "streaming callable `{name}` answers through its stream: return `()` or `Result<()>`"
                ),
            ));
        }
        let wire_name = match &args.name {
            Some(name) => name.value(),
            None => wire_name(&name, camel_case),
        };
        Ok(Self {
            ident: sig.ident.clone(),
            cfgs: method.attrs.iter().filter(|attr| attr.path().is_ident("cfg")).cloned().collect(),
            is_async: sig.asyncness.is_some(),
            wire_name,
            description: args.description.map(|d| d.value()),
            streaming: args.streaming,
            takes_ctx,
            params,
            output,
            output_type: match &sig.output {
                ReturnType::Default => None,
                ReturnType::Type(_, ty) => Some((**ty).clone()),
            },
            output_span,
        })
    }
}

/// The arguments of the method's `#[callable(...)]`.
fn callable_args(method: &ImplItemFn) -> syn::Result<CallableArgs> {
    let attr = callable_attr(method).expect("called for callables only");
    match &attr.meta {
        syn::Meta::Path(_) => Ok(CallableArgs::default()),
        _ => attr.parse_args::<CallableArgs>(),
    }
}

/// A callable may not shadow a method of the generated client, nor be generic.
fn check_name_and_generics(sig: &Signature, name: &str) -> syn::Result<()> {
    if RESERVED.contains(&name) {
        return Err(syn::Error::new(
            sig.ident.span(),
            format!(
                "callable `{name}` would clash with the generated client's `{name}`; rename the \
                 method (its wire name can stay, with #[callable(name = \"{name}\")])"
            ),
        ));
    }
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!("callable `{name}` cannot be generic"),
        ));
    }
    Ok(())
}

/// Takes the inputs before the JSON arguments from `inputs`: the receiver, an optional
/// `ctx: &mut Context<Self>`, and a streaming callable's `StreamingResponse`. Returns whether
/// there is a `ctx`.
fn leading_inputs(
    sig: &Signature,
    name: &str,
    streaming: bool,
    inputs: &mut syn::punctuated::Iter<'_, FnArg>,
) -> syn::Result<bool> {
    let shape = if streaming {
        "`fn name(&mut self, [ctx: &mut Context<Self>,] stream: StreamingResponse, args...)`"
    } else {
        "`fn name(&mut self, [ctx: &mut Context<Self>,] args...)`"
    };
    match inputs.next() {
        Some(FnArg::Receiver(receiver))
            if receiver.reference.is_some() || matches!(*receiver.ty, Type::Reference(_)) => {}
        _ => {
            return Err(syn::Error::new(
                sig.paren_token.span.join(),
                format!("callable `{name}` must take `&mut self` or `&self`; expected {shape}"),
            ));
        }
    }
    let takes_ctx = matches!(inputs.clone().next(), Some(FnArg::Typed(arg)) if is_context(&arg.ty));
    if takes_ctx {
        inputs.next();
    }
    if streaming {
        match inputs.next() {
            Some(FnArg::Typed(arg)) if last_segment_is(&arg.ty, "StreamingResponse") => {}
            _ => {
                return Err(syn::Error::new(
                    sig.paren_token.span.join(),
                    format!(
                        "streaming callable `{name}` takes a `StreamingResponse`; expected {shape}"
                    ),
                ));
            }
        }
    }
    Ok(takes_ctx)
}

/// The JSON argument an input after the leading ones stands for, named after its pattern
/// (less leading underscores), or `arg{index}`.
fn param_of(index: usize, input: &FnArg) -> ParamDef {
    let FnArg::Typed(arg) = input else { unreachable!("only the first input is a receiver") };
    let name = match &*arg.pat {
        Pat::Ident(ident) => ident.ident.unraw().to_string().trim_start_matches('_').to_owned(),
        _ => format!("arg{index}"),
    };
    ParamDef { name, ty: (*arg.ty).clone() }
}

/// The name clients use for a Rust method name.
pub(crate) fn wire_name(rust_name: &str, camel_case: bool) -> String {
    if !camel_case {
        return rust_name.to_owned();
    }
    let mut out = String::with_capacity(rust_name.len());
    let mut upper = false;
    for (i, c) in rust_name.chars().enumerate() {
        if c == '_' && i > 0 {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// `&mut Context<Self>` (or `&Context<Self>`, for callables that only read).
fn is_context(ty: &Type) -> bool {
    matches!(ty, Type::Reference(reference) if last_segment_is(&reference.elem, "Context"))
}

/// Methods of the generated client a callable may not shadow.
const RESERVED: &[&str] = &["new", "transport", "connect", "state", "set_state"];

fn last_segment_is(ty: &Type, name: &str) -> bool {
    matches!(ty, Type::Path(path) if path.path.segments.last().is_some_and(|s| s.ident == name))
}

fn output_of(ty: &Type) -> Output {
    if matches!(ty, Type::Tuple(tuple) if tuple.elems.is_empty()) {
        return Output::Unit;
    }
    let Type::Path(path) = ty else { return Output::Value };
    let Some(last) = path.path.segments.last() else { return Output::Value };
    if last.ident != "Result" {
        return Output::Value;
    }
    let unit = match &last.arguments {
        PathArguments::AngleBracketed(args) => matches!(
            args.args.first(),
            Some(GenericArgument::Type(Type::Tuple(tuple))) if tuple.elems.is_empty()
        ),
        _ => false,
    };
    Output::Result { unit }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        assert_eq!(wire_name("stream_numbers", true), "streamNumbers");
        assert_eq!(wire_name("not_callable", true), "notCallable");
        assert_eq!(wire_name("add", true), "add");
        assert_eq!(wire_name("stream_numbers", false), "stream_numbers");
    }

    #[test]
    fn outputs() {
        let ty = |s: &str| syn::parse_str::<Type>(s).expect("a type");
        assert!(output_of(&ty("()")) == Output::Unit);
        assert!(output_of(&ty("i64")) == Output::Value);
        assert!(output_of(&ty("Result<()>")) == Output::Result { unit: true });
        assert!(output_of(&ty("Result<i64, String>")) == Output::Result { unit: false });
        assert!(output_of(&ty("std::result::Result<(), E>")) == Output::Result { unit: true });
    }
}
