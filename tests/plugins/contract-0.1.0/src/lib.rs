//! A round-robin picker built against `veer:picker@0.1.0` exactly as released
//! (`wit/picker.wit` beside this crate is a frozen copy, never edited): the
//! tests load it into the current host to prove that a patch release of the
//! contract keeps older components loading and conforming.
//!
//! Raw bindings, not the SDK: the SDK follows the current contract.

#![allow(missing_docs)] // The generated bindings carry no docs.

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // The generated export glue is `unsafe extern "C"`, as in the SDK.
mod component {
    use std::cell::RefCell;

    wit_bindgen::generate!({ path: "wit", world: "veer:picker/picker" });

    use exports::veer::picker::policy::Guest;
    use veer::picker::types::{BackendEvent, BackendId, Feedback, Outcome, PickContext, PluginInfo};

    /// Eligible backends in the order they joined, and the next turn.
    #[derive(Default)]
    struct State {
        eligible: Vec<BackendId>,
        known: Vec<BackendId>,
        next: usize,
    }

    thread_local! {
        static STATE: RefCell<State> = RefCell::new(State::default());
    }

    struct Contract010;

    impl Guest for Contract010 {
        fn info() -> PluginInfo {
            PluginInfo { name: "contract-0.1.0".into(), version: "0.1.0".into(), feedback: Feedback::empty() }
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

        fn pick(ctx: PickContext) -> Option<BackendId> {
            STATE.with_borrow_mut(|state| {
                let n = state.eligible.len();
                (0..n).map(|step| state.eligible[(state.next + step) % n]).find(|id| Some(*id) != ctx.exclude).inspect(
                    |_| {
                        state.next = state.next.wrapping_add(1);
                    },
                )
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

    export!(Contract010);
}
