//! The in-flight gate: at most `limit` requests past admission at once, and an
//! optional short FIFO queue (bounded in length and in waiting time) for the
//! ones that arrive when it is full.
//!
//! The limit is passed in on every call rather than stored, because it moves:
//! it is the smaller of the configured global cap and the adaptive (AIMD)
//! limit, which the controller changes every interval. When the limit drops
//! below the current in-flight count nothing is revoked; new arrivals simply
//! wait or are refused until enough requests finish.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// Why the gate did not let a request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateRefusal {
    /// The gate was full and so was the queue (or there is no queue).
    Full,
    /// The request waited in the queue for the whole queue timeout.
    QueueTimeout,
}

/// The in-flight gate. Cheap to call: one short lock, never held across `.await`.
#[derive(Debug)]
pub struct InflightGate {
    queue_capacity: usize,
    queue_timeout: Duration,
    state: Mutex<GateState>,
}

#[derive(Debug, Default)]
struct GateState {
    in_flight: u32,
    /// The highest `in_flight` since the last [`InflightGate::take_peak`].
    peak: u32,
    /// Waiters in arrival order; each is handed a slot (its `in_flight`
    /// increment already made) through its sender.
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

#[derive(Debug)]
struct Waiter {
    id: u64,
    grant: oneshot::Sender<()>,
}

impl GateState {
    /// Hands free slots to waiters, oldest first.
    fn grant_waiters(&mut self, limit: u32) {
        while self.in_flight < limit {
            let Some(waiter) = self.waiters.pop_front() else { return };
            self.in_flight += 1;
            if waiter.grant.send(()).is_err() {
                // The waiter is gone (its guard removes itself first, so this
                // only happens if a receiver is dropped some other way): undo.
                self.in_flight -= 1;
            }
            self.peak = self.peak.max(self.in_flight);
        }
    }
}

impl InflightGate {
    /// A gate whose queue holds at most `queue_capacity` waiters (0: no
    /// queue, refuse at once), each for at most `queue_timeout`.
    pub fn new(queue_capacity: usize, queue_timeout: Duration) -> Self {
        InflightGate { queue_capacity, queue_timeout, state: Mutex::new(GateState::default()) }
    }

    /// Takes a slot if one is free under `limit` and nobody is queued ahead.
    pub fn try_acquire(&self, limit: u32) -> bool {
        let mut state = self.state.lock();
        // Queued requests go first: a newcomer must not overtake them.
        if state.in_flight < limit && state.waiters.is_empty() {
            state.in_flight += 1;
            state.peak = state.peak.max(state.in_flight);
            true
        } else {
            false
        }
    }

    /// Takes a slot under `limit`, waiting in the queue if there is room in
    /// it; `Ok` means the caller holds a slot and must [`release`](Self::release) it.
    ///
    /// `limit` is read on every decision, so a limit moved meanwhile is
    /// honoured. Cancel-safe: dropping the future while it waits leaves the
    /// queue, or gives back a slot granted at that instant.
    pub async fn acquire(&self, limit: impl Fn() -> u32) -> Result<(), GateRefusal> {
        if self.try_acquire(limit()) {
            return Ok(());
        }
        let mut guard = {
            let mut state = self.state.lock();
            if state.waiters.len() >= self.queue_capacity {
                return Err(GateRefusal::Full);
            }
            let (grant, granted) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            state.waiters.push_back(Waiter { id, grant });
            // A slot may have come free between the two locks.
            state.grant_waiters(limit());
            WaitGuard { gate: self, id, granted, current_limit: &limit, done: false }
        };
        match tokio::time::timeout(self.queue_timeout, &mut guard.granted).await {
            Ok(Ok(())) => {
                guard.done = true;
                Ok(())
            }
            // Timed out (or the sender vanished, which the state never does
            // while the waiter is queued): the guard's drop cleans up.
            Ok(Err(_)) | Err(_) => Err(GateRefusal::QueueTimeout),
        }
    }

    /// Gives back a slot and hands free slots under `limit` to waiters.
    pub fn release(&self, limit: u32) {
        let mut state = self.state.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        state.grant_waiters(limit);
    }

    /// Hands free slots under `limit` to waiters (after the limit was raised).
    pub fn wake(&self, limit: u32) {
        self.state.lock().grant_waiters(limit);
    }

    /// Requests holding a slot.
    pub fn in_flight(&self) -> u32 {
        self.state.lock().in_flight
    }

    /// The most requests in flight at once since the last call (then restarts
    /// from the current count).
    pub fn take_peak(&self) -> u32 {
        let mut state = self.state.lock();
        let current = state.in_flight;
        std::mem::replace(&mut state.peak, current)
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.state.lock().waiters.len()
    }
}

/// A queued request's place; dropping it before the grant was taken leaves
/// the queue, or releases a slot granted meanwhile.
struct WaitGuard<'a, F: Fn() -> u32> {
    gate: &'a InflightGate,
    id: u64,
    granted: oneshot::Receiver<()>,
    current_limit: &'a F,
    done: bool,
}

