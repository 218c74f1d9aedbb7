//! Proves the query mix: parsing and its errors, and that picks follow the weights exactly.

use bluewave_loadtest::mix::{QUERY_MIX_DEFAULT, QueryKind, QueryMix};
use bluewave_loadtest::rng::SeededRng;

#[test]
fn tickets_map_to_kinds_by_cumulative_weight() {
    let mix = QueryMix::parse("last_value=2, raw_range=0, fleet_aggregate=3").unwrap();
    let kinds: Vec<QueryKind> = (0..5).map(|t| mix.kind_for(t)).collect();
    use QueryKind::*;
    assert_eq!(kinds, vec![LastValue, LastValue, FleetAggregate, FleetAggregate, FleetAggregate]);
    assert_eq!(mix.kinds().collect::<Vec<_>>(), vec![LastValue, FleetAggregate]);
}

#[test]
fn random_picks_follow_the_weights() {
    let mix = QueryMix::parse(QUERY_MIX_DEFAULT).unwrap();
    let mut rng = SeededRng::new(7);
    let mut counts = [0u32; 4];
    for _ in 0..100_000 {
        let kind = mix.pick(&mut rng);
        counts[QueryKind::ALL.iter().position(|k| *k == kind).unwrap()] += 1;
    }
    // Weights 4:4:1:1 of 100,000: 40,000 / 40,000 / 10,000 / 10,000, within 2%.
    for (count, expected) in counts.iter().zip([40_000.0, 40_000.0, 10_000.0, 10_000.0]) {
        assert!((f64::from(*count) - expected).abs() < expected * 0.02, "{counts:?}");
    }
}

#[test]
fn bad_mixes_are_refused() {
    for text in [
        "",
        "last_value=0",
        "nope=1",
        "last_value",
        "last_value=x",
        "last_value=1,last_value=2",
        "raw_range=2000000",
    ] {
        assert!(QueryMix::parse(text).is_err(), "{text:?} was accepted");
    }
}

#[test]
fn the_seeded_generator_repeats_and_stays_in_bounds() {
    let a: Vec<u64> = {
        let mut r = SeededRng::new(42);
        (0..5).map(|_| r.next_u64()).collect()
    };
    let b: Vec<u64> = {
        let mut r = SeededRng::new(42);
        (0..5).map(|_| r.next_u64()).collect()
    };
    assert_eq!(a, b);
    let mut r = SeededRng::new(1);
    for _ in 0..1_000 {
        let v = r.between(300, 2_000);
        assert!((300..=2_000).contains(&v));
    }
    assert_eq!(r.below(0), 0);
    assert_eq!(r.between(5, 3), 5);
}
