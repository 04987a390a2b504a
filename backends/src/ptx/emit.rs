//! The printer: a legalized program as the text of one persistent PTX kernel. It prints the
//! legalized statements and nothing else; elementwise operations come from `table::template`.
//!
//! Fixed registers: `%r0` thread in block, `%r1` thread in grid, `%r2` threads in grid,
//! `%r3` steps, `%r4` resume, `%r5` blocks - 1, `%r6` threads per block, `%rd0` the workspace
//! (global address; words 0 and 1 are the grid barrier's arrival count and generation).

use super::legalize::{Array, ArrayTy, Count, LProgram, LStmt, LView, Map, Place, Rows};
use super::table::{self, Arg};
use std::fmt::Write;

/// Where a view's storage is addressed from.
#[derive(Clone)]
enum Ptr {
    /// A 64-bit global address; `nc`: read-only data (ld.global.nc).
    Global { reg: String, nc: bool },
    /// A 32-bit shared-memory address.
    Shared { reg: String },
}

pub struct Printer<'a> {
    lp: &'a LProgram,
    name: String,
    body: String,
    nr: usize,
    nf: usize,
    nrd: usize,
    np: usize,
    labels: usize,
    /// The step register of the enclosing loop.
    t: Option<String>,
}

impl<'a> Printer<'a> {
    pub fn new(lp: &'a LProgram, name: &str) -> Printer<'a> {
        Printer {
            lp,
            name: name.to_string(),
            body: String::new(),
            nr: 7,
            nf: 0,
            nrd: 2,
            np: 0,
            labels: 0,
            t: None,
        }
    }

    fn r(&mut self) -> String {
        self.nr += 1;
        format!("%r{}", self.nr - 1)
    }
    fn f(&mut self) -> String {
        self.nf += 1;
        format!("%f{}", self.nf - 1)
    }
    fn rd(&mut self) -> String {
        self.nrd += 1;
        format!("%rd{}", self.nrd - 1)
    }
    fn p(&mut self) -> String {
        self.np += 1;
        format!("%p{}", self.np - 1)
    }
    fn label(&mut self) -> String {
        self.labels += 1;
        format!("L{}", self.labels - 1)
    }
    fn ins(&mut self, s: &str) {
        self.body.push('\t');
        self.body.push_str(s);
        self.body.push('\n');
    }
    fn put_label(&mut self, l: &str) {
        let _ = writeln!(self.body, "{l}:");
    }

    pub fn param(&self, what: &str) -> String {
        format!("{}_{what}", self.name)
    }

    fn array_sym(&self, a: &Array) -> String {
        format!("{}_{}", self.name, a.name)
    }

    fn base(&mut self, place: Place) -> Ptr {
        match place {
            Place::Input(k) | Place::Output(k) => {
                let what = if matches!(place, Place::Input(_)) {
                    format!("in{k}")
                } else {
                    format!("out{k}")
                };
                let d = self.rd();
                let prm = self.param(&what);
                self.ins(&format!("ld.param.u64 {d}, [{prm}];"));
                self.ins(&format!("cvta.to.global.u64 {d}, {d};"));
                Ptr::Global { reg: d, nc: false }
            }
            Place::Work(w) => {
                let d = self.rd();
                self.ins(&format!("add.s64 {d}, %rd0, {};", w * 4));
                Ptr::Global { reg: d, nc: false }
            }
            Place::Array(i) => {
                let a = &self.lp.arrays[i];
                let sym = self.array_sym(a);
                match a.shared {
                    Some(off) => {
                        let r = self.r();
                        let smem = self.param("smem");
                        self.ins(&format!("mov.u32 {r}, {smem};"));
                        self.ins(&format!("add.u32 {r}, {r}, {off};"));
                        Ptr::Shared { reg: r }
                    }
                    None => {
                        let d = self.rd();
                        self.ins(&format!("mov.u64 {d}, {sym};"));
                        Ptr::Global { reg: d, nc: true }
                    }
                }
            }
        }
    }

    /// The address of word `idx` (an s32 or u32 register) of `ptr`.
    fn elem(&mut self, ptr: &Ptr, idx: &str) -> Ptr {
        match ptr {
            Ptr::Global { reg, nc } => {
                let d = self.rd();
                self.ins(&format!("mul.wide.s32 {d}, {idx}, 4;"));
                self.ins(&format!("add.s64 {d}, {d}, {reg};"));
                Ptr::Global { reg: d, nc: *nc }
            }
            Ptr::Shared { reg } => {
                let r = self.r();
                self.ins(&format!("mad.lo.s32 {r}, {idx}, 4, {reg};"));
                Ptr::Shared { reg: r }
            }
        }
    }

    /// Moves a pointer by `words` (in place).
    fn bump(&mut self, ptr: &Ptr, words: i64) {
        if words == 0 {
            return;
        }
        match ptr {
            Ptr::Global { reg, .. } => self.ins(&format!("add.s64 {reg}, {reg}, {};", words * 4)),
            Ptr::Shared { reg } => self.ins(&format!("add.s32 {reg}, {reg}, {};", words * 4)),
        }
    }

    fn load(&mut self, ptr: &Ptr, ty: &str, d: &str) {
        let s = match ptr {
            Ptr::Global { reg, nc: true } => format!("ld.global.nc.{ty} {d}, [{reg}];"),
            Ptr::Global { reg, nc: false } => format!("ld.global.{ty} {d}, [{reg}];"),
            Ptr::Shared { reg } => format!("ld.shared.{ty} {d}, [{reg}];"),
        };
        self.ins(&s);
    }

    fn store(&mut self, ptr: &Ptr, v: &str) {
        match ptr {
            Ptr::Global { reg, .. } => self.ins(&format!("st.global.f32 [{reg}], {v};")),
            Ptr::Shared { reg } => self.ins(&format!("st.shared.f32 [{reg}], {v};")),
        }
    }

    /// The word offset of a view at multi-index `idx` (registers, None for dims of stride 0 or
    /// not indexed) and the current step.
    fn offset(&mut self, v: &LView, idx: &[Option<String>]) -> String {
        let o = self.r();
        self.ins(&format!("mov.u32 {o}, {};", v.offset as i32));
        if v.step != 0 {
            let t = self
                .t
                .clone()
                .expect("a view with a step stride is inside a loop");
            self.ins(&format!("mad.lo.s32 {o}, {t}, {}, {o};", v.step as i32));
        }
        for (d, i) in idx.iter().enumerate() {
            if let Some(i) = i
                && v.strides[d] != 0
            {
                self.ins(&format!(
                    "mad.lo.s32 {o}, {i}, {}, {o};",
                    v.strides[d] as i32
                ));
            }
        }
        o
    }

    /// A grid-stride loop over work items `0..count`: emits the head, calls `body` with the
    /// work-item register, emits the tail.
    fn grid_loop(&mut self, count: &str, body: &mut dyn FnMut(&mut Printer, &str)) {
        let (e, p, top, end) = (self.r(), self.p(), self.label(), self.label());
        self.ins(&format!("mov.u32 {e}, %r1;"));
        self.ins(&format!("setp.ge.u32 {p}, {e}, {count};"));
        self.ins(&format!("@{p} bra {end};"));
        self.put_label(&top);
        body(self, &e);
        self.ins(&format!("add.u32 {e}, {e}, %r2;"));
        self.ins(&format!("setp.lt.u32 {p}, {e}, {count};"));
        self.ins(&format!("@{p} bra {top};"));
        self.put_label(&end);
    }

    fn map(&mut self, m: &Map) {
        let _ = writeln!(self.body, "\t// {}", m.what);
        let count: usize = m.out.dims.iter().product();
        let bases: Vec<Ptr> = m.ins.iter().map(|x| self.base(x.place)).collect();
        let out_base = self.base(m.out.place);
        self.grid_loop(&count.to_string(), &mut |pr, e| {
            let rank = m.out.dims.len();
            let mut idx: Vec<Option<String>> = vec![None; rank];
            let q = pr.r();
            pr.ins(&format!("mov.u32 {q}, {e};"));
            for d in (1..rank).rev() {
                let i = pr.r();
                pr.ins(&format!("rem.u32 {i}, {q}, {};", m.out.dims[d]));
                pr.ins(&format!("div.u32 {q}, {q}, {};", m.out.dims[d]));
                idx[d] = Some(i);
            }
            idx[0] = Some(q);
            let mut regs: Vec<String> = Vec::new();
            for (x, b) in m.ins.iter().zip(&bases) {
                let o = pr.offset(x, &idx);
                let a = pr.elem(b, &o);
                let f = pr.f();
                pr.load(&a, "f32", &f);
                regs.push(f);
            }
            for op in &m.ops {
                let args: Vec<String> = op
                    .args
                    .iter()
                    .map(|a| match a {
                        Arg::Reg(r) => regs[*r].clone(),
                        Arg::Imm(x) => table::imm(*x),
                    })
                    .collect();
                let (d, pred) = (pr.f(), pr.p());
                let text = table::fill(op.prim, &d, &args, &pred);
                pr.ins(&text);
                regs.push(d);
            }
            let o = pr.offset(&m.out, &idx);
            let a = pr.elem(&out_base, &o);
            let v = regs[m.result].clone();
            pr.store(&a, &v);
        });
    }

    fn rows_count(&mut self, rows: Rows, n: usize) -> String {
        match rows {
            Rows::Fixed(m) => (m * n).to_string(),
            Rows::PerStep(r) => {
                let c = self.r();
                self.ins(&format!("mul.lo.u32 {c}, %r3, {};", r * n));
                c
            }
        }
    }

    /// One work item per row: the max, the sum of 2^((x - max) log2 e), then x - max - ln(sum)
    /// or each exponential / sum (kept in `out` by the second pass).
    fn softmax(&mut self, out: &LView, x: &LView, log: bool) {
        let rank = out.dims.len();
        let n = out.dims[rank - 1];
        let rows: usize = out.dims[..rank - 1].iter().product();
        let (xb, ob) = (self.base(x.place), self.base(out.place));
        let (sx, so) = (x.strides[rank - 1], out.strides[rank - 1]);
        self.grid_loop(&rows.to_string(), &mut |pr, e| {
            let mut idx: Vec<Option<String>> = vec![None; rank];
            let q = pr.r();
            pr.ins(&format!("mov.u32 {q}, {e};"));
            for d in (1..rank.saturating_sub(1)).rev() {
                let i = pr.r();
                pr.ins(&format!("rem.u32 {i}, {q}, {};", out.dims[d]));
                pr.ins(&format!("div.u32 {q}, {q}, {};", out.dims[d]));
                idx[d] = Some(i);
            }
            if rank > 1 {
                idx[0] = Some(q);
            }
            let (xo, oo) = (pr.offset(x, &idx), pr.offset(out, &idx));
            // A loop over the row's n elements with fresh pointers to x and out.
            let row = |pr: &mut Printer, body: &mut dyn FnMut(&mut Printer, &Ptr, &Ptr)| {
                let (xp, op) = (pr.elem(&xb, &xo), pr.elem(&ob, &oo));
                let (k, p, top) = (pr.r(), pr.p(), pr.label());
                pr.ins(&format!("mov.u32 {k}, 0;"));
                pr.put_label(&top);
                body(pr, &xp, &op);
                pr.bump(&xp, sx);
                pr.bump(&op, so);
                pr.ins(&format!("add.u32 {k}, {k}, 1;"));
                pr.ins(&format!("setp.lt.u32 {p}, {k}, {n};"));
                pr.ins(&format!("@{p} bra {top};"));
            };
            let (m, sum) = (pr.f(), pr.f());
            pr.ins(&format!("mov.f32 {m}, {};", table::imm(f32::NEG_INFINITY)));
            pr.ins(&format!("mov.f32 {sum}, {};", table::imm(0.0)));
            row(pr, &mut |pr, xp, _| {
                let v = pr.f();
                pr.load(xp, "f32", &v);
                pr.ins(&format!("max.f32 {m}, {m}, {v};"));
            });
            row(pr, &mut |pr, xp, op| {
                let (v, ex) = (pr.f(), pr.f());
                pr.load(xp, "f32", &v);
                pr.ins(&format!("sub.rn.f32 {v}, {v}, {m};"));
                let l2e = table::imm(std::f32::consts::LOG2_E);
                pr.ins(&format!("mul.rn.f32 {v}, {v}, {l2e};"));
                pr.ins(&format!("ex2.approx.f32 {ex}, {v};"));
                pr.ins(&format!("add.rn.f32 {sum}, {sum}, {ex};"));
                if !log {
                    pr.store(op, &ex);
                }
            });
            if log {
                let ls = pr.f();
                pr.ins(&format!("lg2.approx.f32 {ls}, {sum};"));
                let ln2 = table::imm(std::f32::consts::LN_2);
                pr.ins(&format!("mul.rn.f32 {ls}, {ls}, {ln2};"));
                row(pr, &mut |pr, xp, op| {
                    let v = pr.f();
                    pr.load(xp, "f32", &v);
                    pr.ins(&format!("sub.rn.f32 {v}, {v}, {m};"));
                    pr.ins(&format!("sub.rn.f32 {v}, {v}, {ls};"));
                    pr.store(op, &v);
                });
            } else {
                row(pr, &mut |pr, _, op| {
                    let v = pr.f();
                    pr.load(op, "f32", &v);
                    pr.ins(&format!("div.rn.f32 {v}, {v}, {sum};"));
                    pr.store(op, &v);
                });
            }
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn dense(&mut self, out: &LView, a: &LView, w: &LView, rows: Rows, k: usize, n: usize) {
        let count = self.rows_count(rows, n);
        let (ab, wb, ob) = (self.base(a.place), self.base(w.place), self.base(out.place));
        self.grid_loop(&count, &mut |pr, e| {
            let (i, j) = (pr.r(), pr.r());
            pr.ins(&format!("div.u32 {i}, {e}, {n};"));
            pr.ins(&format!("rem.u32 {j}, {e}, {n};"));
            let ao = pr.offset(a, &[Some(i.clone()), None]);
            let wo = pr.offset(w, &[None, Some(j.clone())]);
            let ap = pr.elem(&ab, &ao);
            let wp = pr.elem(&wb, &wo);
            let acc = pr.f();
            pr.ins(&format!("mov.f32 {acc}, 0f00000000;"));
            if k > 0 {
                let (kk, p, top) = (pr.r(), pr.p(), pr.label());
                let (x, y) = (pr.f(), pr.f());
                pr.ins(&format!("mov.u32 {kk}, 0;"));
                pr.put_label(&top);
                pr.load(&ap, "f32", &x);
                pr.load(&wp, "f32", &y);
                pr.ins(&format!("fma.rn.f32 {acc}, {x}, {y}, {acc};"));
                pr.bump(&ap, a.strides[1]);
                pr.bump(&wp, w.strides[0]);
                pr.ins(&format!("add.u32 {kk}, {kk}, 1;"));
                pr.ins(&format!("setp.lt.u32 {p}, {kk}, {k};"));
                pr.ins(&format!("@{p} bra {top};"));
            }
            let oo = pr.offset(out, &[Some(i), Some(j)]);
            let op = pr.elem(&ob, &oo);
            pr.store(&op, &acc);
        });
    }

    #[allow(clippy::too_many_arguments)]
    fn csr(
        &mut self,
        out: &LView,
        a: &LView,
        arrays: (usize, Option<usize>, Option<usize>),
        rows: Rows,
        n: usize,
    ) {
        let count = self.rows_count(rows, n);
        let (ab, ob) = (self.base(a.place), self.base(out.place));
        let pb = self.base(Place::Array(arrays.0));
        let ib = arrays.1.map(|i| self.base(Place::Array(i)));
        let vb = arrays.2.map(|i| self.base(Place::Array(i)));
        self.grid_loop(&count, &mut |pr, e| {
            let (i, j) = (pr.r(), pr.r());
            pr.ins(&format!("div.u32 {i}, {e}, {n};"));
            pr.ins(&format!("rem.u32 {j}, {e}, {n};"));
            let acc = pr.f();
            pr.ins(&format!("mov.f32 {acc}, 0f00000000;"));
            if let (Some(ib), Some(vb)) = (&ib, &vb) {
                let ao = pr.offset(a, &[Some(i.clone()), None]);
                let arow = pr.elem(&ab, &ao);
                let pp = pr.elem(&pb, &j);
                let (p0, p1) = (pr.r(), pr.r());
                pr.load(&pp, "u32", &p0);
                pr.bump(&pp, 1);
                pr.load(&pp, "u32", &p1);
                let (p, top, done) = (pr.p(), pr.label(), pr.label());
                pr.ins(&format!("setp.ge.u32 {p}, {p0}, {p1};"));
                pr.ins(&format!("@{p} bra {done};"));
                pr.put_label(&top);
                let ip = pr.elem(ib, &p0);
                let vp = pr.elem(vb, &p0);
                let (row, v, x) = (pr.r(), pr.f(), pr.f());
                pr.load(&ip, "u32", &row);
                pr.load(&vp, "f32", &v);
                let col = pr.r();
                pr.ins(&format!(
                    "mul.lo.s32 {col}, {row}, {};",
                    a.strides[1] as i32
                ));
                let xp = match &arow {
                    Ptr::Global { reg, nc } => {
                        let d = pr.rd();
                        pr.ins(&format!("mul.wide.s32 {d}, {col}, 4;"));
                        pr.ins(&format!("add.s64 {d}, {d}, {reg};"));
                        Ptr::Global { reg: d, nc: *nc }
                    }
                    Ptr::Shared { reg } => {
                        let r = pr.r();
                        pr.ins(&format!("mad.lo.s32 {r}, {col}, 4, {reg};"));
                        Ptr::Shared { reg: r }
                    }
                };
                pr.load(&xp, "f32", &x);
                pr.ins(&format!("fma.rn.f32 {acc}, {x}, {v}, {acc};"));
                pr.ins(&format!("add.u32 {p0}, {p0}, 1;"));
                pr.ins(&format!("setp.lt.u32 {p}, {p0}, {p1};"));
                pr.ins(&format!("@{p} bra {top};"));
                pr.put_label(&done);
            }
            let oo = pr.offset(out, &[Some(i), Some(j)]);
            let op = pr.elem(&ob, &oo);
            pr.store(&op, &acc);
        });
    }

    /// The grid-wide barrier: every block's threads meet at bar.sync; thread 0 of each block
    /// releases the block's writes (fence, cumulative over the bar.sync), arrives on the count,
    /// and either (the last) resets the count and publishes the next generation with a release
    /// store, or waits for it with acquire loads; a second bar.sync passes what thread 0
    /// acquired to the whole block.
    fn grid_barrier(&mut self) {
        let (p, generation, old, next, cur) = (self.p(), self.r(), self.r(), self.r(), self.r());
        let (wait, done) = (self.label(), self.label());
        self.ins("// grid barrier");
        self.ins("bar.sync 0;");
        self.ins(&format!("setp.ne.u32 {p}, %r0, 0;"));
        self.ins(&format!("@{p} bra {done};"));
        self.ins(&format!(
            "ld.relaxed.gpu.global.u32 {generation}, [%rd0+4];"
        ));
        self.ins("fence.acq_rel.gpu;");
        self.ins(&format!(
            "atom.relaxed.gpu.global.add.u32 {old}, [%rd0], 1;"
        ));
        self.ins("fence.acq_rel.gpu;");
        self.ins(&format!("setp.ne.u32 {p}, {old}, %r5;"));
        self.ins(&format!("@{p} bra {wait};"));
        self.ins("st.relaxed.gpu.global.u32 [%rd0], 0;");
        self.ins(&format!("add.u32 {next}, {generation}, 1;"));
        self.ins(&format!("st.release.gpu.global.u32 [%rd0+4], {next};"));
        self.ins(&format!("bra.uni {done};"));
        self.put_label(&wait);
        self.ins(&format!("ld.acquire.gpu.global.u32 {cur}, [%rd0+4];"));
        self.ins(&format!("setp.eq.u32 {p}, {cur}, {generation};"));
        self.ins(&format!("@{p} bra {wait};"));
        self.put_label(&done);
        self.ins("bar.sync 0;");
    }

    fn block(&mut self, body: &[LStmt]) {
        for s in body {
            match s {
                LStmt::Map(m) => self.map(m),
                LStmt::Dense {
                    out,
                    a,
                    w,
                    rows,
                    k,
                    n,
                    what,
                } => {
                    let _ = writeln!(self.body, "\t// {what}");
                    self.dense(out, a, w, *rows, *k, *n);
                }
                LStmt::Csr {
                    out,
                    a,
                    ptr,
                    idx,
                    val,
                    rows,
                    n,
                    what,
                } => {
                    let _ = writeln!(self.body, "\t// {what}");
                    self.csr(out, a, (*ptr, *idx, *val), *rows, *n);
                }
                LStmt::Softmax { out, x, log, what } => {
                    let _ = writeln!(self.body, "\t// {what}");
                    self.softmax(out, x, *log);
                }
                LStmt::GridBarrier => self.grid_barrier(),
                LStmt::Start { body } => {
                    let (p, skip) = (self.p(), self.label());
                    self.ins("// start: skipped when resuming a sequence");
                    self.ins(&format!("setp.ne.u32 {p}, %r4, 0;"));
                    self.ins(&format!("@{p} bra {skip};"));
                    self.block(body);
                    self.put_label(&skip);
                }
                LStmt::Loop {
                    count,
                    reverse,
                    body,
                } => {
                    let t = self.r();
                    let saved = self.t.replace(t.clone());
                    match count {
                        Count::Last => {
                            self.ins("// the last step");
                            self.ins(&format!("sub.u32 {t}, %r3, 1;"));
                            self.block(body);
                        }
                        Count::Fixed(_) | Count::Steps => {
                            let n = match count {
                                Count::Fixed(n) => n.to_string(),
                                _ => "%r3".to_string(),
                            };
                            let (i, p, top, end) = (self.r(), self.p(), self.label(), self.label());
                            self.ins(&format!("// time loop: {n} steps"));
                            self.ins(&format!("mov.u32 {i}, 0;"));
                            self.ins(&format!("setp.ge.u32 {p}, {i}, {n};"));
                            self.ins(&format!("@{p} bra {end};"));
                            self.put_label(&top);
                            if *reverse {
                                self.ins(&format!("sub.u32 {t}, {n}, 1;"));
                                self.ins(&format!("sub.u32 {t}, {t}, {i};"));
                            } else {
                                self.ins(&format!("mov.u32 {t}, {i};"));
                            }
                            self.block(body);
                            self.ins(&format!("add.u32 {i}, {i}, 1;"));
                            self.ins(&format!("setp.lt.u32 {p}, {i}, {n};"));
                            self.ins(&format!("@{p} bra {top};"));
                            self.put_label(&end);
                        }
                    }
                    self.t = saved;
                }
            }
        }
    }

    /// The whole module text.
    pub fn module(mut self, sm: u32, block: u32) -> String {
        // Prologue: copy the constants placed in shared memory, then wait for the block.
        let smem = self.param("smem");
        for a in self.lp.arrays.iter().filter(|a| a.shared.is_some()) {
            let off = a.shared.unwrap();
            let n = a.words.len();
            let sym = format!("{}_{}", self.name, a.name);
            let (i, p, top, end) = (self.r(), self.p(), self.label(), self.label());
            let (src, dst, w, o) = (self.rd(), self.r(), self.r(), self.r());
            let _ = writeln!(self.body, "\t// {sym} to shared memory at {off}");
            self.ins(&format!("mov.u32 {i}, %r0;"));
            self.ins(&format!("setp.ge.u32 {p}, {i}, {n};"));
            self.ins(&format!("@{p} bra {end};"));
            self.put_label(&top);
            self.ins(&format!("mov.u64 {src}, {sym};"));
            self.ins(&format!("mul.wide.u32 %rd1, {i}, 4;"));
            self.ins(&format!("add.s64 {src}, {src}, %rd1;"));
            self.ins(&format!("ld.global.nc.u32 {w}, [{src}];"));
            self.ins(&format!("mov.u32 {dst}, {smem};"));
            self.ins(&format!("mad.lo.u32 {o}, {i}, 4, {off};"));
            self.ins(&format!("add.u32 {dst}, {dst}, {o};"));
            self.ins(&format!("st.shared.u32 [{dst}], {w};"));
            self.ins(&format!("add.u32 {i}, {i}, %r6;"));
            self.ins(&format!("setp.lt.u32 {p}, {i}, {n};"));
            self.ins(&format!("@{p} bra {top};"));
            self.put_label(&end);
        }
        if self.lp.shared_bytes > 0 {
            self.ins("bar.sync 0;");
        }
        let lp = self.lp;
        self.block(&lp.body);
        self.ins("ret;");

        let mut m = String::new();
        let _ = writeln!(
            m,
            "// {}: generated by hlstmc (one persistent kernel over the whole sequence)",
            self.name
        );
        let _ = writeln!(m, ".version 7.8\n.target sm_{sm}\n.address_size 64\n");
        for a in &lp.arrays {
            if a.words.is_empty() {
                continue;
            }
            let ty = match a.ty {
                ArrayTy::F32 => "f32",
                ArrayTy::U32 => "u32",
            };
            let _ = write!(
                m,
                ".global .align 4 .{ty} {}_{}[{}] = {{",
                self.name,
                a.name,
                a.words.len()
            );
            for (i, w) in a.words.iter().enumerate() {
                if i % 8 == 0 {
                    m.push_str("\n\t");
                } else {
                    m.push(' ');
                }
                match a.ty {
                    ArrayTy::F32 => {
                        let _ = write!(m, "0f{w:08X}");
                    }
                    ArrayTy::U32 => {
                        let _ = write!(m, "{w}");
                    }
                }
                if i + 1 < a.words.len() {
                    m.push(',');
                }
            }
            m.push_str("\n};\n");
        }
        if lp.shared_bytes > 0 {
            let _ = writeln!(m, ".shared .align 16 .b8 {smem}[{}];", lp.shared_bytes);
        }
        let _ = writeln!(m, "\n.visible .entry {}(", self.name);
        let mut params: Vec<String> = Vec::new();
        for k in 0..lp.inputs.len() {
            params.push(format!("\t.param .u64 {}", self.param(&format!("in{k}"))));
        }
        for k in 0..lp.outputs.len() {
            params.push(format!("\t.param .u64 {}", self.param(&format!("out{k}"))));
        }
        params.push(format!("\t.param .u64 {}", self.param("work")));
        params.push(format!("\t.param .u32 {}", self.param("steps")));
        params.push(format!("\t.param .u32 {}", self.param("resume")));
        let _ = writeln!(m, "{}\n)\n.maxntid {block}, 1, 1\n{{", params.join(",\n"));
        let _ = writeln!(m, "\t.reg .pred %p<{}>;", self.np.max(1));
        let _ = writeln!(m, "\t.reg .b32 %r<{}>;", self.nr);
        let _ = writeln!(m, "\t.reg .f32 %f<{}>;", self.nf.max(1));
        let _ = writeln!(m, "\t.reg .b64 %rd<{}>;\n", self.nrd);
        let steps = self.param("steps");
        let resume = self.param("resume");
        let work = self.param("work");
        let pro = [
            "mov.u32 %r0, %tid.x;".to_string(),
            "mov.u32 %r6, %ntid.x;".to_string(),
            "mov.u32 %r5, %ctaid.x;".to_string(),
            "mad.lo.u32 %r1, %r5, %r6, %r0;".to_string(),
            "mov.u32 %r5, %nctaid.x;".to_string(),
            "mul.lo.u32 %r2, %r5, %r6;".to_string(),
            "sub.u32 %r5, %r5, 1;".to_string(),
            format!("ld.param.u32 %r3, [{steps}];"),
            format!("ld.param.u32 %r4, [{resume}];"),
            format!("ld.param.u64 %rd0, [{work}];"),
            "cvta.to.global.u64 %rd0, %rd0;".to_string(),
        ];
        for l in pro {
            let _ = writeln!(m, "\t{l}");
        }
        m.push_str(&self.body);
        m.push_str("}\n");
        m
    }
}
