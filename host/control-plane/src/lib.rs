//! veer's control plane: what configures a data plane and changes it while
//! it serves.
//!
//! - [`config`]: the config file, its validation, and hot reload.
//! - [`discovery`]: backends by DNS name, SRV name or file, kept up to date.
//! - [`upgrade`]: handing the listening sockets to a new process.
//! - [`dashboard`]: the admin listener's page and its live event stream.
//! - [`admin`]: the admin API (backends, drains, picker swaps, status).
//! - [`server`]: starts a whole veer (plugin runtime, upstream groups, proxy
//!   workers, admin listener) from validated options.
//!
//! It depends on the data plane and the plugin runtime; nothing below it
//! depends on it.

pub mod admin;
pub mod config;
pub mod dashboard;
pub mod discovery;
pub mod server;
pub mod upgrade;
