//! Simulated HTTP backends (being written).
