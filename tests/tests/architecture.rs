//! The shape of the code, checked from its source: `agents-runtime`'s modules form layers with no
//! import cycle of more than two modules (a parent and its child may use each other), and no
//! source file or function of the two library crates grows past a size a reader can hold.
//!
//! A module's dependencies are read from its `use crate::…`, `use super::…` and `use self::…`
//! trees and from every path starting with `crate`, `super`, `self` or a name such a `use`
//! brought in, outside `#[cfg(test)]` items. A path that names a re-export is followed to the
//! module that defines the item, so `lib.rs`'s and a folder's `mod.rs`'s re-exports add no edge
//! of their own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Longest source file, in lines.
const MAX_FILE_LINES: usize = 700;
/// Longest function outside test code, in lines (signature to closing brace).
const MAX_FN_LINES: usize = 80;
/// Most modules one import cycle may involve: a parent and its child, nothing else.
const MAX_CYCLE: usize = 2;

fn crate_src(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(name).join("src")
}

#[test]
fn runtime_modules_form_layers_without_cycles() {
    let crate_ = Crate::read(&crate_src("agents-runtime"));
    assert!(crate_.modules.len() > 10, "read only {} modules", crate_.modules.len());
    let graph = crate_.dependencies();
    // The parents and children that use each other, for the architecture chapter
    // (`--nocapture` shows them).
    for (from, targets) in &graph {
        for to in targets.iter().filter(|to| from < *to) {
            if graph.get(to).is_some_and(|back| back.contains(from)) {
                println!("pair: {} <-> {}", display(from), display(to));
            }
        }
    }
    let cycles: Vec<Vec<String>> = strongly_connected(&graph)
        .into_iter()
        .filter(|component| has_long_cycle(&graph, component))
        .map(|component| component.into_iter().map(|m| display(&m)).collect())
        .collect();
    if !cycles.is_empty() {
        let mut report = String::new();
        for cycle in &cycles {
            report.push_str(&format!("\n  modules on a cycle together: {}", cycle.join(", ")));
            for from in cycle {
                let key = path_of(from);
                for to in graph.get(&key).into_iter().flatten() {
                    if cycle.contains(&display(to)) {
                        report.push_str(&format!("\n    {from} -> {}", display(to)));
                    }
                }
            }
        }
        panic!("agents-runtime has import cycles through more than {MAX_CYCLE} modules:{report}");
    }
}

/// `agents-runtime`'s top-level modules, bottom layer first, as `lib.rs` lists them.
const LAYERS: &[&[&str]] = &[
    &["env", "error", "limits", "message", "request", "sync"],
    &["wire"],
    &["storage"],
    &["cluster"],
    &["sql"],
    &["outbox"],
    &["instance"],
    &["client"],
    &["mcp"],
    &["agent"],
    &["transport"],
    &["registry", "server", "testing", "typescript", "bench", "fuzz", "prelude", "__private"],
];

