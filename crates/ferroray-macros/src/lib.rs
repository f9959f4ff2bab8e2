//! Procedural macros of ferroray, re-exported by the `ferroray` crate:
//! [`macro@remote`], documented there (what it generates, what `remote`
//! returns, every key it accepts).
//!
//! How the expansion stays apart from the user's names: the generated
//! module `f` has no glob import and declares only `NAME`, `Options`,
//! `DynamicOptions`, `options`, `remote` and `#[doc(hidden)]` `__ferroray..`
//! items; it names the user's types and attribute expressions only through
//! `__ferroray_user_scope`, a child module that glob-imports the function's
//! scope (below any name declared there) and declares only `__ferroray..`
//! names. The adapter that decodes arguments, calls the function and encodes
//! its return, and the link-time registration, sit beside the function in an
//! anonymous `const _`, so they resolve names exactly as the function's own
//! signature does. Every other path is absolute (`::ferroray::..`,
//! `::core::..`, `::std::..`).

mod actor;

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, GenericArgument, ItemFn, Lit, PathArguments, ReturnType, Token, Type};

/// Makes a function remote: `f::remote(args..)` runs it as a task on a worker
/// process and returns at once with a future of its result.
///
/// The function stays as it is (it can still be called locally); the
/// attribute adds, beside it, a module of the same name (modules and
/// functions live in different namespaces) holding:
///
/// | item | what it is |
/// | --- | --- |
/// | `f::remote(args..)` | submits the task with the attribute's options; returns at once |
/// | `f::options()` | an `f::Options` builder starting from the attribute's options; finish with `.remote(args..)` |
/// | `f::Options` | the builder: `num_cpus`, `num_gpus`, `resource`, `max_retries`, `retry_exceptions`, `retry_exceptions_for`, `retry_exceptions_of::<E>()`, `generator_backpressure`, `no_generator_backpressure`, `enable_task_events` (each documented on the generated page), and for generators `num_returns_dynamic()` giving an `f::DynamicOptions` |
/// | `f::NAME` | the name workers find the function by: its module path and name |
///
/// Other generated items are `#[doc(hidden)]` and named `__ferroray..`: a
/// user's own `Options`, `NAME`, `Result`, `remote`, ... beside the function
/// are not affected, and the user's types in the signature mean what they
/// mean at the function.
///
/// Each parameter of type `T` accepts a `T`, an `ObjectRef<T>` or a
/// `&ObjectRef<T>` (a ref's value is fetched for the task). Parameters are
/// taken by value (they cross processes) and must be `Serialize +
/// DeserializeOwned`, like the return values.
///
/// # What `remote` returns
///
/// - a function returning `T` gives `ObjectRef<T>`;
/// - `Result<T, E>` (any alias named `Result`) gives `ObjectRef<T>`; an `Err`
///   is the task's error, `Error::Task` with `E`'s type name and message
///   (`E: Display`). When `E` is also `serde::Serialize` the value itself is
///   carried too, and `Error::downcast_task_error::<E>()` gives it back; when
///   `E` is `ferroray::Error` (a nested task's error passed on with `?`), the
///   caller's `get` returns that same error, variant and all;
/// - with `num_returns = N`, a tuple of `N` types gives a tuple of `N` refs;
/// - a generator, `impl Iterator<Item = T>` (or, from an `async fn`,
///   `impl Stream<Item = T>`), gives an `ObjectRefGenerator<T>` that streams
///   the items' refs as they are yielded; items of type `Result<T, E>` end
///   the stream at the first `Err`, and a `Result<impl Iterator<..>, E>`
///   fails before the first item. With `num_returns = N` it gives `N` refs
///   instead, and with `num_returns = "dynamic"` (or
///   `options().num_returns_dynamic()`) one
///   `ObjectRef<DynamicObjectRefGenerator<T>>`.
///
/// An `async fn` runs to completion on the worker's task thread.
///
/// # Keys
///
/// `#[remote(key = value, ..)]` sets the defaults that `f::options()` starts
/// from; each value is an expression, evaluated where the function is.
///
/// | key | type | meaning | default |
/// | --- | --- | --- | --- |
/// | `num_cpus` | any number (`1`, `0.5`) | CPUs the task holds while it runs | 1 |
/// | `num_gpus` | any number | GPUs the task holds while it runs | 0 |
/// | `resources` | iterable of `(name, amount)`, e.g. `[("disk", 1)]` | custom resources (declared by `Config::resource`) the task holds | none |
/// | `max_retries` | a count (`u32`), or `"forever"` (Ray's `-1`, which is refused here) | runs again after its worker dies; 0 never | 3 |
/// | `retry_exceptions` | `bool` | also retry when the task returns `Err` or panics | `false` |
/// | `enable_task_events` | `bool` | record the task's state changes for `ferroray::tasks()` | `true` |
/// | `generator_backpressure` | integer literal ≥ 1, or an `impl Into<Backpressure>` (`NonZeroU32`) | streaming generators: pause while this many items are unconsumed (0 or a negative literal does not compile) | no limit |
/// | `num_returns` | integer literal ≥ 1, or `"dynamic"` | the number of return objects (see above) | 1 |
///
/// An invalid amount (negative, not finite) is reported when the task is
/// submitted: the ref's `get` fails with `Error::InvalidOption`.
///
/// # Compile errors
///
/// These are refused with an error at the user's code: a generic function, a
/// method, a reference parameter, an unknown key, a `num_returns` that does
/// not match the returned tuple, `num_returns = "dynamic"` on a function
/// that is not a generator, and a remote function declared inside a
/// function body (workers find functions by module path, which a body does
/// not have). Doc tests are wrapped in `fn main() { .. }` unless they write
/// their own `fn main`, so a doc test declaring a remote function must write
/// `fn main`.
///
/// The examples are in the documentation of `ferroray::remote` (the
/// re-export), where they run as doc tests.
/// Makes an `impl` block's type an actor: `T::remote(args..)` starts one on
/// a worker process of its own and returns its `ActorHandle<T>` at once;
/// its public `&self` / `&mut self` methods are called through the handle
/// (`h.incr().remote(5)`); one caller's calls start in the order it made
/// them.
///
/// The `impl` block stays as it is. A function named `new` (returning
/// `Self`, or `Result<Self, E>`: an `Err` fails the creation) is the
/// constructor. Every `pub fn` / `pub async fn` taking `&self` or
/// `&mut self` is a remote method; its arguments and return follow the
/// same rules as a `#[remote]` function's (by value; `Result` gives the
/// `Err` as the call's error; `impl Iterator<Item = T>`, also borrowing
/// `self`, or an async `impl Stream<Item = T>`, gives an
/// `ObjectRefGenerator<T>`). Other functions stay local.
///
/// # Three kinds of actor
///
/// - *Serial* (the default): one call at a time on one thread; the state
///   needs neither `Send` nor `Sync`.
/// - *Threaded* (`max_concurrency` above 1, no `async fn` method): up to
///   `max_concurrency` calls at once on a pool of threads; `&self` methods
///   run together, a `&mut self` method runs alone, and no call overtakes
///   one sent before it. The state must be `Send + Sync` (a compile error
///   with `max_concurrency = N` here, an `InvalidOption` from
///   `options().max_concurrency(n).remote()`).
/// - *Async* (any `async fn` method): every call is a future on the
///   actor's one event loop (a tokio current-thread runtime: its timers and
///   I/O work), and calls interleave at `.await`, up to `max_concurrency`
///   (default 1000, as Ray). A `&mut self` method holds the state alone
///   across its awaits. The state stays on one thread, so it needs neither
///   `Send` nor `Sync`. Await refs (`r.await`) rather than `get` them: a
///   blocking `get` stops the whole loop while it waits.
///
/// # Keys
///
/// | key | type | meaning | default |
/// | --- | --- | --- | --- |
/// | `max_concurrency` | `u32` | calls at once (see above) | 1; 1000 for an async actor |
/// | `max_restarts` | a count, or `Retries::Forever` | times the process is started again after it dies | 0 |
/// | `max_task_retries` | a count, or `Retries::Forever` | times a call is run again after the process died under it | 0 |
/// | `num_cpus` | any number | CPUs the actor holds for its life | 0 |
/// | `num_gpus` | any number | GPUs the actor holds for its life | 0 |
///
/// `T::options()` starts from these (each has a setter) and adds `name`,
/// `lifetime_detached`, `resource` and `resources`. Refused at compile
/// time, at the user's code: a trait impl, a generic impl, no `new`, a
/// method taking `self` by value or an argument by reference, an unknown
/// key, and `max_concurrency = N` (N > 1) on a synchronous actor whose
/// state is not `Send + Sync`.
#[proc_macro_attribute]
pub fn actor(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = syn::parse_macro_input!(attr as RemoteArgs);
    let item = syn::parse_macro_input!(item as syn::ItemImpl);
    match actor::expand(args.items, item) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = syn::parse_macro_input!(attr as RemoteArgs);
    let func = syn::parse_macro_input!(item as ItemFn);
    match expand(args, func) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

struct RemoteArgs {
    items: Punctuated<syn::MetaNameValue, Token![,]>,
}

impl Parse for RemoteArgs {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        Ok(RemoteArgs { items: Punctuated::parse_terminated(input)? })
    }
}

