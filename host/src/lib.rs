//! veer: an HTTP load balancer whose routing policy is a WebAssembly component.
#![allow(missing_docs)]
pub mod plugin;
