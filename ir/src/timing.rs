//! Where setup time goes: named phases timed on the current thread, for `hlstmc compile
//! --time-passes` and `hlstmc bench --json` (a `-ftime-report`-style breakdown).
//!
//! A stage of the pipeline wraps its parts in [`phase`]; a caller that wants the breakdown runs
//! the stage inside [`record`], which returns the phases in the order they first ran, the
//! time of repeated phases summed. Outside [`record`] a phase costs one thread-local check.
//! Phases nest: a phase inside another is reported on its own, and its time is part of the
//! outer one too. Names are paths, stage first: `import/parse`, `optimize/saturate`,
//! `compile/codegen/cranelift`; a phase's path extends its outer phase's.

use std::borrow::Cow;
use std::cell::RefCell;
use std::time::{Duration, Instant};

thread_local! {
    static PHASES: RefCell<Option<Vec<(Cow<'static, str>, Duration)>>> = const { RefCell::new(None) };
}

/// Runs `f` as the phase `name`; its time is added to the innermost [`record`] running on this
/// thread, if any.
pub fn phase<T>(name: impl Into<Cow<'static, str>>, f: impl FnOnce() -> T) -> T {
    if !recording() {
        return f();
    }
    // The phase takes its place in the order now, before the phases it runs.
    let name = name.into();
    add(name.clone(), Duration::ZERO);
    let t0 = Instant::now();
    let out = f();
    add(name, t0.elapsed());
    out
}

/// Adds `d` to the phase `name` of the innermost [`record`] running on this thread, if any
/// (for a time measured by other means).
pub fn add(name: impl Into<Cow<'static, str>>, d: Duration) {
    PHASES.with(|p| {
        if let Some(v) = p.borrow_mut().as_mut() {
            let name = name.into();
            match v.iter_mut().find(|(n, _)| *n == name) {
                Some((_, t)) => *t += d,
                None => v.push((name, d)),
            }
        }
    });
}

/// Runs `f`, recording the phases it runs on this thread; returns its result and the phases
/// in the order they first ran. Records nest: an inner record takes the phases of its own
/// closure, and they are not added to the outer one.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<(Cow<'static, str>, Duration)>) {
    let outer = PHASES.with(|p| p.borrow_mut().replace(Vec::new()));
    let out = f();
    let phases = PHASES.with(|p| std::mem::replace(&mut *p.borrow_mut(), outer));
    (out, phases.unwrap_or_default())
}

/// Whether a [`record`] is running on this thread (to skip work that only names a phase).
pub fn recording() -> bool {
    PHASES.with(|p| p.borrow().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_are_recorded_in_order_and_summed() {
        let ((), v) = record(|| {
            phase("b", || ());
            phase("a", || ());
            phase("b", || ());
        });
        let names: Vec<_> = v.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["b", "a"]);
    }

    #[test]
    fn nothing_is_recorded_outside_a_record_and_records_nest() {
        phase("outside", || ());
        let ((), outer) = record(|| {
            phase("x", || ());
            let ((), inner) = record(|| phase("y", || ()));
            assert_eq!(inner.len(), 1);
            assert_eq!(inner[0].0, "y");
        });
        let names: Vec<_> = outer.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["x"]);
    }
}