#[derive(Default)]
struct Options {
    setters: Vec<TokenStream2>,
    num_returns: Option<(usize, Span)>,
    dynamic: Option<Span>,
}

fn parse_options(args: RemoteArgs) -> syn::Result<Options> {
    let mut out = Options::default();
    for nv in args.items {
        let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        let v = &nv.value;
        let span = nv.span();
        let setter = match key.as_str() {
            "num_cpus" => quote_spanned!(span=> __ferroray_opts.num_cpus = (#v) as f64;),
            "num_gpus" => quote_spanned!(span=> __ferroray_opts.num_gpus = (#v) as f64;),
            "max_retries" => match v {
                Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) if s.value() == "forever" => quote_spanned!(span=>
                    __ferroray_opts.max_retries = ::ferroray::Retries::Forever;
                ),
                // Ray's -1 (however it parses: a negative literal or a negation).
                _ if matches!(v, Expr::Lit(syn::ExprLit { lit: Lit::Str(_), .. }))
                    || quote!(#v).to_string().starts_with('-') =>
                {
                    return Err(syn::Error::new_spanned(
                        v,
                        "max_retries must be a count (`max_retries = 3`) or \"forever\" (Ray's -1)",
                    ))
                }
                _ => quote_spanned!(span=>
                    __ferroray_opts.max_retries = ::core::convert::Into::<::ferroray::Retries>::into(#v);
                ),
            },
            "enable_task_events" => quote_spanned!(span=> __ferroray_opts.enable_task_events = #v;),
            "retry_exceptions" => quote_spanned!(span=>
                __ferroray_opts.retry_exceptions = if #v {
                    ::ferroray::__private::RetryExceptions::All
                } else {
                    ::ferroray::__private::RetryExceptions::None
                };
            ),
            "resources" => quote_spanned!(span=>
                for (__ferroray_name, __ferroray_amount) in #v {
                    __ferroray_opts.resources.push((
                        ::std::string::ToString::to_string(&__ferroray_name),
                        __ferroray_amount as f64,
                    ));
                }
            ),
            "generator_backpressure" => match v {
                Expr::Lit(syn::ExprLit { lit: Lit::Int(i), .. }) => {
                    if !matches!(i.base10_parse::<u32>(), Ok(n) if n > 0) {
                        return Err(syn::Error::new_spanned(
                            v,
                            "generator_backpressure must be at least 1 (leave it out for no limit)",
                        ));
                    }
                    quote_spanned!(span=>
                        __ferroray_opts.generator_backpressure =
                            ::core::option::Option::Some(::ferroray::Backpressure::items::<#i>());
                    )
                }
                _ if quote!(#v).to_string().starts_with('-') => {
                    return Err(syn::Error::new_spanned(
                        v,
                        "generator_backpressure must be at least 1 (leave it out for no limit)",
                    ))
                }
                _ => quote_spanned!(span=>
                    __ferroray_opts.generator_backpressure = ::core::option::Option::Some(
                        ::core::convert::Into::<::ferroray::Backpressure>::into(#v)
                    );
                ),
            },
            "num_returns" => {
                let n = match v {
                    Expr::Lit(syn::ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse::<usize>()?,
                    Expr::Lit(syn::ExprLit { lit: Lit::Str(s), .. }) if s.value() == "dynamic" => {
                        out.dynamic = Some(v.span());
                        continue;
                    }
                    _ => {
                        return Err(syn::Error::new_spanned(v, "num_returns must be an integer literal or \"dynamic\""))
                    }
                };
                if n == 0 {
                    return Err(syn::Error::new_spanned(v, "num_returns must be at least 1"));
                }
                out.num_returns = Some((n, v.span()));
                continue;
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &nv.path,
                    "unknown remote option: expected one of num_cpus, num_gpus, resources, max_retries, \
                     retry_exceptions, enable_task_events, num_returns, generator_backpressure",
                ))
            }
        };
        out.setters.push(setter);
    }
    Ok(out)
}

/// `Result<T, ..>` (by its last path segment) gives `Some(T)`.
fn result_ok_type(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    let seg = p.path.segments.last()?;
    if seg.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &seg.arguments else {
        return None;
    };
    match args.args.first()? {
        GenericArgument::Type(t) => Some(t),
        _ => None,
    }
}

/// `impl Iterator<Item = X>` or `impl Stream<Item = X>`: `Some((X, is_stream))`.
fn generator_item(ty: &Type) -> Option<(Type, bool)> {
    let Type::ImplTrait(it) = ty else { return None };
    it.bounds.iter().find_map(|b| {
        let syn::TypeParamBound::Trait(t) = b else { return None };
        let seg = t.path.segments.last()?;
        let is_stream = match seg.ident.to_string().as_str() {
            "Iterator" => false,
            "Stream" => true,
            _ => return None,
        };
        let PathArguments::AngleBracketed(args) = &seg.arguments else { return None };
        args.args.iter().find_map(|a| match a {
            GenericArgument::AssocType(at) if at.ident == "Item" => Some((at.ty.clone(), is_stream)),
            _ => None,
        })
    })
}

/// What the function hands back.
enum Shape {
    Plain { ok: Type, fallible: bool },
    Generator { item: Type, item_fallible: bool, outer_fallible: bool, is_stream: bool },
}

fn shape(ret: &Type) -> Shape {
    let (inner, outer_fallible) = match result_ok_type(ret) {
        Some(t) if generator_item(t).is_some() => (t.clone(), true),
        _ => (ret.clone(), false),
    };
    match generator_item(&inner) {
        Some((item, is_stream)) => {
            let (item, item_fallible) = match result_ok_type(&item) {
                Some(t) => (t.clone(), true),
                None => (item, false),
            };
            Shape::Generator { item, item_fallible, outer_fallible, is_stream }
        }
        None => match result_ok_type(ret) {
            Some(t) => Shape::Plain { ok: t.clone(), fallible: true },
            None => Shape::Plain { ok: ret.clone(), fallible: false },
        },
    }
}

/// The body that runs a generator `call` (`call_in_async`: the same call
/// inside an `async` block) and hands each item to `__sink`; `__args` is the
/// adapter's `ArgReader`. With `in_async`, the body is itself inside an
/// `async` block (an async actor's method) and `__sink` is an
/// `AsyncItemSink`, awaited for room.
fn drive_generator(
    call: TokenStream2,
    call_in_async: TokenStream2,
    item_fallible: bool,
    outer_fallible: bool,
    is_stream: bool,
    in_async: bool,
) -> TokenStream2 {
    let take = if item_fallible { unwrap_err(quote!(__item)) } else { quote!(__item) };
    let report = if in_async {
        quote!(__sink.item(::ferroray::__private::encode_item(&__item)?).await?;)
    } else {
        quote!(__sink.item(::ferroray::__private::encode_item(&__item)?)?;)
    };
    let each = quote!({
        let __item = #take;
        #report
    });
    if is_stream {
        let gen = if outer_fallible { unwrap_err(call_in_async) } else { call_in_async };
        let drive = quote! {
            let mut __gen = ::std::pin::pin!(#gen);
            while let ::std::option::Option::Some(__item) =
                ::ferroray::__private::StreamExt::next(&mut __gen).await
            #each
        };
        if in_async {
            drive
        } else {
            // The whole stream in one `block_on` (not one per item): reporting
            // an item is synchronous, and may wait for room.
            quote! {
                ::ferroray::__private::block_on_in(__args.context(), async {
                    #drive
                    ::std::result::Result::<(), ::ferroray::Error>::Ok(())
                })?;
            }
        }
    } else {
        let gen = if outer_fallible { unwrap_err(call) } else { call };
        quote!(for __item in #gen #each)
    }
}

fn unwrap_err(expr: TokenStream2) -> TokenStream2 {
    quote!(match #expr {
        ::std::result::Result::Ok(v) => v,
        ::std::result::Result::Err(e) => return ::std::result::Result::Err({
            // The first that applies: a `ferroray::Error` passed on, a
            // serializable error (its value carried), any `Display` error.
            use ::ferroray::__private::{ViaDisplay as _, ViaFerrorayError as _, ViaSerialize as _};
            (&&::ferroray::__private::ErrorProbe(&e)).__ferroray_task_error()
        }),
    })
}

/// Rewrites a path that starts at `self::` or `super::` so it means the same
/// from inside the generated module's `__ferroray_user_scope`, two levels
/// below the function's own module.
struct Rebase;

impl syn::visit_mut::VisitMut for Rebase {
    fn visit_path_mut(&mut self, path: &mut syn::Path) {
        if path.leading_colon.is_none() {
            if let Some(first) = path.segments.first() {
                let span = first.ident.span();
                let up: Option<syn::Path> = if first.ident == "self" {
                    Some(syn::parse_quote_spanned!(span=> super::super))
                } else if first.ident == "super" {
                    Some(syn::parse_quote_spanned!(span=> super::super::super))
                } else {
                    None
                };
                if let Some(up) = up {
                    let rest = path.segments.iter().skip(1).cloned();
                    path.segments = up.segments.into_iter().chain(rest).collect();
                }
            }
        }
        syn::visit_mut::visit_path_mut(self, path);
    }
}

fn rebased_type(ty: &Type) -> Type {
    let mut ty = ty.clone();
    syn::visit_mut::VisitMut::visit_type_mut(&mut Rebase, &mut ty);
    ty
}

/// Submits `__ferroray_call` for `n` returns: a tuple of `n` typed refs (each
/// type inferred from the function's return type).
fn submit_many(n: usize) -> TokenStream2 {
    let n32 = n as u32;
    let refs = (0..n).map(|_| {
        quote!(::ferroray::__private::typed_ref(::core::option::Option::expect(
            ::core::iter::Iterator::next(&mut __refs),
            "one ref per return"
        )))
    });
    quote!({
        let mut __refs = ::core::iter::IntoIterator::into_iter(__ferroray_call.submit_many(#n32));
        (#(#refs,)*)
    })
}

fn expand(args: RemoteArgs, func: ItemFn) -> syn::Result<TokenStream2> {
    let opts = parse_options(args)?;
    let sig = &func.sig;
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &sig.generics,
            "a remote function cannot be generic: workers find it by one name",
        ));
    }
    let vis = &func.vis;
    let ident = &sig.ident;
    let mut arg_names = Vec::new();
    let mut arg_types = Vec::new();
    for (i, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                return Err(syn::Error::new_spanned(r, "#[remote] goes on free functions, not methods"))
            }
            FnArg::Typed(pt) => {
                if let Type::Reference(r) = &*pt.ty {
                    return Err(syn::Error::new_spanned(
                        r,
                        "a remote function takes its arguments by value (they cross processes)",
                    ));
                }
                arg_names.push(format_ident!("__ferroray_arg{}", i));
                arg_types.push((*pt.ty).clone());
            }
        }
    }
    // The generated module names the user's types only through these
    // aliases, declared in a child module that sees the function's scope by
    // a glob import and declares nothing a user would name: a user's
    // `Options`, `NAME` or `Result` can neither be shadowed by the generated
    // items nor shadow them.
    let arg_aliases: Vec<_> = (0..arg_types.len()).map(|i| format_ident!("__FerrorayArg{}", i)).collect();
    let arg_alias_paths: Vec<TokenStream2> = arg_aliases.iter().map(|a| quote!(__ferroray_user_scope::#a)).collect();
    let rebased_arg_types: Vec<Type> = arg_types.iter().map(rebased_type).collect();
    let unit: Type = syn::parse_quote!(());
    let ret_ty: Type = match &sig.output {
        ReturnType::Default => unit,
        ReturnType::Type(_, t) => (**t).clone(),
    };
    // The adapter sits beside the function (in an anonymous const), so its
    // names resolve exactly as in the function's own signature.
    // An `async fn` runs on the worker's async runtime (a tokio
    // current-thread runtime: its timers and I/O work); `call_in_async` is
    // the call as written inside an `async` block that runtime drives.
    let mut call = quote!(#ident(#(#arg_names),*));
    let mut call_in_async = call.clone();
    if sig.asyncness.is_some() {
        call_in_async = quote!(#call.await);
        call = quote!(::ferroray::__private::block_on_in(__args.context(), #call));
    }

    let (remote_ret, submit, invoke, extra) = match shape(&ret_ty) {
        Shape::Plain { ok, fallible } => {
            if let Some(span) = opts.dynamic {
                return Err(syn::Error::new(
                    span,
                    "num_returns = \"dynamic\" needs a generator (impl Iterator<Item = T>)",
                ));
            }
            let value = if fallible { unwrap_err(call) } else { call };
            let ok = rebased_type(&ok);
            let (remote_ret, encode, submit) = match opts.num_returns {
                None | Some((1, _)) => (
                    quote!(::ferroray::ObjectRef<#ok>),
                    quote!(let __v = #value; ::std::vec![::ferroray::__private::encode_return(&__v)?]),
                    quote!(__ferroray_call.submit_one()),
                ),
                Some((n, span)) => {
                    let Type::Tuple(tuple) = &ok else {
                        return Err(syn::Error::new(
                            span,
                            format!("num_returns = {n} needs the function to return a tuple of {n} values"),
                        ));
                    };
                    if tuple.elems.len() != n {
                        return Err(syn::Error::new_spanned(
                            &ok,
                            format!("num_returns = {n} but this tuple has {} elements", tuple.elems.len()),
                        ));
                    }
                    let elems: Vec<&Type> = tuple.elems.iter().collect();
                    let vars: Vec<_> = (0..n).map(|i| format_ident!("__r{}", i)).collect();
                    (
                        quote!((#(::ferroray::ObjectRef<#elems>,)*)),
                        quote!(
                            let (#(#vars,)*) = #value;
                            ::std::vec![#(::ferroray::__private::encode_return(&#vars)?),*]
                        ),
                        submit_many(n),
                    )
                }
            };
            let invoke = quote! {
                fn __ferroray_invoke(
                    __args: &mut ::ferroray::__private::ArgReader<'_>,
                ) -> ::ferroray::Result<::std::vec::Vec<::ferroray::__private::ReturnValue>> {
                    #(let #arg_names: #arg_types = __args.next_arg()?;)*
                    ::std::result::Result::Ok({ #encode })
                }
                const __FERRORAY_INVOKE: ::ferroray::__private::Invoke =
                    ::ferroray::__private::Invoke::Values(__ferroray_invoke);
            };
            (remote_ret, submit, invoke, quote!())
        }
        Shape::Generator { item, item_fallible, outer_fallible, is_stream } => {
            let drive = drive_generator(call, call_in_async, item_fallible, outer_fallible, is_stream, false);
            let invoke = quote! {
                fn __ferroray_invoke(
                    __args: &mut ::ferroray::__private::ArgReader<'_>,
                    __sink: &mut dyn ::ferroray::__private::ItemSink,
                ) -> ::ferroray::Result<()> {
                    #(let #arg_names: #arg_types = __args.next_arg()?;)*
                    #drive
                    ::std::result::Result::Ok(())
                }
                const __FERRORAY_INVOKE: ::ferroray::__private::Invoke =
                    ::ferroray::__private::Invoke::Items(__ferroray_invoke);
            };
            let item = rebased_type(&item);
            let (remote_ret, submit) = match (opts.num_returns, opts.dynamic) {
                (Some(_), Some(span)) => {
                    return Err(syn::Error::new(span, "num_returns is given twice"));
                }
                (None, Some(_)) => (
                    quote!(::ferroray::ObjectRef<::ferroray::DynamicObjectRefGenerator<#item>>),
                    quote!(__ferroray_call.submit_dynamic()),
                ),
                (None, None) => {
                    (quote!(::ferroray::ObjectRefGenerator<#item>), quote!(__ferroray_call.submit_streaming()))
                }
                (Some((n, _)), None) => {
                    let elems: Vec<&Type> = (0..n).map(|_| &item).collect();
                    if n == 1 {
                        (quote!(::ferroray::ObjectRef<#item>), quote!(__ferroray_call.submit_one()))
                    } else {
                        (quote!((#(::ferroray::ObjectRef<#elems>,)*)), submit_many(n))
                    }
                }
            };
            let extra = quote! {
                impl Options {
                    /// Returns one ref that resolves, when the task ends, to the
                    /// list of its items' refs (Ray's `num_returns="dynamic"`).
                    pub fn num_returns_dynamic(self) -> DynamicOptions {
                        DynamicOptions { opts: self.opts }
                    }
                }

                /// Options of a dynamic-returns call (from
                /// [`Options::num_returns_dynamic`]); finish with `.remote(..)`.
                pub struct DynamicOptions {
                    opts: ::ferroray::TaskOptions,
                }

                impl DynamicOptions {
                    ::ferroray::__private::task_options_methods!();

                    /// Submits the task; its value, when it ends, lists the items' refs.
                    pub fn remote(
                        self,
                        #(#arg_names: impl ::ferroray::IntoArg<#arg_alias_paths>),*
                    ) -> __ferroray_user_scope::__FerrorayDynamicReturn {
                        let mut __ferroray_call = ::ferroray::__private::TaskCall::new(NAME, self.opts);
                        #(__ferroray_call.arg(::ferroray::IntoArg::into_arg(#arg_names));)*
                        __ferroray_call.submit_dynamic()
                    }
                }
            };
            (remote_ret, submit, invoke, extra)
        }
    };
    let dynamic_alias = match shape(&ret_ty) {
        Shape::Generator { item, .. } => {
            let item = rebased_type(&item);
            quote!(pub(super) type __FerrorayDynamicReturn =
                ::ferroray::ObjectRef<::ferroray::DynamicObjectRefGenerator<#item>>;)
        }
        Shape::Plain { .. } => quote!(),
    };

    let setters = opts.setters.iter().map(|s| {
        let mut e: syn::Block = syn::parse_quote!({ #s });
        syn::visit_mut::VisitMut::visit_block_mut(&mut Rebase, &mut e);
        e
    });
    let here_trait = format_ident!("__ferroray_at_module_level_{}", ident);
    let position_check = quote_spanned!(ident.span()=>
        ::ferroray::__private::check_at_module_level(super::__ferroray_here::Probe.__ferroray_position());
    );
    let mod_doc = format!(
        "Remote form of [`{ident}`](fn@super::{ident}): `{ident}::remote(..)` runs it as a task on a \
         worker and returns at once; `{ident}::options()` sets per-call options first.\n\n\
         Generated by `#[ferroray::remote]`."
    );
    let name_doc = format!("The name workers find [`{ident}`](fn@super::{ident}) by: its module path and name.");
    Ok(quote! {
        #func

        #[doc = #mod_doc]
        #[allow(non_snake_case, non_camel_case_types, dead_code, clippy::all)]
        #vis mod #ident {
            /// The function's scope, seen by a glob import (lower priority
            /// than any name declared there); declares only `__ferroray`
            /// names.
            #[doc(hidden)]
            mod __ferroray_user_scope {
                #[allow(unused_imports)]
                use super::super::*;

                #(pub(super) type #arg_aliases = #rebased_arg_types;)*
                pub(super) type __FerrorayReturn = #remote_ret;
                #dynamic_alias

                /// Fails to compile, with a clear message, when the function
                /// is declared inside a function body (see `__ferroray_here`).
                fn __ferroray_position_check() {
                    #position_check
                }

                /// The options the attribute sets.
                pub(super) fn __ferroray_options() -> ::ferroray::TaskOptions {
                    #[allow(unused_mut)]
                    let mut __ferroray_opts = <::ferroray::TaskOptions as ::core::default::Default>::default();
                    #(#setters)*
                    __ferroray_opts
                }
            }

            /// The position probe: `__ferroray_at_module_level_<fn>`, declared beside the
            /// function, is visible to `__ferroray_user_scope` (through its
            /// glob import) only when the function is at module level; then
            /// its by-value method is picked. Inside a function body the
            /// trait stays in the body, and the inherent by-reference method
            /// gives `InsideFunctionBody`, which the check rejects.
            #[doc(hidden)]
            pub mod __ferroray_here {
                pub struct Probe;
                impl Probe {
                    pub fn __ferroray_position(&self) -> ::ferroray::__private::InsideFunctionBody {
                        ::ferroray::__private::InsideFunctionBody
                    }
                }
            }

            #[doc = #name_doc]
            pub const NAME: &str = ::core::concat!(::core::module_path!(), "::", ::core::stringify!(#ident));

            /// Per-call options, from [`options()`](fn@options); set any with
            /// the methods below, then finish with `.remote(..)`.
            pub struct Options {
                opts: ::ferroray::TaskOptions,
            }

            /// Starts a call with per-call options: the ones the attribute
            /// sets, to override or add to; finish with `.remote(..)`.
            pub fn options() -> Options {
                Options { opts: __ferroray_user_scope::__ferroray_options() }
            }

            impl Options {
                ::ferroray::__private::task_options_methods!();

                /// Submits the task with these options; returns at once.
                pub fn remote(
                    self,
                    #(#arg_names: impl ::ferroray::IntoArg<#arg_alias_paths>),*
                ) -> __ferroray_user_scope::__FerrorayReturn {
                    let mut __ferroray_call = ::ferroray::__private::TaskCall::new(NAME, self.opts);
                    #(__ferroray_call.arg(::ferroray::IntoArg::into_arg(#arg_names));)*
                    #submit
                }
            }

            /// Submits the task with the attribute's options; returns at once.
            /// Each argument may be a value, an `ObjectRef` of it, or a
            /// `&ObjectRef` of it.
            pub fn remote(
                #(#arg_names: impl ::ferroray::IntoArg<#arg_alias_paths>),*
            ) -> __ferroray_user_scope::__FerrorayReturn {
                options().remote(#(#arg_names),*)
            }

            #extra
        }

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code)]
        trait #here_trait {
            fn __ferroray_position(self) -> ::ferroray::__private::AtModuleLevel;
        }
        impl #here_trait for #ident::__ferroray_here::Probe {
            fn __ferroray_position(self) -> ::ferroray::__private::AtModuleLevel {
                ::ferroray::__private::AtModuleLevel
            }
        }

        #[allow(clippy::all)]
        const _: () = {
            #invoke

            #[::ferroray::__private::linkme::distributed_slice(::ferroray::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::ferroray::__private::linkme)]
            static __FERRORAY_REGISTER: ::ferroray::__private::RemoteFunction =
                ::ferroray::__private::RemoteFunction { name: #ident::NAME, invoke: __FERRORAY_INVOKE };
        };
    })
}
