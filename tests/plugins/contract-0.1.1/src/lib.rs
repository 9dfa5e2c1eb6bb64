//! A least-in-flight picker built against `veer:picker@0.1.1` exactly as
//! released (`wit/picker.wit` beside this crate is a frozen copy, never
//! edited). It reads `host.in-flight`, the import 0.1.1 added, so the tests
//! prove that a later host keeps loading a component that uses a patch
//! release's addition, and that it conforms.
//!
//! Raw bindings, not the SDK: the SDK follows the current contract.

#![allow(missing_docs)] // The generated bindings carry no docs.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // The generated export glue is `unsafe extern "C"`, as in the SDK.
mod component {
    use std::cell::RefCell;

    wit_bindgen::generate!({ path: "wit", world: "veer:picker/picker" });

    use exports::veer::picker::policy::Guest;
    use veer::picker::host;
    use veer::picker::types::{BackendEvent, BackendId, Feedback, Outcome, PickContext, PluginInfo};

    /// Eligible backends, and every backend known.
    #[derive(Default)]
    struct State {
        eligible: Vec<BackendId>,
        known: Vec<BackendId>,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    struct Contract011;

    impl Guest for Contract011 {
        fn info() -> PluginInfo {
            PluginInfo { name: "contract-0.1.1".into(), version: "0.1.1".into(), feedback: Feedback::empty() }
        }

        fn configure(params: Vec<(String, String)>) -> Result<(), String> {
            match params.first() {
                None => Ok(()),
                Some((key, _)) => Err(format!("{key}: unknown parameter (this picker takes none)")),
            }
        }

        fn backends_changed(events: Vec<BackendEvent>) {
            STATE.with_borrow_mut(|state| {
                for event in events {
                    match event {
                        BackendEvent::Added(backend) => {
                            state.known.push(backend.id);
                            state.eligible.push(backend.id);
                        }
                        BackendEvent::Updated(_) => {}
                        BackendEvent::Removed(id) => {
                            state.known.retain(|known| *known != id);
                            state.eligible.retain(|eligible| *eligible != id);
                        }
                        BackendEvent::Eligibility((id, true)) => {
                            if state.known.contains(&id) && !state.eligible.contains(&id) {
                                state.eligible.push(id);
                            }
                        }
                        BackendEvent::Eligibility((id, false)) => state.eligible.retain(|eligible| *eligible != id),
                    }
                }
            });
        }

        /// The eligible backend with the fewest attempts in flight (the
        /// host's count), ties broken by a random start.
        fn pick(ctx: PickContext) -> Option<BackendId> {
            STATE.with_borrow(|state| {
                let n = state.eligible.len();
                let start = if n == 0 { 0 } else { (host::random_u64() % n as u64) as usize };
                (0..n)
                    .map(|step| state.eligible[(start + step) % n])
                    .filter(|id| Some(*id) != ctx.exclude)
                    .min_by_key(|id| host::in_flight(*id))
            })
        }

        fn observe(_outcome: Outcome) {}

        fn export_state() -> Vec<u8> {
            Vec::new()
        }

        fn import_state(_state: Vec<u8>) -> Result<(), String> {
            Ok(())
        }
    }

    export!(Contract011);
}
