//! The model of one `#[agent]` impl block, built and validated from the parsed syntax.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, ReturnType, Signature, Type};

use crate::attr::AgentArgs;
use crate::callable::{CallableDef, callable_attr, wire_name};
use crate::callback::{CallbackDef, callback_attr};
use crate::hooks::{HookKind, near_miss};
use crate::kebab::camel_case_to_kebab_case;

/// An agent: its type, route name, state types, hooks and callable methods.
pub(crate) struct AgentDef {
    pub(crate) self_ty: Type,
    pub(crate) route_name: String,
    pub(crate) connection_state: Option<Type>,
    pub(crate) state: Option<Type>,
    pub(crate) hooks: Vec<HookDef>,
    pub(crate) callables: Vec<CallableDef>,
    /// The `#[callback]` methods, which schedules and the queue call.
    pub(crate) callbacks: Vec<CallbackDef>,
    /// Wire names of the impl block's other methods: calling them is `not callable`.
    pub(crate) not_callable: Vec<String>,
    /// `#[agent(typescript)]`.
    pub(crate) typescript: bool,
    /// `#[agent(hibernate = ...)]`, default `true`.
    pub(crate) hibernate: bool,
    /// `#[agent(durability = "relaxed")]`.
    pub(crate) relaxed: bool,
    /// `#[agent(crate = ...)]`, default `::agents_runtime`: the path every generated item
    /// names the runtime by.
    pub(crate) runtime: syn::Path,
}

/// One hook method found in the impl block.
pub(crate) struct HookDef {
    pub(crate) kind: HookKind,
    /// `#[cfg]` attributes, repeated on the generated method so a cfg'd-out hook stays out.
    pub(crate) cfgs: Vec<syn::Attribute>,
    pub(crate) ident: syn::Ident,
    pub(crate) is_async: bool,
    /// The type of each parameter after the receiver: a type error in the call points there.
    pub(crate) param_spans: Vec<Span>,
    /// The return type (or the name, when there is none): a bad return type points there.
    pub(crate) output_span: Span,
}

/// Collects every error instead of stopping at the first.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(errors) => errors.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn into_compile_error(self) -> Option<proc_macro2::TokenStream> {
        self.0.map(|errors| errors.to_compile_error())
    }
}

/// The methods of an agent's impl block, sorted into hooks, callables and the rest.
#[derive(Default)]
struct Methods {
    hooks: Vec<HookDef>,
    callables: Vec<CallableDef>,
    callbacks: Vec<CallbackDef>,
    not_callable: Vec<String>,
}

impl AgentDef {
    /// The agent `item` defines, as far as it can be made out: invalid hooks are left out, so
    /// the `Agent` impl can still be generated and the user's code still resolves. `None` when
    /// the type itself cannot carry an impl. Every problem found goes into `errors`.
    pub(crate) fn from_syntax(
        args: AgentArgs,
        item: &ItemImpl,
        errors: &mut Errors,
    ) -> Option<Self> {
        let shape_ok = check_impl_shape(item, errors);
        let route_name = route_name(&args, item, errors);
        let camel_case = args.rename_all.as_ref().is_some_and(|rule| rule.value() == "camelCase");
        let methods = Methods::collect(item, camel_case, errors);
        if args.state.is_none() {
            check_no_state_hooks(&methods.hooks, errors);
        }
        let route_name = route_name.filter(|_| shape_ok)?;
        Some(Self {
            self_ty: (*item.self_ty).clone(),
            route_name,
            connection_state: args.connection_state,
            state: args.state,
            hooks: methods.hooks,
            callables: methods.callables,
            callbacks: methods.callbacks,
            not_callable: methods.not_callable,
            typescript: args.typescript,
            hibernate: args.hibernate.is_none_or(|flag| flag.value),
            relaxed: args.durability.is_some_and(|mode| mode.value() == "relaxed"),
            runtime: args.krate.unwrap_or_else(|| syn::parse_quote!(::agents_runtime)),
        })
    }
}

