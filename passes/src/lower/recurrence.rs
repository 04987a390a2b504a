//! A `recurrence` as a `Loop`.
//!
//! - Carried state lives in one Temp buffer per state, filled from the initial value before the
//!   loop; the body reads it through a whole view, and the last statements of each step copy the
//!   next values in. A next value that is itself a view of a state buffer (a state passed
//!   through, or two states swapped) is copied to a temporary first, so no update reads a state
//!   another update has already written. A next value computed into a temporary of its own is
//!   computed straight into its state buffer instead when nothing after that point in the step
//!   reads the old state (the LSTM cell state c, for one).
//! - Scanned sequences are views into the sequence with `step_stride` = the stride of its axis 0;
//!   invariants are the outer values' views, and body nodes that read only invariants run once,
//!   before the loop.
//! - Per-step outputs are computed into their slot of the stacked result (a view with
//!   `step_stride` = one step's size), or copied there; one that is also a state's next value
//!   (an LSTM's h) is computed into the state and copied into its slot, instead of into the
//!   slot and copied back out of it (at batch 16, with the state stored transposed, that was
//!   two transposes a step instead of one).
//! - Final carried values are the state buffers.
//! - Sequence lengths must be equal: constant ones make the loop run that many steps, and the
//!   stacked rows past them are zeroed; run-time ones (the program's `seq_lens` input) make it
//!   run `steps` times ([`LoopRun::Steps`]), the count the caller derives from the input, after
//!   the stacked outputs are zeroed whole.

use super::{Loc, LoopScope, Lowerer, Scope, node_err, view};
use hlstm_ir::kernel::visit;
use hlstm_ir::kernel::{BufId, BufKind, LoopRun, Stmt, Storage, View, row_major_strides};
use hlstm_ir::{Graph, Op, Recurrence, Value};
use petgraph::stable_graph::NodeIndex;
use std::collections::HashSet;

