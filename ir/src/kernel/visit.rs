//! One walk over the statements of a kernel program, for every pass and backend that only
//! visits them (checks, layouts, counts, renumbering): statements in program order, each loop
//! or `start` block before its body, with where it sits ([`Site`]).
//!
//! ```
//! # use hlstm_ir::kernel::{Program, Stmt, visit};
//! # let p = Program::default();
//! let mut matmuls = 0;
//! visit::walk(&p.body, &mut |s, _| matmuls += matches!(s, Stmt::MatMul { .. }) as usize);
//! ```
//!
//! Walks that run the program (interpreters, abstract executions) or rebuild it (legalization,
//! splitting across threads) follow loops their own way and do not use this.

use super::{Stmt, View};
use std::convert::Infallible;
use std::fmt;

/// Where a visited statement sits.
#[derive(Clone, Copy, Debug)]
pub struct Site<'a> {
    /// Its index in the program's body, then in the body of each enclosing loop or `start`
    /// block (0-based; [`Site`]'s display counts from 1).
    pub path: &'a [usize],
    /// The trip of the innermost enclosing loop (1 outside loops): the steps `t` its views'
    /// step strides range over.
    pub trip: usize,
    /// The product of the trips of all enclosing loops: how many times the statement runs at
    /// the longest sequence (0 under a loop that never runs).
    pub iterations: u64,
}

impl Site<'_> {
    /// The number of enclosing loops and `start` blocks.
    pub fn depth(&self) -> usize {
        self.path.len().saturating_sub(1)
    }
}

/// `statement 3.2`: the third statement of the body, second of its body (counted from 1).
impl fmt::Display for Site<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "statement ")?;
        for (i, k) in self.path.iter().enumerate() {
            if i > 0 {
                write!(f, ".")?;
            }
            write!(f, "{}", k + 1)?;
        }
        Ok(())
    }
}

/// The body of a loop or `start` block and the trip its statements see (`trip` outside).
fn inner(s: &Stmt, trip: usize) -> Option<(&[Stmt], usize)> {
    match s {
        Stmt::Loop { trip: t, body, .. } => Some((body, *t)),
        Stmt::Start { body } => Some((body, trip)),
        _ => None,
    }
}

/// Calls `f` on every statement (loop and `start` bodies included, each block before its
/// body), stopping at the first error.
pub fn try_walk<E>(
    body: &[Stmt],
    f: &mut impl FnMut(&Stmt, &Site) -> Result<(), E>,
) -> Result<(), E> {
    fn go<E>(
        body: &[Stmt],
        path: &mut Vec<usize>,
        trip: usize,
        iterations: u64,
        f: &mut impl FnMut(&Stmt, &Site) -> Result<(), E>,
    ) -> Result<(), E> {
        for (i, s) in body.iter().enumerate() {
            path.push(i);
            let site = Site {
                path,
                trip,
                iterations,
            };
            f(s, &site)?;
            if let Some((b, t)) = inner(s, trip) {
                let its = match s {
                    Stmt::Loop { .. } => iterations.saturating_mul(t as u64),
                    _ => iterations,
                };
                go(b, path, t, its, f)?;
            }
            path.pop();
        }
        Ok(())
    }
    go(body, &mut Vec::new(), 1, 1, f)
}

/// Calls `f` on every statement (loop and `start` bodies included, each block before its
/// body).
pub fn walk(body: &[Stmt], f: &mut impl FnMut(&Stmt, &Site)) {
    let r: Result<(), Infallible> = try_walk(body, &mut |s, site| {
        f(s, site);
        Ok(())
    });
    let Ok(()) = r;
}

/// Calls `f` on every statement, mutably (each loop or `start` block before its body, which
/// `f` may have changed).
pub fn walk_mut(body: &mut [Stmt], f: &mut impl FnMut(&mut Stmt)) {
    for s in body {
        f(s);
        if let Stmt::Loop { body, .. } | Stmt::Start { body } = s {
            walk_mut(body, f);
        }
    }
}

/// Calls `f` on every view of every statement (loop and `start` bodies included).
pub fn views_mut(body: &mut [Stmt], f: &mut impl FnMut(&mut View)) {
    walk_mut(body, &mut |s| s.for_each_view_mut(&mut *f));
}

impl Stmt {
    /// The views of the statement: its output, then its inputs ([`Stmt::output`],
    /// [`Stmt::inputs`]).
    pub fn views(&self) -> Vec<&View> {
        self.output().into_iter().chain(self.inputs()).collect()
    }

    /// Calls `f` on each view of this statement (not of a block's body): its output, then its
    /// inputs in [`Stmt::inputs`] order.
    pub fn for_each_view_mut(&mut self, f: &mut impl FnMut(&mut View)) {
        match self {
            Stmt::MatMul { out, a, w, .. } => {
                f(out);
                f(a);
                if let Some(v) = w.view_mut() {
                    f(v);
                }
            }
            Stmt::Unary { out, x, .. }
            | Stmt::Clip { out, x, .. }
            | Stmt::Copy { out, x }
            | Stmt::Softmax { out, x, .. } => {
                f(out);
                f(x);
            }
            Stmt::Binary { out, a, b, .. } => {
                f(out);
                f(a);
                f(b);
            }
            Stmt::Loop { .. } | Stmt::Start { .. } | Stmt::Barrier => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{BufId, LoopRun};

    #[test]
    fn walks_blocks_before_their_bodies_with_their_sites() {
        let v = View::whole(BufId(0), &[1]);
        let copy = || Stmt::Copy {
            out: v.clone(),
            x: v.clone(),
        };
        let body = vec![
            copy(),
            Stmt::Loop {
                trip: 4,
                reverse: false,
                run: LoopRun::Fixed,
                body: vec![copy(), Stmt::Start { body: vec![copy()] }],
            },
        ];
        let mut seen = Vec::new();
        walk(&body, &mut |s, site| {
            seen.push((
                site.to_string(),
                site.depth(),
                site.trip,
                site.iterations,
                matches!(s, Stmt::Copy { .. }),
            ))
        });
        let want = [
            ("statement 1", 0, 1, 1, true),
            ("statement 2", 0, 1, 1, false),
            ("statement 2.1", 1, 4, 4, true),
            ("statement 2.2", 1, 4, 4, false),
            ("statement 2.2.1", 2, 4, 4, true),
        ];
        assert_eq!(seen.len(), want.len());
        for (got, want) in seen.iter().zip(want) {
            assert_eq!(
                (got.0.as_str(), got.1, got.2, got.3, got.4),
                want,
                "{seen:?}"
            );
        }
        let r: Result<(), String> = try_walk(&body, &mut |_, site| {
            if site.depth() == 2 {
                Err(site.to_string())
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err("statement 2.2.1".into()));
        let mut body = body;
        let mut n = 0;
        views_mut(&mut body, &mut |v| {
            v.offset += 1;
            n += 1
        });
        assert_eq!(n, 6);
    }
}
