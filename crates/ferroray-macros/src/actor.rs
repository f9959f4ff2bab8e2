//! `#[actor]`: an `impl` block made an actor class.
//!
//! Beside the `impl` block (left as written) it generates, all named
//! `__Ferroray..` so they cannot meet a user's names:
//! - `impl ActorClass for T`, with the class name workers find it by;
//! - `T::remote(args)` and `T::options()` (a builder ending in
//!   `.remote(args)`), in a second `impl T`;
//! - the methods struct a handle derefs to, with one method per remote
//!   method returning a call builder (`h.incr()`), whose `.remote(args)`
//!   submits the call;
//! - in an anonymous `const _`, the adapters a worker runs (constructor and
//!   methods on the actor's state) and their link-time registration.

use super::{drive_generator, result_ok_type, shape, unwrap_err, Shape};
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{FnArg, ImplItem, ImplItemFn, ItemImpl, ReturnType, Type};

/// Replaces `Self` in a type by the actor's type (generated code sits
/// outside the `impl` block).
struct ReplaceSelf<'a>(&'a Type);

impl VisitMut for ReplaceSelf<'_> {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::Path(p) = ty {
            if p.qself.is_none() && p.path.is_ident("Self") {
                *ty = self.0.clone();
                return;
            }
        }
        syn::visit_mut::visit_type_mut(self, ty);
    }
}

/// One parameter list, as the adapter reads it and the builder takes it.
struct Params {
    names: Vec<syn::Ident>,
    types: Vec<Type>,
}

fn params(f: &ImplItemFn, self_ty: &Type) -> syn::Result<Params> {
    let mut out = Params { names: Vec::new(), types: Vec::new() };
    for input in f.sig.inputs.iter() {
        if let FnArg::Typed(pt) = input {
            if let Type::Reference(r) = &*pt.ty {
                return Err(syn::Error::new_spanned(
                    r,
                    "an actor method takes its arguments by value (they cross processes)",
                ));
            }
            let mut ty = (*pt.ty).clone();
            ReplaceSelf(self_ty).visit_type_mut(&mut ty);
            out.names.push(format_ident!("__ferroray_arg{}", out.names.len()));
            out.types.push(ty);
        }
    }
    Ok(out)
}

#[derive(Default)]
struct ActorArgs {
    setters: Vec<TokenStream2>,
    /// `max_concurrency = N` with a literal N above 1: the span of N (a
    /// synchronous actor's state must then be `Send + Sync`).
    threaded: Option<proc_macro2::Span>,
}