impl<F: Fn() -> u32> Drop for WaitGuard<'_, F> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut state = self.gate.state.lock();
        if let Some(position) = state.waiters.iter().position(|w| w.id == self.id) {
            state.waiters.remove(position);
        } else if self.granted.try_recv().is_ok() {
            // Granted after the timeout fired but before this drop took the
            // lock: the slot is ours and nobody else will give it back.
            state.in_flight = state.in_flight.saturating_sub(1);
            state.grant_waiters((self.current_limit)());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(limit: u32) -> impl Fn() -> u32 {
        move || limit
    }

    #[test]
    fn try_acquire_admits_up_to_the_limit() {
        let gate = InflightGate::new(0, Duration::ZERO);
        assert!(gate.try_acquire(2));
        assert!(gate.try_acquire(2));
        assert!(!gate.try_acquire(2));
        assert_eq!(gate.in_flight(), 2);
        gate.release(2);
        assert!(gate.try_acquire(2));
        // A lowered limit revokes nothing, it only stops admissions.
        assert!(!gate.try_acquire(1));
        assert_eq!(gate.in_flight(), 2);
        assert_eq!(gate.take_peak(), 2);
        gate.release(2);
        assert_eq!(gate.take_peak(), 2, "the new interval started with 2 in flight");
        assert_eq!(gate.take_peak(), 1, "then restarts from the current count");
    }

    #[tokio::test]
    async fn without_a_queue_a_full_gate_refuses_at_once() {
        let gate = InflightGate::new(0, Duration::from_secs(1));
        assert_eq!(gate.acquire(fixed(1)).await, Ok(()));
        assert_eq!(gate.acquire(fixed(1)).await, Err(GateRefusal::Full));
    }

    /// A request that has joined `gate`'s queue, waiting for a slot.
    async fn queued_waiter(gate: &std::sync::Arc<InflightGate>) -> tokio::task::JoinHandle<Result<(), GateRefusal>> {
        let queued_before = gate.queued();
        let waiter = tokio::spawn({
            let gate = gate.clone();
            async move { gate.acquire(fixed(1)).await }
        });
        while gate.queued() == queued_before {
            tokio::task::yield_now().await;
        }
        waiter
    }

    #[tokio::test]
    async fn a_queued_request_gets_the_next_released_slot() {
        let gate = std::sync::Arc::new(InflightGate::new(1, Duration::from_secs(10)));
        assert!(gate.try_acquire(1));
        let waiter = queued_waiter(&gate).await;
        // The queue holds one: a third request is refused, and does not overtake.
        assert_eq!(gate.acquire(fixed(1)).await, Err(GateRefusal::Full));
        assert!(!gate.try_acquire(5), "a newcomer must not overtake a queued request");
        gate.release(1);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(gate.in_flight(), 1, "the slot passed to the waiter");
        assert_eq!(gate.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_request_gives_up_at_the_queue_timeout() {
        let gate = InflightGate::new(4, Duration::from_millis(50));
        assert!(gate.try_acquire(1));
        assert_eq!(gate.acquire(fixed(1)).await, Err(GateRefusal::QueueTimeout));
        assert_eq!(gate.queued(), 0, "the timed-out waiter left the queue");
        assert_eq!(gate.in_flight(), 1);
    }

    #[tokio::test]
    async fn raising_the_limit_wakes_waiters() {
        let gate = std::sync::Arc::new(InflightGate::new(2, Duration::from_secs(10)));
        assert!(gate.try_acquire(1));
        let waiter = queued_waiter(&gate).await;
        gate.wake(2);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(gate.in_flight(), 2);
    }

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let gate = InflightGate::new(1, Duration::from_secs(10));
        assert!(gate.try_acquire(1));
        {
            let waiting = gate.acquire(fixed(1));
            tokio::pin!(waiting);
            // Poll once so it queues, then drop it as a disconnected client would.
            assert!(futures_poll_once(waiting.as_mut()).await.is_none());
            assert_eq!(gate.queued(), 1);
        }
        assert_eq!(gate.queued(), 0);
        gate.release(1);
        assert_eq!(gate.in_flight(), 0, "no slot was handed to the cancelled waiter");
    }

    #[test]
    fn a_grant_racing_a_cancellation_is_given_back() {
        let gate = InflightGate::new(1, Duration::from_secs(10));
        assert!(gate.try_acquire(1));
        let (grant, granted) = oneshot::channel();
        gate.state.lock().waiters.push_back(Waiter { id: 99, grant });
        let limit = fixed(1);
        let guard = WaitGuard { gate: &gate, id: 99, granted, current_limit: &limit, done: false };
        gate.release(1); // hands the slot to waiter 99
        assert_eq!(gate.in_flight(), 1);
        drop(guard); // ...which was cancelled before it looked
        assert_eq!(gate.in_flight(), 0);
    }

    /// Polls a future once; `Some` if it completed.
    async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
        let mut future = future;
        std::future::poll_fn(|cx| {
            std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
                std::task::Poll::Ready(output) => Some(output),
                std::task::Poll::Pending => None,
            })
        })
        .await
    }
}
