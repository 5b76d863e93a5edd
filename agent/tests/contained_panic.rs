//! A panic inside `bmc::contained` (third-party code meeting hostile input) is caught and kept
//! off stderr; a panic anywhere else still reaches the hook that was there before. Its own test
//! binary: the panic hook is process-wide.
#![allow(clippy::unwrap_used, clippy::panic)]

use ferric_agent::bmc::contained;
use std::sync::atomic::{AtomicUsize, Ordering};

static SEEN: AtomicUsize = AtomicUsize::new(0);

#[test]
fn contained_panics_are_caught_quietly_and_others_still_reach_the_hook() {
    std::panic::set_hook(Box::new(|_| {
        SEEN.fetch_add(1, Ordering::SeqCst);
    }));
    assert!(contained(|| -> u32 { panic!("a hostile datagram") }).is_err());
    assert_eq!(
        SEEN.load(Ordering::SeqCst),
        0,
        "the contained panic reached the hook"
    );
    assert_eq!(contained(|| 7).unwrap(), 7);
    // Still contained after an inner call returns.
    let nested = contained(|| -> u32 {
        let _ = contained(|| 1);
        panic!("after an inner call")
    });
    assert!(nested.is_err());
    assert_eq!(SEEN.load(Ordering::SeqCst), 0);
    assert!(std::panic::catch_unwind(|| panic!("a real bug")).is_err());
    assert_eq!(
        SEEN.load(Ordering::SeqCst),
        1,
        "other panics reach the previous hook"
    );
}