/// An agent is its type's own impl block, not a trait impl, and not generic.
fn check_impl_shape(item: &ItemImpl, errors: &mut Errors) -> bool {
    let mut ok = true;
    if let Some((_, path, _)) = &item.trait_ {
        ok = false;
        errors.push(syn::Error::new_spanned(
            path,
            "#[agent] goes on the agent's own impl block (`impl MyAgent { ... }`), not on a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        ok = false;
        errors.push(syn::Error::new_spanned(&item.generics, "an agent type cannot be generic"));
    }
    ok
}

/// `#[agent(name = ...)]`, or the type name in kebab-case; `None` when the type has no name.
/// A name that is no URL path segment is reported, and kept so the expansion can go on.
fn route_name(args: &AgentArgs, item: &ItemImpl, errors: &mut Errors) -> Option<String> {
    let type_ident = match &*item.self_ty {
        Type::Path(path) if path.qself.is_none() => path.path.segments.last().map(|s| &s.ident),
        _ => None,
    };
    match (&args.name, type_ident) {
        (Some(name), _) => {
            if let Err(why) = check_route_name(&name.value()) {
                errors.push(syn::Error::new(name.span(), why));
            }
            Some(name.value())
        }
        (None, Some(ident)) => {
            let route_name = camel_case_to_kebab_case(&ident.unraw().to_string());
            if let Err(why) = check_route_name(&route_name) {
                let why = format!("{why}; give the agent a name with #[agent(name = \"...\")]");
                errors.push(syn::Error::new(ident.span(), why));
            }
            Some(route_name)
        }
        (None, None) => {
            errors.push(syn::Error::new_spanned(
                &item.self_ty,
                "#[agent] needs a named type: `impl MyAgent { ... }`",
            ));
            None
        }
    }
}

impl Methods {
    /// Sorts the impl block's methods into hooks, callables and the rest, reporting the
    /// invalid ones (which are left out).
    fn collect(item: &ItemImpl, camel_case: bool, errors: &mut Errors) -> Self {
        let mut methods = Self::default();
        for impl_item in &item.items {
            let ImplItem::Fn(method) = impl_item else { continue };
            let rust_name = method.sig.ident.unraw().to_string();
            if let Some(marker) = callback_attr(method) {
                methods.not_callable.push(wire_name(&rust_name, camel_case));
                methods.add_callback(method, marker, &rust_name, errors);
                continue;
            }
            if callable_attr(method).is_some() {
                methods.add_callable(method, &rust_name, camel_case, errors);
                continue;
            }
            methods.not_callable.push(wire_name(&rust_name, camel_case));
            match hook_of(method) {
                Ok(Some(hook)) => methods.hooks.push(hook),
                Ok(None) => {}
                Err(error) => errors.push(error),
            }
        }
        methods
    }

    /// A `#[callback]` method, unless it is a hook or a callable too.
    fn add_callback(
        &mut self,
        method: &ImplItemFn,
        marker: &syn::Attribute,
        rust_name: &str,
        errors: &mut Errors,
    ) {
        if HookKind::from_name(rust_name).is_some() {
            let why = format!("`{rust_name}` is a hook; a hook cannot also be a #[callback]");
            errors.push(syn::Error::new(method.sig.ident.span(), why));
            return;
        }
        if let Some(callable) = callable_attr(method) {
            let why = "a method is either #[callable] (clients call it) or #[callback] (schedules and the queue call it), not both";
            let mut error = syn::Error::new_spanned(callable, why);
            error.combine(syn::Error::new_spanned(marker, why));
            errors.push(error);
            return;
        }
        match CallbackDef::from_method(method) {
            Ok(callback) => self.callbacks.push(callback),
            Err(error) => errors.push(error),
        }
    }

    /// A `#[callable]` method, unless it is a hook or its wire name is taken.
    fn add_callable(
        &mut self,
        method: &ImplItemFn,
        rust_name: &str,
        camel_case: bool,
        errors: &mut Errors,
    ) {
        if HookKind::from_name(rust_name).is_some() {
            let why = format!("`{rust_name}` is a hook; a hook cannot also be #[callable]");
            errors.push(syn::Error::new(method.sig.ident.span(), why));
            return;
        }
        match CallableDef::from_method(method, camel_case) {
            Ok(callable) if self.callables.iter().any(|c| c.wire_name == callable.wire_name) => {
                let why = format!("two callables are named `{}`", callable.wire_name);
                errors.push(syn::Error::new(method.sig.ident.span(), why));
            }
            Ok(callable) => self.callables.push(callable),
            Err(error) => errors.push(error),
        }
    }
}

/// Without `#[agent(state = ...)]`, the first hook that needs a state is reported.
fn check_no_state_hooks(hooks: &[HookDef], errors: &mut Errors) {
    if let Some(hook) = hooks.iter().find(|hook| hook.kind.needs_state()) {
        let why = format!(
            "`{}` needs an agent state: add `state = MyState` to #[agent(...)]",
            hook.ident
        );
        errors.push(syn::Error::new(hook.ident.span(), why));
    }
}

/// The hook `method` defines, `None` for a helper method, or why its shape is wrong.
fn hook_of(method: &ImplItemFn) -> syn::Result<Option<HookDef>> {
    let sig = &method.sig;
    let Some(kind) = hook_kind(sig)? else { return Ok(None) };
    check_hook_signature(kind, sig)?;
    let receivers = usize::from(kind.has_receiver());
    let param_spans = sig
        .inputs
        .iter()
        .skip(receivers)
        .map(|input| match input {
            FnArg::Typed(typed) => typed.ty.span(),
            FnArg::Receiver(receiver) => receiver.span(),
        })
        .collect();
    let output_span = match &sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.ident.span(),
    };
    let cfgs = method.attrs.iter().filter(|attr| attr.path().is_ident("cfg")).cloned().collect();
    Ok(Some(HookDef {
        kind,
        cfgs,
        ident: sig.ident.clone(),
        is_async: sig.asyncness.is_some(),
        param_spans,
        output_span,
    }))
}

/// The hook a method's name makes it, `None` for a helper; a near miss of a hook's name is an
/// error.
fn hook_kind(sig: &Signature) -> syn::Result<Option<HookKind>> {
    let name = sig.ident.to_string();
    if let Some(kind) = HookKind::from_name(&name) {
        return Ok(Some(kind));
    }
    match near_miss(&name) {
        Some(hook) => Err(syn::Error::new(
            sig.ident.span(),
            format!(
                "`{name}` is not an agent hook; did you mean `{}`?\n\
                 help: hooks are matched by exact name; rename this method if it is a helper",
                hook.name()
            ),
        )),
        None => Ok(None),
    }
}

/// The hook's signature against the table in `hooks.rs`: no generics, the receiver it takes,
/// `async` only where allowed, and the number of parameters. Parameter and return types are
/// left to the compiler, at the generated call.
fn check_hook_signature(kind: HookKind, sig: &Signature) -> syn::Result<()> {
    let name = kind.name();
    let expected = || format!("expected `{}`", kind.signature());
    if !sig.generics.params.is_empty() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            format!("hook `{name}` cannot be generic; {}", expected()),
        ));
    }
    check_hook_receiver(kind, sig)?;
    if sig.asyncness.is_some() && !kind.may_be_async() {
        return Err(syn::Error::new_spanned(
            sig.asyncness,
            format!("hook `{name}` cannot be async; {}", expected()),
        ));
    }
    let given = sig.inputs.len() - usize::from(kind.has_receiver());
    if given != kind.arity() {
        return Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!(
                "hook `{name}` takes {} parameter{}{}, not {given}; {}",
                kind.arity(),
                if kind.arity() == 1 { "" } else { "s" },
                if kind.has_receiver() { " after `&mut self`" } else { "" },
                expected()
            ),
        ));
    }
    Ok(())
}

