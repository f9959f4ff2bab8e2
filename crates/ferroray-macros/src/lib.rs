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
//! - with `num_returns = N`, a tuple of `N` types gives a tuple of `N` refs.
//!
//! Errors point at the user's code: generic or `async` functions, methods,
//! unknown options, and a `num_returns` that does not match the tuple.

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
        Ok(RemoteArgs {
            items: Punctuated::parse_terminated(input)?,
        })
    }
}

#[derive(Default)]
struct Options {
    setters: Vec<TokenStream2>,
    num_returns: Option<(usize, Span)>,
}

fn parse_options(args: RemoteArgs) -> syn::Result<Options> {
    let mut out = Options::default();
    for nv in args.items {
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
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
            "num_returns" => {
                let n = match v {
                    Expr::Lit(syn::ExprLit { lit: Lit::Int(i), .. }) => i.base10_parse::<usize>()?,
                    _ => return Err(syn::Error::new_spanned(v, "num_returns must be an integer literal")),
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
                     retry_exceptions, enable_task_events, num_returns",
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

fn expand(args: RemoteArgs, func: ItemFn) -> syn::Result<TokenStream2> {
    let opts = parse_options(args)?;
    let sig = &func.sig;
    if let Some(a) = &sig.asyncness {
        return Err(syn::Error::new_spanned(
            a,
            "#[remote] does not support async functions yet",
        ));
    }
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
                return Err(syn::Error::new_spanned(
                    r,
                    "#[remote] goes on free functions, not methods",
                ))
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
    let (ok_ty, fallible) = match result_ok_type(&ret_ty) {
        Some(t) => (t.clone(), true),
        None => (ret_ty.clone(), false),
    };

    let call = quote!(super::#ident(#(#arg_names),*));
    let unwrap_result = if fallible {
        quote!(match #call {
            ::std::result::Result::Ok(v) => v,
            ::std::result::Result::Err(e) => return ::std::result::Result::Err(::ferroray::__private::app_error(&e)),
        })
    } else {
        call
    };

    let (remote_ret, encode_returns, submit) = match opts.num_returns {
        None | Some((1, _)) => (
            quote!(::ferroray::ObjectRef<#ok_ty>),
            quote!(let __v = #unwrap_result; vec![::ferroray::__private::encode_return(&__v)?]),
            quote!(call.submit_one()),
        ),
        Some((n, span)) => {
            let Type::Tuple(tuple) = &ok_ty else {
                return Err(syn::Error::new(
                    span,
                    format!("num_returns = {n} needs the function to return a tuple of {n} values"),
                ));
            };
            if tuple.elems.len() != n {
                return Err(syn::Error::new_spanned(
                    &ok_ty,
                    format!(
                        "num_returns = {n} but this tuple has {} elements",
                        tuple.elems.len()
                    ),
                ));
            }
            let elems: Vec<&Type> = tuple.elems.iter().collect();
            let vars: Vec<_> = (0..n).map(|i| format_ident!("__r{}", i)).collect();
            let n32 = n as u32;
            (
                quote!((#(::ferroray::ObjectRef<#elems>,)*)),
                quote!(
                    let (#(#vars,)*) = #unwrap_result;
                    vec![#(::ferroray::__private::encode_return(&#vars)?),*]
                ),
                quote!({
                    let mut __refs = call.submit_many(#n32).into_iter();
                    (#(::ferroray::__private::typed_ref::<#elems>(__refs.next().expect("one ref per return")),)*)
                }),
            )
        }
    };

    let setters = &opts.setters;
    let doc =
        format!("Remote form of [`{ident}`](fn@{ident}): `{ident}::remote(..)` runs it as a task.");
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

            fn __invoke(
                __args: &mut ::ferroray::__private::ArgReader<'_>,
            ) -> ::ferroray::Result<::std::vec::Vec<::ferroray::__private::ReturnValue>> {
                #(let #arg_names: #arg_types = __args.next()?;)*
                ::std::result::Result::Ok({ #encode_returns })
            }

            #[::ferroray::__private::linkme::distributed_slice(::ferroray::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::ferroray::__private::linkme)]
            static __FERRORAY_REGISTER: ::ferroray::__private::RemoteFunction =
                ::ferroray::__private::RemoteFunction { name: NAME, invoke: __invoke };
        }
    })
}