#[test]
fn runtime_layers_use_only_the_layers_below() {
    let crate_ = Crate::read(&crate_src("agents-runtime"));
    let layer_of = |module: &ModPath| -> usize {
        let Some(top) = module.first() else { return LAYERS.len() }; // lib.rs: above them all
        LAYERS
            .iter()
            .position(|layer| layer.contains(&top.as_str()))
            .unwrap_or_else(|| panic!("`{top}` is in no layer: add it to LAYERS"))
    };
    let mut upward = Vec::new();
    for (from, targets) in crate_.dependencies() {
        for to in targets {
            if layer_of(&to) > layer_of(&from) {
                upward.push(format!("{} -> {}", display(&from), display(&to)));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "modules that use a layer above their own:\n  {}",
        upward.join("\n  ")
    );
}

#[test]
fn the_checker_sees_a_cycle() {
    // Three modules that use each other in a ring, and a parent/child pair that is allowed.
    let mut graph = Graph::new();
    let a = vec!["a".to_owned()];
    let b = vec!["b".to_owned()];
    let c = vec!["c".to_owned()];
    let p = vec!["p".to_owned()];
    let pc = vec!["p".to_owned(), "c".to_owned()];
    graph.entry(a.clone()).or_default().insert(b.clone());
    graph.entry(b.clone()).or_default().insert(c.clone());
    graph.entry(c.clone()).or_default().insert(a.clone());
    graph.entry(p.clone()).or_default().insert(pc.clone());
    graph.entry(pc.clone()).or_default().insert(p.clone());
    let mut sizes: Vec<usize> = strongly_connected(&graph).iter().map(Vec::len).collect();
    sizes.sort_unstable();
    assert_eq!(sizes.iter().filter(|&&n| n > 1).collect::<Vec<_>>(), [&2, &3]);
    let broken = |graph: &Graph| -> Vec<Vec<ModPath>> {
        let components = strongly_connected(graph).into_iter();
        components.filter(|component| has_long_cycle(graph, component)).collect()
    };
    assert_eq!(broken(&graph), [vec![a.clone(), b.clone(), c.clone()]]);
    // A parent with two children that each use it back: a component of three, no long cycle.
    let pd = vec!["p".to_owned(), "d".to_owned()];
    graph.entry(p.clone()).or_default().insert(pd.clone());
    graph.entry(pd.clone()).or_default().insert(p.clone());
    assert_eq!(broken(&graph).len(), 1);
    // One more edge, p::d -> p::c, closes the cycle p::d -> p::c -> p -> p::d.
    graph.entry(pd.clone()).or_default().insert(pc.clone());
    assert_eq!(broken(&graph).len(), 2);
    // Two siblings that use each other are not a parent and its child.
    let mut siblings = Graph::new();
    siblings.entry(a.clone()).or_default().insert(b.clone());
    siblings.entry(b.clone()).or_default().insert(a.clone());
    assert_eq!(broken(&siblings), [vec![a.clone(), b.clone()]]);

    // Paths resolve through re-exports and `super`, and test modules are left out.
    let crate_ = Crate::from_sources(&[
        (vec![], "mod a; mod b; pub use b::Thing;"),
        (vec!["a"], "use crate::Thing; #[cfg(test)] mod tests { use crate::c::X; }"),
        (vec!["b"], "pub struct Thing; mod inner; fn f() { super::a::g(); }"),
        (vec!["b", "inner"], "fn h() { super::super::a::g(); }"),
    ]);
    let graph = crate_.dependencies();
    let edges = |from: &[&str]| -> Vec<String> {
        let from: Vec<String> = from.iter().map(|s| s.to_string()).collect();
        graph.get(&from).into_iter().flatten().map(display).collect()
    };
    assert_eq!(edges(&["a"]), ["b"]);
    assert_eq!(edges(&["b"]), ["a"]);
    assert_eq!(edges(&["b", "inner"]), ["a"]);
    assert!(edges(&[]).contains(&"b".to_owned()));
}

#[test]
fn files_and_functions_stay_small() {
    let mut too_long = Vec::new();
    for name in ["agents-runtime", "agents-macros"] {
        let src = crate_src(name);
        for file in rust_files(&src) {
            let text = std::fs::read_to_string(&file).expect("source file reads");
            let shown = file.strip_prefix(src.join("..").join("..")).unwrap_or(&file).display();
            let lines = text.lines().count();
            if lines > MAX_FILE_LINES {
                too_long.push(format!("{shown}: {lines} lines (at most {MAX_FILE_LINES})"));
            }
            let ast = syn::parse_file(&text).expect("source file parses");
            let mut functions = FunctionLengths::default();
            functions.visit_file(&ast);
            for (function, line, lines) in functions.long {
                too_long.push(format!(
                    "{shown}:{line}: fn {function} is {lines} lines (at most {MAX_FN_LINES})"
                ));
            }
        }
    }
    assert!(too_long.is_empty(), "too long:\n  {}", too_long.join("\n  "));
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("source folder reads") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Functions outside test code longer than [`MAX_FN_LINES`].
#[derive(Default)]
struct FunctionLengths {
    long: Vec<(String, usize, usize)>,
}

impl FunctionLengths {
    fn check(&mut self, name: &syn::Ident, start: proc_macro2::Span, block: &syn::Block) {
        let first = start.start().line;
        let lines = block.brace_token.span.close().end().line + 1 - first;
        if lines > MAX_FN_LINES {
            self.long.push((name.to_string(), first, lines));
        }
    }
}

impl<'ast> Visit<'ast> for FunctionLengths {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        if !is_test(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }
    fn visit_item_fn(&mut self, item: &'ast syn::ItemFn) {
        if !is_test(&item.attrs) {
            self.check(&item.sig.ident, item.sig.fn_token.span, &item.block);
            syn::visit::visit_item_fn(self, item);
        }
    }
    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test(&item.attrs) {
            self.check(&item.sig.ident, item.sig.fn_token.span, &item.block);
            syn::visit::visit_impl_item_fn(self, item);
        }
    }
    fn visit_trait_item_fn(&mut self, item: &'ast syn::TraitItemFn) {
        if let Some(block) = &item.default {
            self.check(&item.sig.ident, item.sig.fn_token.span, block);
        }
        syn::visit::visit_trait_item_fn(self, item);
    }
}

/// `#[cfg(test)]`, `#[cfg(all(test, ...))]` or `#[test]`.
fn is_test(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|attr| {
        attr.path().is_ident("test")
            || (attr.path().is_ident("cfg")
                && attr.parse_args::<syn::Meta>().is_ok_and(|meta| needs_test(&meta)))
    })
}

/// Whether a `cfg` predicate holds only under `test`.
fn needs_test(meta: &syn::Meta) -> bool {
    match meta {
        syn::Meta::Path(path) => path.is_ident("test"),
        syn::Meta::List(list) if list.path.is_ident("all") => list
            .parse_args_with(
                syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated,
            )
            .is_ok_and(|all| all.iter().any(needs_test)),
        _ => false,
    }
}

/// A module's path from the crate root (`[]` is `lib.rs`).
type ModPath = Vec<String>;
type Graph = BTreeMap<ModPath, BTreeSet<ModPath>>;

fn display(path: &ModPath) -> String {
    if path.is_empty() { "crate".to_owned() } else { path.join("::") }
}

fn path_of(display: &str) -> ModPath {
    if display == "crate" { Vec::new() } else { display.split("::").map(str::to_owned).collect() }
}

/// What one module holds, as far as resolving paths needs it.
#[derive(Default)]
struct Module {
    /// Child modules, file or inline.
    children: BTreeSet<String>,
    /// Names brought in by `use`: name → the path written (for resolving later paths).
    imports: HashMap<String, Vec<String>>,
    /// Every path a `use` names, even where two `use`s bring in the same name.
    used: Vec<Vec<String>>,
    /// Modules whose every public name a `use …::*` brings in.
    globs: Vec<Vec<String>>,
    /// Paths written in the module's code (not its `use` items).
    paths: Vec<Vec<String>>,
}

struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

impl Crate {
    /// Reads the crate whose root is `src/lib.rs`, following `mod name;` to its file.
    fn read(src: &Path) -> Self {
        let mut crate_ = Crate { modules: BTreeMap::new() };
        let mut files = vec![(Vec::new(), src.join("lib.rs"), src.to_path_buf())];
        while let Some((path, file, dir)) = files.pop() {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
            let ast = syn::parse_file(&text).expect("source file parses");
            for (child, child_dir) in crate_.add_items(path.clone(), &ast.items, &dir) {
                let name = child.last().expect("a child has a name").clone();
                let (flat, nested) = (child_dir.join(format!("{name}.rs")), child_dir.join(&name));
                let (file, dir) =
                    if flat.exists() { (flat, nested) } else { (nested.join("mod.rs"), nested) };
                files.push((child, file, dir));
            }
        }
        crate_
    }

    /// A crate from `(module path, source)` pairs, for testing the checker itself.
    fn from_sources(sources: &[(Vec<&str>, &str)]) -> Self {
        let mut crate_ = Crate { modules: BTreeMap::new() };
        for (path, text) in sources {
            let ast = syn::parse_file(text).expect("test source parses");
            let path = path.iter().map(|s| s.to_string()).collect();
            crate_.add_items(path, &ast.items, Path::new("."));
        }
        crate_
    }

    /// Records `items` as module `path`; returns the file modules it declares, with the folder
    /// their files are in.
    fn add_items(
        &mut self,
        path: ModPath,
        items: &[syn::Item],
        dir: &Path,
    ) -> Vec<(ModPath, PathBuf)> {
        let mut collector = Collector { module: Module::default(), inline: Vec::new() };
        let mut declared = Vec::new();
        for item in items {
            if let syn::Item::Mod(item) = item {
                if is_test(&item.attrs) {
                    continue;
                }
                let name = item.ident.to_string();
                collector.module.children.insert(name.clone());
                let mut child = path.clone();
                child.push(name);
                match &item.content {
                    Some((_, items)) => collector.inline.push((child, items.clone())),
                    None => declared.push((child, dir.to_path_buf())),
                }
                continue;
            }
            collector.visit_item(item);
        }
        let Collector { module, inline } = collector;
        self.modules.insert(path.clone(), module);
        for (child, items) in inline {
            let child_dir = dir.join(child.last().expect("named"));
            declared.extend(self.add_items(child, &items, &child_dir));
        }
        declared
    }

    /// Every module's set of modules it uses, itself left out.
    fn dependencies(&self) -> Graph {
        let mut graph = Graph::new();
        for (path, module) in &self.modules {
            let mut targets = BTreeSet::new();
            let written = module.used.iter().chain(&module.globs).chain(&module.paths);
            for segments in written {
                if let Some(target) = self.resolve(path, segments, 0)
                    && &target != path
                {
                    targets.insert(target);
                }
            }
            graph.insert(path.clone(), targets);
        }
        graph
    }

    /// The module that defines what `segments`, written in module `from`, names; `None` for
    /// paths outside the crate.
    fn resolve(&self, from: &ModPath, segments: &[String], depth: usize) -> Option<ModPath> {
        if depth > 16 || segments.is_empty() {
            return None;
        }
        let (mut current, mut rest) = match segments[0].as_str() {
            "crate" => (Vec::new(), &segments[1..]),
            "self" => (from.clone(), &segments[1..]),
            "super" => {
                let mut current = from.clone();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    current.pop()?;
                    rest = &rest[1..];
                }
                (current, rest)
            }
            first => {
                let module = self.modules.get(from)?;
                if module.children.contains(first) {
                    (from.clone(), segments)
                } else if let Some(imported) = module.imports.get(first) {
                    let mut joined = imported.clone();
                    joined.extend_from_slice(&segments[1..]);
                    return self.resolve(from, &joined, depth + 1);
                } else {
                    return None; // another crate, a local item or a generic parameter
                }
            }
        };
        loop {
            let Some(module) = self.modules.get(&current) else { return Some(current) };
            let Some(next) = rest.first() else { return Some(current) };
            if module.children.contains(next) {
                current.push(next.clone());
                rest = &rest[1..];
                continue;
            }
            if let Some(imported) = module.imports.get(next) {
                // A re-export (or an import reached through `super`): follow it home.
                let mut joined = imported.clone();
                joined.extend_from_slice(&rest[1..]);
                return self.resolve(&current, &joined, depth + 1);
            }
            return Some(current);
        }
    }
}