fn parse_args(items: syn::punctuated::Punctuated<syn::MetaNameValue, syn::Token![,]>) -> syn::Result<ActorArgs> {
    let mut out = ActorArgs::default();
    for nv in items {
        let key = nv.path.get_ident().map(|i| i.to_string()).unwrap_or_default();
        let v = &nv.value;
        let span = nv.span();
        let negative = quote!(#v).to_string().starts_with('-');
        let setter = match key.as_str() {
            "num_cpus" => quote_spanned!(span=> __ferroray_opts.num_cpus = (#v) as f64;),
            "num_gpus" => quote_spanned!(span=> __ferroray_opts.num_gpus = (#v) as f64;),
            "max_restarts" | "max_task_retries" if negative => {
                return Err(syn::Error::new_spanned(v, format!("{key} must be a count (or Retries::Forever)")))
            }
            "max_restarts" => quote_spanned!(span=>
                __ferroray_opts.max_restarts = ::core::convert::Into::<::ferroray::Retries>::into(#v);
            ),
            "max_task_retries" => quote_spanned!(span=>
                __ferroray_opts.max_task_retries = ::core::convert::Into::<::ferroray::Retries>::into(#v);
            ),
            "max_concurrency" if negative => {
                return Err(syn::Error::new_spanned(v, "max_concurrency must be at least 1"))
            }
            "max_concurrency" => {
                if let syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Int(n), .. }) = v {
                    if n.base10_parse::<u64>().is_ok_and(|n| n > 1) {
                        out.threaded = Some(v.span());
                    }
                }
                quote_spanned!(span=> __ferroray_opts.max_concurrency = ::core::option::Option::Some(#v);)
            }
            _ => {
                return Err(syn::Error::new_spanned(
                    &nv.path,
                    "unknown #[actor] option; expected one of: max_concurrency, max_restarts, max_task_retries, \
                     num_cpus, num_gpus",
                ))
            }
        };
        out.setters.push(setter);
    }
    Ok(out)
}

/// The receiver of a remote method: `Some(true)` for `&mut self`,
/// `Some(false)` for `&self`, `None` for an associated function or a
/// method taking `self` by value (refused if public).
fn receiver(f: &ImplItemFn) -> syn::Result<Option<bool>> {
    match f.sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            if r.reference.is_none() {
                return Err(syn::Error::new_spanned(
                    r,
                    "a remote actor method takes `&self` or `&mut self` (the actor outlives the call)",
                ));
            }
            Ok(Some(r.mutability.is_some()))
        }
        _ => Ok(None),
    }
}

pub(crate) fn expand(
    args: syn::punctuated::Punctuated<syn::MetaNameValue, syn::Token![,]>,
    item: ItemImpl,
) -> syn::Result<TokenStream2> {
    let opts = parse_args(args)?;
    if let Some((_, path, _)) = &item.trait_ {
        return Err(syn::Error::new_spanned(path, "#[actor] goes on a type's own `impl` block, not a trait impl"));
    }
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(syn::Error::new_spanned(
            &item.generics,
            "an actor cannot be generic: workers find its class by one name",
        ));
    }
    let self_ty = (*item.self_ty).clone();
    let Type::Path(tp) = &self_ty else {
        return Err(syn::Error::new_spanned(&self_ty, "#[actor] goes on the `impl` block of a named type"));
    };
    let type_ident = tp.path.segments.last().expect("a path has a segment").ident.clone();
    let class = quote!(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#type_ident)));
    let methods_ty = format_ident!("__FerrorayMethods{}", type_ident);
    let options_ty = format_ident!("__FerrorayOptions{}", type_ident);

    let mut ctor = None;
    let mut methods = Vec::new();
    for it in &item.items {
        let ImplItem::Fn(f) = it else { continue };
        if f.sig.ident == "new" {
            if receiver(f)?.is_some() {
                return Err(syn::Error::new_spanned(&f.sig, "the constructor `new` takes no `self`"));
            }
            ctor = Some(f);
            continue;
        }
        if !matches!(f.vis, syn::Visibility::Public(_)) {
            continue;
        }
        if let Some(exclusive) = receiver(f)? {
            if !f.sig.generics.params.is_empty() {
                return Err(syn::Error::new_spanned(
                    &f.sig.generics,
                    "a remote actor method cannot be generic: workers find it by one name",
                ));
            }
            methods.push((f, exclusive));
        }
    }
    let Some(ctor) = ctor else {
        return Err(syn::Error::new_spanned(
            &item.self_ty,
            "an actor needs a constructor: `fn new(..) -> Self` (or `-> Result<Self, E>`) in this `impl` block",
        ));
    };

    // The constructor: arguments, adapter, builders.
    let cp = params(ctor, &self_ty)?;
    let ctor_ret: Type = match &ctor.sig.output {
        ReturnType::Type(_, t) => (**t).clone(),
        ReturnType::Default => {
            return Err(syn::Error::new_spanned(
                &ctor.sig,
                "the constructor `new` must return `Self` or `Result<Self, E>`",
            ))
        }
    };
    let ctor_fallible = result_ok_type(&ctor_ret).is_some();
    let (cnames, ctypes) = (&cp.names, &cp.types);
    let ctor_call = quote!(<#self_ty>::new(#(#cnames),*));
    let ctor_value = if ctor_fallible { unwrap_err(ctor_call) } else { ctor_call };
    if ctor.sig.asyncness.is_some() {
        return Err(syn::Error::new_spanned(ctor.sig.asyncness, "the constructor `new` cannot be async"));
    }
    let setters = &opts.setters;
    // `#[actor(max_concurrency = N)]` on a synchronous actor: its state is
    // shared by threads, checked here rather than when it is created.
    let threaded_check = match opts.threaded {
        Some(span) if !methods.iter().any(|(f, _)| f.sig.asyncness.is_some()) => quote_spanned! {span=>
            const _: () = {
                fn __ferroray_threaded_actor_state_must_be_send_and_sync<
                    T: ::core::marker::Send + ::core::marker::Sync,
                >() {
                }
                let _ = __ferroray_threaded_actor_state_must_be_send_and_sync::<#self_ty>;
            };
        },
        _ => quote!(),
    };

    // One `async fn` method makes the whole class async: every method then
    // runs as a future on the actor's event loop.
    let any_async = methods.iter().any(|(f, _)| f.sig.asyncness.is_some());
    let mut method_items = Vec::new();
    let mut call_types = Vec::new();
    let mut adapters = Vec::new();
    for (f, exclusive) in &methods {
        let ident = &f.sig.ident;
        let p = params(f, &self_ty)?;
        let (names, types) = (&p.names, &p.types);
        let call_ty = format_ident!("__FerrorayCall{}_{}", type_ident, ident);
        let adapter = format_ident!("__ferroray_method_{}", ident);
        let register = format_ident!("__FERRORAY_REGISTER_{}", ident);
        // `Class.method`, as Ray names actor tasks in events and logs.
        let name = quote!(::core::concat!(
            ::core::module_path!(),
            "::",
            ::core::stringify!(#type_ident),
            ".",
            ::core::stringify!(#ident)
        ));
        let ret: Type = match &f.sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, t) => {
                let mut t = (**t).clone();
                ReplaceSelf(&self_ty).visit_type_mut(&mut t);
                t
            }
        };
        let get = if *exclusive { quote!(get_mut) } else { quote!(get) };
        let this_ty = if *exclusive { quote!(&mut #self_ty) } else { quote!(&#self_ty) };
        let is_async = f.sig.asyncness.is_some();
        // A sync class's adapter borrows the state for the call; an async
        // class's future owns its guard and borrows from that.
        let this = if any_async {
            quote! {
                #[allow(unused_mut)]
                let mut __guard = __guard;
                let __this: #this_ty = __guard.#get::<#self_ty>()?;
            }
        } else {
            quote!(let __this: #this_ty = __state.#get::<#self_ty>()?;)
        };
        let plain_call = quote!(__this.#ident(#(#names),*));
        let (call, call_in_async) = if any_async {
            let call = if is_async { quote!(#plain_call.await) } else { plain_call };
            (call.clone(), call)
        } else {
            (plain_call.clone(), quote!(#plain_call.await))
        };
        let (remote_ret, submit, adapter_fn, run, extra) = match shape(&ret) {
            Shape::Plain { ok, fallible } => {
                let value = if fallible { unwrap_err(call) } else { call };
                let adapter_fn = if any_async {
                    quote! {
                        fn #adapter(
                            __guard: ::ferroray::__private::StateGuard,
                            __args: &mut ::ferroray::__private::ArgReader<'_>,
                        ) -> ::ferroray::Result<
                            ::ferroray::__private::LocalFuture<
                                ::ferroray::Result<::std::vec::Vec<::ferroray::__private::ReturnValue>>,
                            >,
                        > {
                            #(let #names: #types = __args.next_arg()?;)*
                            ::std::result::Result::Ok(::ferroray::__private::local_values(async move {
                                #this
                                let __v = #value;
                                ::std::result::Result::Ok(::std::vec![::ferroray::__private::encode_return(&__v)?])
                            }))
                        }
                    }
                } else {
                    quote! {
                        fn #adapter(
                            __state: ::ferroray::__private::StateRef<'_>,
                            __args: &mut ::ferroray::__private::ArgReader<'_>,
                        ) -> ::ferroray::Result<::std::vec::Vec<::ferroray::__private::ReturnValue>> {
                            #(let #names: #types = __args.next_arg()?;)*
                            #this
                            let __v = #value;
                            ::std::result::Result::Ok(::std::vec![::ferroray::__private::encode_return(&__v)?])
                        }
                    }
                };
                let run = if any_async { quote!(AsyncValues) } else { quote!(Values) };
                (quote!(::ferroray::ObjectRef<#ok>), quote!(__ferroray_call.submit_one()), adapter_fn, run, quote!())
            }
            Shape::Generator { item, item_fallible, outer_fallible, is_stream } => {
                let drive = drive_generator(call, call_in_async, item_fallible, outer_fallible, is_stream, any_async);
                let adapter_fn = if any_async {
                    quote! {
                        fn #adapter(
                            __guard: ::ferroray::__private::StateGuard,
                            __args: &mut ::ferroray::__private::ArgReader<'_>,
                            __sink: ::ferroray::__private::AsyncItemSink,
                        ) -> ::ferroray::Result<::ferroray::__private::LocalFuture<::ferroray::Result<()>>> {
                            #(let #names: #types = __args.next_arg()?;)*
                            ::std::result::Result::Ok(::ferroray::__private::local_items(async move {
                                let mut __sink = __sink;
                                #this
                                #drive
                                ::std::result::Result::Ok(())
                            }))
                        }
                    }
                } else {
                    quote! {
                        fn #adapter(
                            __state: ::ferroray::__private::StateRef<'_>,
                            __args: &mut ::ferroray::__private::ArgReader<'_>,
                            __sink: &mut dyn ::ferroray::__private::ItemSink,
                        ) -> ::ferroray::Result<()> {
                            #(let #names: #types = __args.next_arg()?;)*
                            #this
                            #drive
                            ::std::result::Result::Ok(())
                        }
                    }
                };
                let run = if any_async { quote!(AsyncItems) } else { quote!(Items) };
                (
                    quote!(::ferroray::ObjectRefGenerator<#item>),
                    quote!(__ferroray_call.submit_streaming()),
                    adapter_fn,
                    run,
                    quote! {
                        /// Pause the method while this many yielded items are
                        /// unconsumed: default no limit. Like Ray's
                        /// `_generator_backpressure_num_objects`.
                        pub fn generator_backpressure(
                            mut self,
                            n: impl ::core::convert::Into<::ferroray::Backpressure>,
                        ) -> Self {
                            self.opts.generator_backpressure =
                                ::core::option::Option::Some(::core::convert::Into::into(n));
                            self
                        }
                    },
                )
            }
        };
        let invoke = quote!(::ferroray::__private::Invoke::Method {
            exclusive: #exclusive,
            run: ::ferroray::__private::MethodRun::#run(#adapter),
        });
        let doc = format!("Calls [`{type_ident}::{ident}`] on the actor: finish with `.remote(..)`.");
        let vis = &f.vis;
        method_items.push(quote! {
            #[doc = #doc]
            #vis fn #ident(&self) -> #call_ty<'_> {
                #call_ty { raw: &self.raw, opts: ::core::default::Default::default() }
            }
        });
        call_types.push(quote! {
            #[doc(hidden)]
            #[allow(non_camel_case_types)]
            pub struct #call_ty<'a> {
                raw: &'a ::ferroray::__private::RawActorHandle,
                opts: ::ferroray::TaskOptions,
            }

            #[allow(non_camel_case_types)]
            impl<'a> #call_ty<'a> {
                #extra

                /// Record this call's state changes for `ferroray::tasks()`:
                /// default true.
                pub fn enable_task_events(mut self, on: bool) -> Self {
                    self.opts.enable_task_events = on;
                    self
                }

                /// Submits the call; returns at once. Each argument may be a
                /// value, an `ObjectRef` of it, or a `&ObjectRef` of it.
                pub fn remote(self, #(#names: impl ::ferroray::IntoArg<#types>),*) -> #remote_ret {
                    let mut __ferroray_call = self.raw.call(#name, self.opts);
                    #(__ferroray_call.arg(::ferroray::IntoArg::into_arg(#names));)*
                    #submit
                }
            }
        });
        adapters.push(quote! {
            #adapter_fn
            #[::ferroray::__private::linkme::distributed_slice(::ferroray::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::ferroray::__private::linkme)]
            static #register: ::ferroray::__private::RemoteFunction =
                ::ferroray::__private::RemoteFunction { name: #name, invoke: #invoke };
        });
    }

    let ctor_name = quote!(::core::concat!(::core::module_path!(), "::", ::core::stringify!(#type_ident), ".new"));
    let remote_doc = format!(
        "Starts a `{type_ident}` actor on a process of its own with these constructor arguments and returns \
         its handle at once (generated by `#[ferroray::actor]`). If it cannot be created, every call on the \
         handle fails with the reason."
    );
    // `new` is the actor's constructor by this macro's rule, not a
    // candidate for `Default`.
    let mut item = item;
    item.attrs.push(syn::parse_quote!(#[allow(clippy::new_without_default)]));
    Ok(quote! {
        #item

        impl ::ferroray::ActorClass for #self_ty {
            const CLASS: &'static str = #class;
            type Methods = #methods_ty;
            const ASYNC: bool = #any_async;
        }

        #threaded_check

        impl #self_ty {
            #[doc = #remote_doc]
            pub fn remote(#(#cnames: impl ::ferroray::IntoArg<#ctypes>),*) -> ::ferroray::ActorHandle<#self_ty> {
                match Self::options().remote(#(#cnames),*) {
                    ::std::result::Result::Ok(h) => h,
                    ::std::result::Result::Err(e) => ::ferroray::__private::failed_handle(e),
                }
            }

            /// Starts an actor with creation options: the ones `#[actor(..)]`
            /// sets, to override or add to; finish with `.remote(..)`.
            pub fn options() -> #options_ty {
                #[allow(unused_mut)]
                let mut __ferroray_opts = <::ferroray::ActorOptions as ::core::default::Default>::default();
                #(#setters)*
                #options_ty { opts: __ferroray_opts }
            }
        }

        /// Creation options of an actor (from `options()`); finish with
        /// `.remote(..)`.
        #[doc(hidden)]
        pub struct #options_ty {
            opts: ::ferroray::ActorOptions,
        }

        impl #options_ty {
            ::ferroray::__private::actor_options_methods!();

            /// Starts the actor; an `Err` at once if its name is taken or
            /// an option is invalid.
            pub fn remote(
                self,
                #(#cnames: impl ::ferroray::IntoArg<#ctypes>),*
            ) -> ::ferroray::Result<::ferroray::ActorHandle<#self_ty>> {
                let mut __ferroray_call =
                    ::ferroray::__private::TaskCall::new(#ctor_name, ::core::default::Default::default());
                #(__ferroray_call.arg(::ferroray::IntoArg::into_arg(#cnames));)*
                let __kind = ::ferroray::__private::ActorKind {
                    asynchronous: #any_async,
                    shareable: {
                        use ::ferroray::__private::{ViaLocal as _, ViaShared as _};
                        (&&::ferroray::__private::StateProbe::<#self_ty>::new()).__ferroray_shareable()
                    },
                };
                __ferroray_call.create_actor(#class, &self.opts, __kind).map(::ferroray::ActorHandle::from_raw)
            }
        }

        /// The methods of a handle (`ActorHandle` derefs to this).
        #[doc(hidden)]
        #[derive(Clone)]
        pub struct #methods_ty {
            raw: ::ferroray::__private::RawActorHandle,
        }

        impl ::core::convert::From<::ferroray::__private::RawActorHandle> for #methods_ty {
            fn from(raw: ::ferroray::__private::RawActorHandle) -> Self {
                #methods_ty { raw }
            }
        }

        impl ::core::convert::AsRef<::ferroray::__private::RawActorHandle> for #methods_ty {
            fn as_ref(&self) -> &::ferroray::__private::RawActorHandle {
                &self.raw
            }
        }

        impl #methods_ty {
            #(#method_items)*
        }

        #(#call_types)*

        #[allow(clippy::all, non_snake_case, non_upper_case_globals)]
        const _: () = {
            fn __ferroray_construct(
                __args: &mut ::ferroray::__private::ArgReader<'_>,
            ) -> ::ferroray::Result<::ferroray::__private::ActorState> {
                #(let #cnames: #ctypes = __args.next_arg()?;)*
                let __v: #self_ty = #ctor_value;
                // Shared if the type is `Send + Sync` (a threaded actor
                // needs it to be), else kept on one thread.
                let __wrap = {
                    use ::ferroray::__private::{ViaLocal as _, ViaShared as _};
                    (&&::ferroray::__private::StateProbe::<#self_ty>::new()).__ferroray_wrap()
                };
                ::std::result::Result::Ok(__wrap(__v))
            }
            #[::ferroray::__private::linkme::distributed_slice(::ferroray::__private::REMOTE_FUNCTIONS)]
            #[linkme(crate = ::ferroray::__private::linkme)]
            static __FERRORAY_REGISTER_CONSTRUCTOR: ::ferroray::__private::RemoteFunction =
                ::ferroray::__private::RemoteFunction {
                    name: #ctor_name,
                    invoke: ::ferroray::__private::Invoke::Construct(__ferroray_construct),
                };

            #(#adapters)*
        };
    })
}