/// `&self`, `&mut self` or a typed `self: &mut Self` for the hooks that take one; no `self` at
/// all for the others.
fn check_hook_receiver(kind: HookKind, sig: &Signature) -> syn::Result<()> {
    let name = kind.name();
    let expected = || format!("expected `{}`", kind.signature());
    match (kind.no_self_because(), sig.inputs.first()) {
        (None, Some(FnArg::Receiver(receiver)))
            if receiver.reference.is_some() || matches!(*receiver.ty, Type::Reference(_)) =>
        {
            Ok(())
        }
        (None, Some(FnArg::Receiver(receiver))) => Err(syn::Error::new_spanned(
            receiver,
            format!("hook `{name}` must take `&mut self`; {}", expected()),
        )),
        (None, _) => Err(syn::Error::new(
            sig.paren_token.span.join(),
            format!("hook `{name}` must take `&mut self`; {}", expected()),
        )),
        (Some(why), Some(FnArg::Receiver(receiver))) => Err(syn::Error::new_spanned(
            receiver,
            format!("hook `{name}` takes no `self`: {why}; {}", expected()),
        )),
        (Some(_), _) => Ok(()),
    }
}

/// A route name is one URL path segment.
fn check_route_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the agent name cannot be empty".into());
    }
    if let Some(bad) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '~')))
    {
        return Err(format!(
            "the agent name is a URL path segment: `{bad}` is not allowed (use letters, digits, `-`, `_`, `.`, `~`)"
        ));
    }
    Ok(())
}
