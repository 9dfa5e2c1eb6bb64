//! Attributes of the request being routed, fetched lazily from the host.
//!
//! Only meaningful inside [`crate::Policy::pick`]. Each call crosses into the
//! host (about 130 ns), so read only what the policy needs.

macro_rules! request_fn {
    ($(#[$doc:meta])* $name:ident() -> $ret:ty) => {
        $(#[$doc])*
        pub fn $name() -> $ret {
            #[cfg(target_arch = "wasm32")]
            {
                crate::bindings::veer::picker::request::$name()
            }
            #[cfg(not(target_arch = "wasm32"))]
            {
                crate::testing::with_env(|env| env.request.$name.clone())
            }
        }
    };
}

request_fn!(
    /// The method as text (see also `PickContext::method`).
    method_name() -> String
);
request_fn!(
    /// The path, without the query.
    path() -> String
);
request_fn!(
    /// The query string without `?`, if any.
    query() -> Option<String>
);
request_fn!(
    /// The authority (`Host`), if any.
    authority() -> Option<String>
);
request_fn!(
    /// The client's IP address as text.
    client_ip() -> String
);
request_fn!(
    /// The host's hash of the request's affinity key (the client IP by default).
    affinity_hash() -> u64
);
request_fn!(
    /// The name of the route that took the request (contract 0.1.2).
    route() -> Option<String>
);
request_fn!(
    /// The name of the upstream group being picked for (contract 0.1.2).
    upstream() -> Option<String>
);

/// The first value of header `name` (case-insensitive), if present.
pub fn header(name: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        crate::bindings::veer::picker::request::header(name)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        crate::testing::with_env(|env| {
            env.request.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone())
        })
    }
}
