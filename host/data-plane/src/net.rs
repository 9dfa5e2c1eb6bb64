//! Socket helpers shared by the data path and the admin API.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// How long an accept loop waits after a failed `accept` (out of file
/// descriptors, say) before trying again, instead of spinning on the error.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The next connection on `listener`; a failed accept is logged (with
/// `what` listener it was) and retried after [`ACCEPT_BACKOFF`].
pub async fn accept(listener: &TcpListener, what: &'static str) -> (TcpStream, SocketAddr) {
    retrying(|| listener.accept(), what).await
}

/// Calls `accept` until it succeeds, waiting [`ACCEPT_BACKOFF`] after each error.
pub async fn retrying<T, F, Fut>(mut accept: F, what: &'static str) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = std::io::Result<T>>,
{
    loop {
        match accept().await {
            Ok(accepted) => return accepted,
            Err(error) => {
                tracing::warn!(%error, listener = what, "accept failed; retrying shortly");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_back_off_instead_of_spinning() {
        let mut calls = 0;
        let started = tokio::time::Instant::now();
        let value = retrying(
            || {
                calls += 1;
                let result = if calls <= 5 { Err(std::io::Error::other("too many open files")) } else { Ok(calls) };
                std::future::ready(result)
            },
            "test",
        )
        .await;
        assert_eq!(value, 6);
        assert_eq!(started.elapsed(), ACCEPT_BACKOFF * 5, "one backoff per failure");
    }
}