impl Lowerer<'_> {
    pub(crate) fn lower_recurrence(
        &mut self,
        g: &Graph,
        n: NodeIndex,
        r: &Recurrence,
        sc: &mut Scope,
        ctx: &str,
    ) -> Result<(), String> {
        let err = |msg: String| node_err(g, n, ctx, msg);
        let node_name = g.nodes[n].name.clone();
        let (nc, ns, ni) = (r.num_carried, r.num_scanned, r.num_invariant);
        let body = &r.body;
        let operands = g.operands(n);
        let loc = |i: usize| -> Result<Loc, String> {
            let v = operands
                .get(i)
                .copied()
                .flatten()
                .ok_or_else(|| err(format!("operand {i} is missing")))?;
            sc.env
                .get(&v)
                .cloned()
                .ok_or_else(|| err(format!("operand {i} was not lowered")))
        };
        let f32_loc = |i: usize, what: &str| -> Result<View, String> {
            match loc(i)? {
                Loc::F32(v) => Ok(v),
                Loc::Known(t) => Err(err(format!(
                    "{what} is {}: the kernel IR carries f32 values only",
                    t.dtype()
                ))),
            }
        };
        if ns == 0 {
            return Err(err("a recurrence needs at least one scanned input".into()));
        }
        let mut nested = false;
        body.walk(&mut |bg, bn, _| nested |= matches!(bg.nodes[bn].op, Op::Recurrence(_)));
        if nested {
            return Err(err(
                "nested recurrences are not supported by the kernel IR".into()
            ));
        }
        if body.inputs.len() != nc + ns + ni || body.outputs.len() < nc {
            return Err(err(format!(
                "the body takes {} inputs and gives {} outputs for {nc} carried, {ns} scanned \
                 and {ni} invariant values",
                body.inputs.len(),
                body.outputs.len()
            )));
        }
        let scanned: Vec<View> = (nc..nc + ns)
            .map(|i| f32_loc(i, "a scanned sequence"))
            .collect::<Result<_, _>>()?;
        if scanned.iter().any(|s| s.dims.is_empty()) {
            return Err(err("a scanned input must have rank >= 1".into()));
        }
        let steps = scanned[0].dims[0];
        if let Some(bad) = scanned.iter().find(|s| s.dims[0] != steps) {
            return Err(err(format!(
                "scanned inputs differ in length: {steps} vs an input of shape {}",
                hlstm_ir::dims_text(&bad.dims)
            )));
        }
        // Sequence lengths from the run-time input: the loop runs the length it gives.
        let run_time_lens = r.has_seq_lens
            && match loc(nc + ns + ni)? {
                Loc::F32(v) => {
                    if self.prog.seq_lens.map(Storage::Buf) != Some(v.storage) {
                        return Err(err(
                            "sequence lengths must be integers (a constant or a graph input)"
                                .into(),
                        ));
                    }
                    true
                }
                Loc::Known(_) => false,
            };
        let trip = if r.has_seq_lens && !run_time_lens {
            let lens = match loc(nc + ns + ni)? {
                Loc::Known(t) => t
                    .to_i64_vec()
                    .ok_or_else(|| err("sequence lengths must be integers".into()))?,
                Loc::F32(_) => unreachable!("run-time lengths are handled above"),
            };
            match lens.first() {
                None => steps,
                Some(&l) => {
                    if lens.iter().any(|&x| x != l) {
                        return Err(err(format!(
                            "sequence lengths {} are unequal; the kernel IR runs one \
                             length for the whole batch",
                            hlstm_ir::dims_text(&lens)
                        )));
                    }
                    if l < 0 || l as usize > steps {
                        return Err(err(format!("sequence length {l} is outside 0..={steps}")));
                    }
                    l as usize
                }
            }
        } else {
            steps
        };
        let body_dims = |v: Value| -> Result<Vec<usize>, String> {
            let info = body.value_info(v);
            info.ty.concrete().ok_or_else(|| {
                err(format!(
                    "body value '{}' has type {}: the kernel IR needs static shapes",
                    info.name, info.ty
                ))
            })
        };

        let mut setup: Vec<Stmt> = Vec::new();
        // The initial state: skipped by a call that resumes a sequence (streaming).
        let mut start: Vec<Stmt> = Vec::new();
        let mut written: HashSet<BufId> = HashSet::new();
        // Carried state.
        let mut states = Vec::with_capacity(nc);
        for i in 0..nc {
            let init = f32_loc(i, "an initial state")?;
            let input = Value {
                node: body.inputs[i],
                slot: 0,
            };
            let dims = body_dims(input)?;
            if init.len() != dims.iter().product::<usize>() {
                return Err(err(format!(
                    "initial state {i} has dims {}, the body reads {}",
                    hlstm_ir::dims_text(&init.dims),
                    hlstm_ir::dims_text(&dims)
                )));
            }
            let name = format!("{}.state", body.value_info(input).name);
            let b = self.prog.add_buffer(&name, BufKind::Temp, &dims);
            written.insert(b);
            let s = View::whole(b, &dims);
            let init = view::broadcast_to(&init, &dims)
                .or_else(|_| view::reshape(&init, &dims).ok_or("reshape".to_string()))
                .map_err(|_| {
                    err(format!(
                        "initial state {i} does not fit {}",
                        hlstm_ir::dims_text(&dims)
                    ))
                })?;
            let (mut o, mut x) = (s.clone(), init);
            if !o.is_empty() {
                view::coalesce(&mut [&mut o, &mut x]);
                start.push(Stmt::Copy { out: o, x });
            }
            states.push(s);
        }
        // Stacked per-step outputs.
        let n_out = body.outputs.len() - nc;
        let mut stacked = Vec::with_capacity(n_out);
        let mut slots = Vec::with_capacity(n_out);
        for k in 0..n_out {
            let step_dims = body_dims(body.outputs[nc + k].1)?;
            let mut full = vec![steps];
            full.extend(&step_dims);
            let result = Value {
                node: n,
                slot: nc + k,
            };
            let whole = match sc.homes.get(&result) {
                Some(h) if h.dims == full && h.offset == 0 && view::is_contiguous(h) => h.clone(),
                _ => {
                    let name = g.value_info(result).name.clone();
                    let b = self.prog.add_buffer(&name, BufKind::Temp, &full);
                    View::whole(b, &full)
                }
            };
            if let Storage::Buf(b) = whole.storage {
                written.insert(b);
            }
            let step_len: usize = step_dims.iter().product();
            let slot = View {
                storage: whole.storage,
                offset: whole.offset,
                dims: step_dims.clone(),
                strides: row_major_strides(&step_dims),
                step_stride: step_len as isize,
            };
            if run_time_lens && step_len > 0 {
                // The steps past the run-time length leave zeros: all of them are zeroed first.
                let z = self.scalar(0.0, &whole.dims);
                let (mut o, mut x) = (whole.clone(), z);
                view::coalesce(&mut [&mut o, &mut x]);
                setup.push(Stmt::Copy { out: o, x });
            } else if trip < steps && step_len > 0 {
                // Steps that do not run leave zeros.
                let rest = view::slice_axis(&whole, 0, trip, steps - trip, 1);
                let z = self.scalar(0.0, &rest.dims);
                let (mut o, mut x) = (rest, z);
                view::coalesce(&mut [&mut o, &mut x]);
                setup.push(Stmt::Copy { out: o, x });
            }
            stacked.push(whole);
            slots.push(slot);
        }

        // The body.
        let mut bs = Scope {
            lp: Some(LoopScope {
                pre: Vec::new(),
                written: written.clone(),
            }),
            ..Scope::default()
        };
        for (j, &inp) in body.inputs.iter().enumerate() {
            let l = if j < nc {
                Loc::F32(states[j].clone())
            } else if j < nc + ns {
                let s = &scanned[j - nc];
                Loc::F32(View {
                    storage: s.storage,
                    offset: s.offset,
                    dims: s.dims[1..].to_vec(),
                    strides: s.strides[1..].to_vec(),
                    step_stride: s.strides[0],
                })
            } else {
                loc(j)?
            };
            if let Loc::F32(v) = &l {
                let want = body_dims(Value { node: inp, slot: 0 })?;
                if v.dims != want {
                    return Err(err(format!(
                        "body input '{}' is read as {} but holds {}",
                        body.nodes[inp].name,
                        hlstm_ir::dims_text(&want),
                        hlstm_ir::dims_text(&v.dims)
                    )));
                }
            }
            bs.env.insert(Value { node: inp, slot: 0 }, l);
        }
        // A per-step output is computed in its slot, unless it is a carried state's next value
        // too: then in a temporary that becomes the state (below), the slot copied from it. In
        // the slot, the state would be copied back out of it every step, and where the state is
        // stored transposed (`rows_inner`) both copies are transposes.
        let next_states: HashSet<Value> = body.outputs[..nc].iter().map(|o| o.1).collect();
        for (k, slot) in slots.iter().enumerate() {
            let v = body.outputs[nc + k].1;
            if !next_states.contains(&v) {
                bs.homes.entry(v).or_insert_with(|| slot.clone());
            }
        }
        let inner_ctx = format!("{ctx}in the body of recurrence '{node_name}': ");
        self.lower_graph(body, &mut bs, &inner_ctx)?;
        let out_loc = |bs: &Scope, k: usize| -> Result<View, String> {
            let (name, v) = &body.outputs[k];
            match bs.env.get(v) {
                Some(Loc::F32(x)) => Ok(x.clone()),
                Some(Loc::Known(t)) => Err(err(format!(
                    "body output '{name}' is {}: the kernel IR carries f32 values only",
                    t.dtype()
                ))),
                None => Err(err(format!("body output '{name}' was not computed"))),
            }
        };
        // Per-step outputs not computed in place.
        for (k, slot) in slots.iter().enumerate() {
            let x = out_loc(&bs, nc + k)?;
            if x != *slot {
                self.copy(&mut bs, slot.clone(), x, false);
            }
        }
        // State updates.
        let state_bufs: Vec<BufId> = states
            .iter()
            .map(|s| match s.storage {
                Storage::Buf(b) => b,
                Storage::Const(_) => unreachable!("states are buffers"),
            })
            .collect();
        let mut updates: Vec<(usize, View)> = Vec::new();
        for (i, s) in states.iter().enumerate() {
            let x = out_loc(&bs, i)?;
            let x = if x.dims == s.dims {
                x
            } else {
                view::broadcast_to(&x, &s.dims).map_err(&err)?
            };
            if x == *s {
                continue;
            }
            let reads_state = matches!(x.storage, Storage::Buf(b) if state_bufs.contains(&b));
            if reads_state {
                let name = format!("{}.next", body.outputs[i].0);
                let t = self.temp(&mut bs, &name, &s.dims, false);
                self.copy(&mut bs, t.clone(), x, false);
                updates.push((i, t));
            } else {
                updates.push((i, x));
            }
        }
        let body_temps: HashSet<BufId> = bs
            .lp
            .as_ref()
            .map(|lp| lp.written.difference(&written).copied().collect())
            .unwrap_or_default();
        let mut stmts = std::mem::take(&mut bs.stmts);
        let mut copies: Vec<Option<Stmt>> = Vec::new();
        let mut sources = Vec::new();
        for (i, x) in &updates {
            let (mut o, mut x2) = (states[*i].clone(), x.clone());
            if o.is_empty() {
                copies.push(None);
            } else {
                view::coalesce(&mut [&mut o, &mut x2]);
                copies.push(Some(Stmt::Copy { out: o, x: x2 }));
            }
            sources.push(x.clone());
        }
        // Next values computed straight into their state.
        for (u, (i, x)) in updates.iter().enumerate() {
            let Storage::Buf(b) = x.storage else {
                continue;
            };
            if !body_temps.contains(&b)
                || *x != View::whole(b, &self.prog.buffers[b.0].dims)
                || self.prog.buffers[b.0].len() != states[*i].len()
            {
                continue;
            }
            let s = state_bufs[*i];
            let mut all: Vec<Stmt> = stmts.clone();
            all.extend(
                copies
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != u)
                    .filter_map(|(_, c)| c.clone()),
            );
            let Some(first) = all.iter().position(|st| writes(st, b)) else {
                continue;
            };
            if all[first..].iter().any(|st| touches(st, s)) {
                continue;
            }
            // b's only other users are in this body (it is a body temporary).
            rename(&mut stmts, b, s);
            for c in copies.iter_mut().flatten() {
                rename(std::slice::from_mut(c), b, s);
            }
            copies[u] = None;
        }
        stmts.extend(copies.into_iter().flatten());
        let lp = bs.lp.take().expect("a loop scope");
        sc.stmts.extend(lp.pre);
        if !start.is_empty() {
            sc.stmts.push(Stmt::Start { body: start });
        }
        sc.stmts.extend(setup);
        sc.stmts.push(Stmt::Loop {
            trip,
            reverse: r.reverse,
            run: if run_time_lens {
                LoopRun::Steps
            } else {
                LoopRun::Fixed
            },
            body: stmts,
        });
        for (i, s) in states.into_iter().enumerate() {
            sc.env.insert(Value { node: n, slot: i }, Loc::F32(s));
        }
        for (k, whole) in stacked.into_iter().enumerate() {
            sc.env.insert(
                Value {
                    node: n,
                    slot: nc + k,
                },
                Loc::F32(whole),
            );
        }
        Ok(())
    }
}

fn writes(st: &Stmt, b: BufId) -> bool {
    st.output().is_some_and(|o| o.storage == Storage::Buf(b))
}

/// Whether a statement reads or writes buffer `b`.
fn touches(st: &Stmt, b: BufId) -> bool {
    let mut hit = false;
    visit::walk(std::slice::from_ref(st), &mut |s, _| {
        hit |= s.views().iter().any(|v| v.storage == Storage::Buf(b))
    });
    hit
}

fn rename(stmts: &mut [Stmt], from: BufId, to: BufId) {
    visit::views_mut(stmts, &mut |v| {
        if v.storage == Storage::Buf(from) {
            v.storage = Storage::Buf(to);
        }
    });
}
