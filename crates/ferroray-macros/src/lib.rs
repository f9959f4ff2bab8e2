//! Procedural macros of ferroray, re-exported by the `ferroray` crate.
//!
//! `#[remote]` keeps the function as it is (it can still be called locally)
//! and adds a module of the same name (modules and functions live in
//! different namespaces) holding:
//! - `remote(args..)`: submit a task; each parameter of type `T` accepts a
//!   `T`, an `ObjectRef<T>` or a `&ObjectRef<T>`;
//! - `options()`: the same with per-call options (`num_cpus`, `resource`,
//!   `max_retries`, `retry_exceptions`, ...), ending in `.remote(args..)`;
//! - `NAME`: the name under which workers find the function;
//! - a registration in the link-time table of remote functions, and the
//!   adapter that decodes arguments and encodes return values.
//!
//! The return type decides what `remote` gives back:
//! - `T` gives `ObjectRef<T>`;
//! - `Result<T, E>` (any `Result` alias) gives `ObjectRef<T>`; an `Err` is the
//!   task's error;
//! - with `num_returns = N`, a tuple of `N` types gives a tuple of `N` refs;
//! - a generator, `impl Iterator<Item = T>` (or, from an `async fn`,
//!   `impl Stream<Item = T>`), gives an `ObjectRefGenerator<T>` that streams
//!   the items; items of type `Result<T, E>` end the stream at the first
//!   `Err`, and a `Result<impl Iterator<..>, E>` fails before the first item.
//!   With `num_returns = N` it gives `N` refs instead, and with
//!   `num_returns = "dynamic"` (or `options().num_returns_dynamic()`) one
//!   `ObjectRef<DynamicObjectRefGenerator<T>>`.
//!
//! An `async fn` runs to completion on the worker's task thread.
//!
//! Errors point at the user's code: generic functions, methods, reference
//! arguments, unknown options, and a `num_returns` that does not match the
//! tuple.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, FnArg, GenericArgument, ItemFn, Lit, PathArguments, ReturnType, Token, Type};

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
            "num_cpus" => quote_spanned!(span=> opts.num_cpus = (#v) as f64;),
            "num_gpus" => quote_spanned!(span=> opts.num_gpus = (#v) as f64;),
            "max_retries" => quote_spanned!(span=> opts.max_retries = (#v) as i64;),
            "enable_task_events" => quote_spanned!(span=> opts.enable_task_events = #v;),
            "retry_exceptions" => quote_spanned!(span=>
                opts.retry_exceptions = if #v {
                    ::ferroray::__private::RetryExceptions::All
                } else {
                    ::ferroray::__private::RetryExceptions::None
                };
            ),
            "resources" => quote_spanned!(span=>
                for (name, amount) in #v {
                    opts.resources.push((::std::string::ToString::to_string(&name), amount as f64));
                }
            ),
            "generator_backpressure" => quote_spanned!(span=> opts.generator_backpressure = Some((#v) as i64);),
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

fn unwrap_err(expr: TokenStream2) -> TokenStream2 {
    quote!(match #expr {
        ::std::result::Result::Ok(v) => v,
        ::std::result::Result::Err(e) => return ::std::result::Result::Err(::ferroray::__private::app_error(&e)),
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
    let unit: Type = syn::parse_quote!(());
    let ret_ty: Type = match &sig.output {
        ReturnType::Default => unit,
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let mut call = quote!(super::#ident(#(#arg_names),*));
    if sig.asyncness.is_some() {
        call = quote!(::ferroray::__private::block_on(#call));
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
            let (remote_ret, encode, submit) = match opts.num_returns {
                None | Some((1, _)) => (
                    quote!(::ferroray::ObjectRef<#ok>),
                    quote!(let __v = #value; vec![::ferroray::__private::encode_return(&__v)?]),
                    quote!(call.submit_one()),
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
                    let n32 = n as u32;
                    (
                        quote!((#(::ferroray::ObjectRef<#elems>,)*)),
                        quote!(
                            let (#(#vars,)*) = #value;
                            vec![#(::ferroray::__private::encode_return(&#vars)?),*]
                        ),
                        quote!({
                            let mut __refs = call.submit_many(#n32).into_iter();
                            (#(::ferroray::__private::typed_ref::<#elems>(__refs.next().expect("one ref per return")),)*)
                        }),
                    )
                }
            };
            let invoke = quote! {
                fn __invoke(
                    __args: &mut ::ferroray::__private::ArgReader<'_>,
                ) -> ::ferroray::Result<::std::vec::Vec<::ferroray::__private::ReturnValue>> {
                    #(let #arg_names: #arg_types = __args.next_arg()?;)*
                    ::std::result::Result::Ok({ #encode })
                }
                const __INVOKE: ::ferroray::__private::Invoke = ::ferroray::__private::Invoke::Values(__invoke);
            };
            (remote_ret, submit, invoke, quote!())
        }
        Shape::Generator { item, item_fallible, outer_fallible, is_stream } => {
            let gen = if outer_fallible { unwrap_err(call) } else { call };
            let take = if item_fallible { unwrap_err(quote!(__item)) } else { quote!(__item) };
            let each = quote!({
                let __item = #take;
                __sink.item(::ferroray::__private::encode_item(&__item)?)?;
            });
            let drive = if is_stream {
                quote! {
                    let mut __gen = ::std::pin::pin!(#gen);
                    while let ::std::option::Option::Some(__item) =
                        ::ferroray::__private::block_on(::ferroray::__private::StreamExt::next(&mut __gen))
                    #each
                }
            } else {
                quote!(for __item in #gen #each)
            };
            let invoke = quote! {
                fn __invoke(
                    __args: &mut ::ferroray::__private::ArgReader<'_>,
                    __sink: &mut dyn ::ferroray::__private::ItemSink,
                ) -> ::ferroray::Result<()> {
                    #(let #arg_names: #arg_types = __args.next_arg()?;)*
                    #drive
                    ::std::result::Result::Ok(())
                }
                const __INVOKE: ::ferroray::__private::Invoke = ::ferroray::__private::Invoke::Items(__invoke);
            };
            let dynamic_ret = quote!(::ferroray::ObjectRef<::ferroray::DynamicObjectRefGenerator<#item>>);
            let (remote_ret, submit) = match (opts.num_returns, opts.dynamic) {
                (Some(_), Some(span)) => {
                    return Err(syn::Error::new(span, "num_returns is given twice"));
                }
                (None, Some(_)) => (dynamic_ret.clone(), quote!(call.submit_dynamic())),
                (None, None) => (quote!(::ferroray::ObjectRefGenerator<#item>), quote!(call.submit_streaming())),
                (Some((n, _)), None) => {
                    let n32 = n as u32;
                    let elems: Vec<&Type> = (0..n).map(|_| &item).collect();
                    if n == 1 {
                        (quote!(::ferroray::ObjectRef<#item>), quote!(call.submit_one()))
                    } else {
                        (
                            quote!((#(::ferroray::ObjectRef<#elems>,)*)),
                            quote!({
                                let mut __refs = call.submit_many(#n32).into_iter();
                                (#(::ferroray::__private::typed_ref::<#elems>(__refs.next().expect("one ref per return")),)*)
                            }),
                        )
                    }
                }
            };
            let extra = quote! {
                impl Options {
                    /// Returns one ref that resolves, when the task ends, to the list of its items' refs.
                    pub fn num_returns_dynamic(self) -> DynamicOptions {
                        DynamicOptions { opts: self.opts }
                    }
                }

                /// Options of a dynamic-returns call; finish with `.remote(..)`.
                pub struct DynamicOptions {
                    opts: ::ferroray::TaskOptions,
                }

                impl DynamicOptions {
                    ::ferroray::__private::task_options_methods!();

                    /// Submits the task; its value, when it ends, lists the items' refs.
                    pub fn remote(self, #(#arg_names: impl ::ferroray::IntoArg<#arg_types>),*) -> #dynamic_ret {
                        let mut call = ::ferroray::__private::TaskCall::new(NAME, self.opts);
                        #(call.arg(::ferroray::IntoArg::into_arg(#arg_names));)*
                        call.submit_dynamic()
                    }
                }
            };
            (remote_ret, submit, invoke, extra)
        }
    };

    let setters = &opts.setters;
    let doc = format!("Remote form of [`{ident}`](fn@{ident}): `{ident}::remote(..)` runs it as a task.");
    Ok(quote! {
        #func

        #[doc = #doc]
        #[allow(non_snake_case, non_camel_case_types, dead_code, unused_imports, clippy::all)]
        #vis mod #ident {
            use super::*;

            /// The name workers find this function by.
            pub const NAME: &str = ::std::concat!(::std::module_path!(), "::", ::std::stringify!(#ident));

            /// Per-call options; finish with `.remote(..)`.
            pub struct Options {
                opts: ::ferroray::TaskOptions,
            }

            /// The options set by the attribute, to override per call.
            pub fn options() -> Options {
                let mut opts = ::ferroray::TaskOptions::default();
                #(#setters)*
                Options { opts }
            }

            impl Options {
                ::ferroray::__private::task_options_methods!();

                /// Submits the task with these options.
                pub fn remote(self, #(#arg_names: impl ::ferroray::IntoArg<#arg_types>),*) -> #remote_ret {
                    let mut call = ::ferroray::__private::TaskCall::new(NAME, self.opts);
                    #(call.arg(::ferroray::IntoArg::into_arg(#arg_names));)*
                    #submit
                }
            }

            /// Submits the task; returns at once.
            pub fn remote(#(#arg_names: impl ::ferroray::IntoArg<#arg_types>),*) -> #remote_ret {
                options().remote(#(#arg_names),*)
            }

            #invoke

            #extra

            #[::ferroray::__private::linkme::distributed_slice(::ferroray::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::ferroray::__private::linkme)]
            static __FERRORAY_REGISTER: ::ferroray::__private::RemoteFunction =
                ::ferroray::__private::RemoteFunction { name: NAME, invoke: __INVOKE };
        }
    })
}