/// Gathers one module's `use` items and paths, skipping `#[cfg(test)]` items.
struct Collector {
    module: Module,
    inline: Vec<(ModPath, Vec<syn::Item>)>,
}

impl Collector {
    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(path) => {
                prefix.push(path.ident.to_string());
                self.use_tree(prefix, &path.tree);
                prefix.pop();
            }
            syn::UseTree::Name(name) => self.import(prefix, &name.ident, &name.ident),
            syn::UseTree::Rename(rename) => self.import(prefix, &rename.ident, &rename.rename),
            syn::UseTree::Glob(_) => self.module.globs.push(prefix.clone()),
            syn::UseTree::Group(group) => {
                for tree in &group.items {
                    self.use_tree(prefix, tree);
                }
            }
        }
    }

    fn import(&mut self, prefix: &[String], ident: &syn::Ident, alias: &syn::Ident) {
        let mut path = prefix.to_vec();
        if ident != "self" {
            path.push(ident.to_string());
        }
        let alias = if alias == "self" {
            prefix.last().cloned().unwrap_or_default()
        } else {
            alias.to_string()
        };
        self.module.used.push(path.clone());
        self.module.imports.insert(alias, path);
    }
}

impl<'ast> Visit<'ast> for Collector {
    fn visit_item(&mut self, item: &'ast syn::Item) {
        let attrs = match item {
            syn::Item::Fn(i) => &i.attrs,
            syn::Item::Impl(i) => &i.attrs,
            syn::Item::Mod(i) => &i.attrs,
            syn::Item::Use(i) => &i.attrs,
            syn::Item::Struct(i) => &i.attrs,
            syn::Item::Enum(i) => &i.attrs,
            syn::Item::Const(i) => &i.attrs,
            syn::Item::Static(i) => &i.attrs,
            syn::Item::Trait(i) => &i.attrs,
            syn::Item::Type(i) => &i.attrs,
            _ => return syn::visit::visit_item(self, item),
        };
        if !is_test(attrs) {
            syn::visit::visit_item(self, item);
        }
    }
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        // A module inside a function or block: its paths count as the enclosing module's.
        if !is_test(&item.attrs) {
            syn::visit::visit_item_mod(self, item);
        }
    }
    fn visit_impl_item_fn(&mut self, item: &'ast syn::ImplItemFn) {
        if !is_test(&item.attrs) {
            syn::visit::visit_impl_item_fn(self, item);
        }
    }
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        if !is_test(&item.attrs) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
    }
    fn visit_macro(&mut self, mac: &'ast syn::Macro) {
        // Arguments that read as expressions (`format!`, `matches!`, `assert!`, `tracing`'s
        // macros, `vec!`…): their paths count too.
        let parser = syn::punctuated::Punctuated::<syn::Expr, syn::Token![,]>::parse_terminated;
        if let Ok(args) = mac.parse_body_with(parser) {
            for arg in &args {
                self.visit_expr(arg);
            }
        }
        syn::visit::visit_macro(self, mac);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        if path.leading_colon.is_none() && path.segments.len() > 1 {
            self.module.paths.push(path.segments.iter().map(|s| s.ident.to_string()).collect());
        }
        syn::visit::visit_path(self, path);
    }
}

