use agents_runtime::prelude::*;
use agents_runtime::storage::Durability;

#[derive(Default)]
struct AlwaysOn;

#[agent(hibernate = false, durability = "relaxed")]
impl AlwaysOn {}

#[derive(Default)]
struct Defaults;

#[agent(hibernate = true, durability = "confirmed")]
impl Defaults {}

fn main() {
    const { assert!(!<AlwaysOn as Agent>::HIBERNATE) };
    const { assert!(matches!(<AlwaysOn as Agent>::DURABILITY, Durability::Relaxed)) };
    const { assert!(<Defaults as Agent>::HIBERNATE) };
    const { assert!(matches!(<Defaults as Agent>::DURABILITY, Durability::Confirmed)) };
}
