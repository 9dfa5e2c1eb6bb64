//! A picker that misbehaves on purpose, selected by its `mode` parameter:
//!
//! | mode | behaviour |
//! | --- | --- |
//! | `ok` | round robin; exports its pick count as state and adds imported counts |
//! | `loop` | `pick` never returns |
//! | `trap` | `pick` panics |
//! | `alloc` | `pick` tries to allocate `alloc_mib` MiB (default 1024) |
//! | `bad-id` | `pick` answers backend 999999 |
//! | `none` | `pick` answers none |
//! | `excluded` | `pick` answers the excluded backend when there is one |
//! | `slow-configure` | `configure` never returns |
//! | `trap-observe` | round robin, but `observe` panics |
//! | `trap-every` | round robin, but every `every`-th pick panics |
//! | `print-every` | round robin, but every `every`-th pick writes a line to stdout |
//! | `by-route` | the eligible backend named after the request's route (`request.route()`), else the one named after its upstream, else round robin |

use veer_sdk::{BackendId, Outcome, Params, PickContext, Policy, Pool};

/// The misbehaving policy.
#[derive(Debug)]
pub struct Hostile {
    mode: String,
    alloc_mib: usize,
    every: u64,
    picks: u64,
    next: usize,
    /// Keeps allocations alive so the optimiser cannot drop them.
    hoard: Vec<Vec<u8>>,
}

impl Policy for Hostile {
    const NAME: &'static str = "hostile";
    const WANTS_OUTCOMES: bool = true;

    fn configure(params: &Params) -> Result<Self, String> {
        let reader = params.reader();
        let mode = reader.text("mode", "ok");
        let alloc_mib = reader.number("alloc_mib", 1024usize, 1..=1 << 20);
        let every = reader.number("every", 2u64, 1..=u64::MAX);
        reader.finish()?;
        if mode == "slow-configure" {
            spin_forever();
        }
        Ok(Hostile { mode, alloc_mib, every, picks: 0, next: 0, hoard: Vec::new() })
    }

    fn pick(&mut self, pool: &Pool, ctx: &PickContext) -> Option<BackendId> {
        self.picks += 1;
        if self.mode == "by-route" {
            let named = |name: Option<String>| {
                let name = name?;
                pool.eligible().iter().copied().find(|id| pool.get(*id).is_some_and(|b| b.name == name))
            };
            if let Some(id) = named(veer_sdk::request::route()).or_else(|| named(veer_sdk::request::upstream())) {
                return Some(id);
            }
        }
        match self.mode.as_str() {
            "loop" => spin_forever(),
            "trap" => panic!("hostile plugin: trap on purpose"),
            "alloc" => {
                self.hoard.push(vec![1u8; self.alloc_mib << 20]);
                None
            }
            "bad-id" => Some(999_999),
            "none" => None,
            "excluded" if ctx.exclude.is_some() => ctx.exclude,
            "trap-every" if self.picks.is_multiple_of(self.every) => panic!("hostile plugin: periodic trap"),
            "print-every" if self.picks.is_multiple_of(self.every) => {
                println!("hostile plugin: pick {}", self.picks);
                pool.eligible().first().copied().filter(|id| Some(*id) != ctx.exclude)
            }
            _ => {
                let eligible = pool.eligible();
                (0..eligible.len())
                    .map(|i| eligible[(self.next + i) % eligible.len()])
                    .find(|id| Some(*id) != ctx.exclude)
                    .inspect(|_| {
                        self.next = self.next.wrapping_add(1);
                    })
            }
        }
    }

    fn observe(&mut self, _pool: &Pool, _outcome: &Outcome) {
        if self.mode == "trap-observe" {
            panic!("hostile plugin: trap in observe");
        }
    }

    fn export_state(&self, _pool: &Pool) -> Vec<u8> {
        self.picks.to_string().into_bytes()
    }

    fn import_state(&mut self, _pool: &Pool, state: &[u8]) -> Result<(), String> {
        let text = std::str::from_utf8(state).map_err(|_| "state is not UTF-8".to_string())?;
        self.picks += text.parse::<u64>().map_err(|_| format!("state is not a pick count: '{text}'"))?;
        Ok(())
    }
}

fn spin_forever() -> ! {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

veer_sdk::export_policy!(Hostile);