/// Whether `component` (a strongly connected component of `graph`) breaks the layering: a
/// cycle through more than [`MAX_CYCLE`] modules, or two modules using each other that are
/// not a parent and its child.
///
/// A component has no cycle through three modules or more exactly when each of its edges is
/// answered by the reverse edge and those pairs form a tree: an edge `u -> v` without
/// `v -> u` closes a cycle with the shortest path back from `v` to `u`, of two edges or more;
/// and pairs that form a ring are a cycle through all of the ring's modules.
fn has_long_cycle(graph: &Graph, component: &[ModPath]) -> bool {
    if component.len() < 2 {
        return false;
    }
    let inside: BTreeSet<&ModPath> = component.iter().collect();
    let mut pairs = 0;
    for from in component {
        for to in graph.get(from).into_iter().flatten().filter(|to| inside.contains(to)) {
            let answered = graph.get(to).is_some_and(|back| back.contains(from));
            if !answered || !(is_child(from, to) || is_child(to, from)) {
                return true;
            }
            pairs += 1;
        }
    }
    // Every edge is half of a pair; a tree on n modules has n - 1 pairs.
    pairs / 2 != component.len() - 1
}

/// Whether `child` is a module declared in `parent`.
fn is_child(child: &ModPath, parent: &ModPath) -> bool {
    child.len() == parent.len() + 1 && child.starts_with(parent)
}

/// Tarjan's strongly connected components of `graph`.
fn strongly_connected(graph: &Graph) -> Vec<Vec<ModPath>> {
    struct State<'g> {
        graph: &'g Graph,
        index: HashMap<&'g ModPath, usize>,
        low: HashMap<&'g ModPath, usize>,
        stack: Vec<&'g ModPath>,
        on_stack: BTreeSet<&'g ModPath>,
        components: Vec<Vec<ModPath>>,
    }
    fn connect<'g>(state: &mut State<'g>, node: &'g ModPath) {
        let next = state.index.len();
        state.index.insert(node, next);
        state.low.insert(node, next);
        state.stack.push(node);
        state.on_stack.insert(node);
        for target in state.graph.get(node).into_iter().flatten() {
            if !state.index.contains_key(target) {
                connect(state, target);
                let low = state.low[node].min(state.low[target]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(target) {
                let low = state.low[node].min(state.index[target]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member.clone());
                if member == node {
                    break;
                }
            }
            component.sort();
            state.components.push(component);
        }
    }
    let mut state = State {
        graph,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node) {
            connect(&mut state, node);
        }
    }
    state.components
}
