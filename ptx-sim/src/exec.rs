//! Running a kernel: threads and blocks under a seeded interleaving scheduler, shared memory per
//! block, `bar.sync`, and a weak global memory.
//!
//! The memory model (docs/ptx.md), on 32-bit words of global memory:
//!
//! - Every word keeps the history of values *published* to it, each with a time stamp from a
//!   global clock.
//! - A weak store (`st.global`) goes to the storing thread's pending list. A weak load reads
//!   the thread's own pending value, else one its block passed to it through `bar.sync`, else
//!   the newest published value no newer than the thread's *seen* time: a thread does not see
//!   another block's store until the writer published it and the reader acquired since.
//! - `bar.sync` moves the pending stores of every thread of the block to the block (visible to
//!   its threads, still unpublished) and gives every thread the largest seen time of the block.
//! - A fence (`fence.acq_rel.gpu`, `fence.sc.gpu`, `membar.gl`) publishes the thread's pending
//!   stores and those its block passed to it (cumulativity), then sets its seen time to now.
//! - `st.release` publishes like a fence, then publishes its own value; `ld.acquire` reads the
//!   newest published value and then sets the seen time to now. Relaxed (`.relaxed.gpu`,
//!   `.volatile`) loads and stores and `atom` read and publish the newest value directly,
//!   without ordering; `atom` with `.acquire`, `.release` or `.acq_rel` adds those effects.
//! - A launch starts with every thread seeing everything, and ends by publishing everything.
//!
//! Shared memory is coherent at once (its ordering comes from `bar.sync` and the scheduler).

use crate::parse::{Cmp, Inst, Kernel, Module, Op, Opd, Sem, Space, Sreg, Ty};
use std::collections::HashMap;
use std::rc::Rc;

/// A kernel argument.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    U32(u32),
    U64(u64),
}

#[derive(Clone, Debug)]
pub struct LaunchConfig {
    pub grid: u32,
    pub block: u32,
    /// Seeds the scheduler.
    pub seed: u64,
    /// A thread runs 1 to this many instructions before the scheduler picks again.
    pub max_burst: u32,
    /// Gives up (an error) after this many instructions in all.
    pub max_instructions: u64,
    /// After a synchronizing operation (an atom, a fence, a strong store, an acquire load), a
    /// thread is stalled for a random number of instructions of the others, up to this many:
    /// a slow thread right where ordering matters. 0: never.
    pub max_stall: u64,
    /// The chance of a stall after a synchronizing operation, in percent.
    pub stall_percent: u64,
}

impl Default for LaunchConfig {
    fn default() -> Self {
        LaunchConfig {
            grid: 1,
            block: 1,
            seed: 1,
            max_burst: 8,
            max_instructions: 2_000_000_000,
            max_stall: 20_000,
            stall_percent: 50,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub instructions: u64,
    pub bar_syncs: u64,
    pub fences: u64,
    /// Weak global loads that read a value older than the newest published one.
    pub stale_reads: u64,
}

/// One word's published values: (stamp, value), oldest first; never empty.
type History = Vec<(u64, u32)>;

/// Global memory: one allocation per buffer; the address of word w of allocation a is
/// `(a + 1) << 32 | 4 w`.
struct Alloc {
    /// Per word: (stamp, value), oldest first; never empty.
    words: Vec<Vec<(u64, u32)>>,
    read_only: bool,
}

pub struct Device {
    module: Module,
    allocs: Vec<Alloc>,
    symbols: HashMap<String, u64>,
    /// Shared variables: offset in a block's shared memory.
    shared_at: HashMap<String, u64>,
    shared_bytes: usize,
    clock: u64,
}

fn split_addr(a: u64) -> (usize, usize) {
    ((a >> 32) as usize, (a & 0xffff_ffff) as usize)
}

impl Device {
    /// A device with the module's global variables allocated and initialized.
    pub fn new(module: Module) -> Result<Device, String> {
        let mut d = Device {
            module: Module::default(),
            allocs: Vec::new(),
            symbols: HashMap::new(),
            shared_at: HashMap::new(),
            shared_bytes: 0,
            clock: 0,
        };
        for g in &module.globals {
            let mut words = g.init.clone();
            words.resize(g.len, 0);
            let a = d.alloc_words(&words, true);
            d.symbols.insert(g.name.clone(), a);
        }
        let mut off = 0usize;
        for v in &module.shared {
            let al = v.align.max(4);
            off = off.div_ceil(al) * al;
            d.shared_at.insert(v.name.clone(), off as u64);
            off += v.len * 4;
        }
        d.shared_bytes = off;
        d.module = module;
        Ok(d)
    }

    fn alloc_words(&mut self, words: &[u32], read_only: bool) -> u64 {
        self.allocs.push(Alloc {
            words: words.iter().map(|w| vec![(0, *w)]).collect(),
            read_only,
        });
        (self.allocs.len() as u64) << 32
    }

    /// A buffer holding `data`; returns its address.
    pub fn alloc_f32(&mut self, data: &[f32]) -> u64 {
        let w: Vec<u32> = data.iter().map(|x| x.to_bits()).collect();
        self.alloc_words(&w, false)
    }

    /// A zeroed buffer of `bytes` (rounded up to words).
    pub fn alloc_zeroed(&mut self, bytes: usize) -> u64 {
        self.alloc_words(&vec![0; bytes.div_ceil(4)], false)
    }

    /// The newest values of `n` words at `addr`.
    pub fn read_words(&self, addr: u64, n: usize) -> Result<Vec<u32>, String> {
        let (a, off) = split_addr(addr);
        let al = a
            .checked_sub(1)
            .and_then(|a| self.allocs.get(a))
            .ok_or_else(|| format!("address {addr:#x} is not allocated"))?;
        let w = off / 4;
        al.words
            .get(w..w + n)
            .map(|s| s.iter().map(|h| h.last().unwrap().1).collect())
            .ok_or_else(|| format!("{n} words at {addr:#x} pass the end of the allocation"))
    }

    pub fn read_f32(&self, addr: u64, n: usize) -> Result<Vec<f32>, String> {
        Ok(self
            .read_words(addr, n)?
            .into_iter()
            .map(f32::from_bits)
            .collect())
    }

    /// Overwrites words at `addr` (between launches).
    pub fn write_f32(&mut self, addr: u64, data: &[f32]) -> Result<(), String> {
        let (a, off) = split_addr(addr);
        let al = a
            .checked_sub(1)
            .and_then(|a| self.allocs.get_mut(a))
            .ok_or_else(|| format!("address {addr:#x} is not allocated"))?;
        let w = off / 4;
        let words = al
            .words
            .get_mut(w..w + data.len())
            .ok_or("a write past the end of the allocation")?;
        for (h, x) in words.iter_mut().zip(data) {
            *h = vec![(0, x.to_bits())];
        }
        Ok(())
    }

    pub fn module(&self) -> &Module {
        &self.module
    }

    /// Runs kernel `name` to completion.
    pub fn launch(
        &mut self,
        name: &str,
        cfg: &LaunchConfig,
        args: &[Arg],
    ) -> Result<Stats, String> {
        let k = self
            .module
            .kernels
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| format!("no kernel {name}"))?
            .clone();
        if args.len() != k.params.len() {
            return Err(format!(
                "{name} takes {} parameters, given {}",
                k.params.len(),
                args.len()
            ));
        }
        if cfg.grid == 0 || cfg.block == 0 {
            return Err("an empty grid".into());
        }
        if let Some(m) = k.max_threads
            && cfg.block > m
        {
            return Err(format!(
                "{} threads per block; the kernel allows {m}",
                cfg.block
            ));
        }
        let code = self.resolve(&k)?;
        let params: Vec<u64> = args
            .iter()
            .map(|a| match a {
                Arg::U32(v) => *v as u64,
                Arg::U64(v) => *v,
            })
            .collect();
        let mut run = Run::new(self, &k, code, params, cfg);
        let r = run.go();
        let clock = run.clock;
        // Publish everything left pending, in any case.
        let pend: Vec<(u64, u32)> = run
            .threads
            .iter()
            .flat_map(|t| t.pending.clone())
            .chain(run.ctas.iter().flat_map(|c| c.pending.clone()))
            .collect();
        let stats = run.stats.clone();
        drop(run);
        self.clock = clock;
        for (a, v) in pend {
            self.clock += 1;
            let c = self.clock;
            if let Ok(h) = self.word_mut(a) {
                h.push((c, v));
            }
        }
        // Between launches every value is visible: keep the newest only.
        for al in &mut self.allocs {
            for h in &mut al.words {
                if h.len() > 1 {
                    let last = *h.last().unwrap();
                    *h = vec![(0, last.1)];
                }
            }
        }
        self.clock = 0;
        r.map(|_| stats)
    }

    fn word_mut(&mut self, addr: u64) -> Result<&mut Vec<(u64, u32)>, String> {
        let (a, off) = split_addr(addr);
        if off % 4 != 0 {
            return Err(format!("a misaligned global access at {addr:#x}"));
        }
        let al = a
            .checked_sub(1)
            .and_then(|a| self.allocs.get_mut(a))
            .ok_or_else(|| format!("global address {addr:#x} is not allocated"))?;
        let n = al.words.len();
        al.words
            .get_mut(off / 4)
            .ok_or_else(|| format!("global address {addr:#x} is past its allocation of {n} words"))
    }

    fn word(&self, addr: u64) -> Result<(&History, bool), String> {
        let (a, off) = split_addr(addr);
        if off % 4 != 0 {
            return Err(format!("a misaligned global access at {addr:#x}"));
        }
        let al = a
            .checked_sub(1)
            .and_then(|a| self.allocs.get(a))
            .ok_or_else(|| format!("global address {addr:#x} is not allocated"))?;
        al.words
            .get(off / 4)
            .map(|w| (w, al.read_only))
            .ok_or_else(|| {
                format!(
                    "global address {addr:#x} is past its allocation of {} words",
                    al.words.len()
                )
            })
    }

    /// Symbols to values, labels to instruction indices, parameters to their numbers.
    fn resolve(&self, k: &Kernel) -> Result<Vec<Inst>, String> {
        let sym = |s: &str, line: usize| -> Result<Opd, String> {
            if let Some(a) = self.symbols.get(s) {
                return Ok(Opd::Imm(*a));
            }
            if let Some(a) = self.shared_at.get(s) {
                return Ok(Opd::Imm(*a));
            }
            if let Some(i) = k.labels.get(s) {
                return Ok(Opd::Imm(*i as u64));
            }
            if let Some(i) = k.params.iter().position(|(n, _)| n == s) {
                return Ok(Opd::Sym(format!("#{i}")));
            }
            Err(format!("line {line}: unknown name {s}"))
        };
        let mut out = Vec::with_capacity(k.insts.len());
        for ins in &k.insts {
            let mut i = ins.clone();
            for a in &mut i.args {
                match a {
                    Opd::Sym(s) => *a = sym(s, ins.line)?,
                    Opd::Addr(b, _) => {
                        if let Opd::Sym(s) = b.as_ref() {
                            **b = sym(s, ins.line)?;
                        }
                    }
                    _ => {}
                }
            }
            out.push(i);
        }
        Ok(out)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Status {
    Ready,
    AtBar,
    Done,
}

struct Thread {
    cta: usize,
    tid: u32,
    pc: usize,
    regs: Vec<u64>,
    status: Status,
    pending: Vec<(u64, u32)>,
    seen: u64,
    /// In the scheduler's ready list.
    listed: bool,
}

struct Cta {
    shared: Vec<u32>,
    arrived: u32,
    live: u32,
    pending: HashMap<u64, u32>,
    first: usize,
}

struct Run<'a> {
    dev: &'a mut Device,
    code: Rc<Vec<Inst>>,
    params: Vec<u64>,
    threads: Vec<Thread>,
    ctas: Vec<Cta>,
    ready: Vec<usize>,
    /// Stalled threads: (instruction count to wake at, thread).
    sleeping: Vec<(u64, usize)>,
    /// Set by a synchronizing instruction: the scheduler may stall the thread.
    synced: bool,
    cfg: LaunchConfig,
    rng: u64,
    clock: u64,
    stats: Stats,
    kernel: String,
}

impl<'a> Run<'a> {
    fn new(
        dev: &'a mut Device,
        k: &Kernel,
        code: Vec<Inst>,
        params: Vec<u64>,
        cfg: &LaunchConfig,
    ) -> Run<'a> {
        let mut threads = Vec::new();
        let mut ctas = Vec::new();
        let clock = dev.clock;
        for c in 0..cfg.grid as usize {
            ctas.push(Cta {
                shared: vec![0; dev.shared_bytes.div_ceil(4)],
                arrived: 0,
                live: cfg.block,
                pending: HashMap::new(),
                first: threads.len(),
            });
            for t in 0..cfg.block {
                threads.push(Thread {
                    cta: c,
                    tid: t,
                    pc: 0,
                    regs: vec![0; k.regs],
                    status: Status::Ready,
                    pending: Vec::new(),
                    seen: clock,
                    listed: true,
                });
            }
        }
        Run {
            ready: (0..threads.len()).collect(),
            sleeping: Vec::new(),
            synced: false,
            dev,
            code: Rc::new(code),
            params,
            threads,
            ctas,
            cfg: cfg.clone(),
            rng: cfg.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            clock,
            stats: Stats::default(),
            kernel: k.name.clone(),
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn go(&mut self) -> Result<(), String> {
        loop {
            let now = self.stats.instructions;
            let mut i = 0;
            while i < self.sleeping.len() {
                if self.sleeping[i].0 <= now || self.ready.is_empty() {
                    let (_, t) = self.sleeping.swap_remove(i);
                    self.ready.push(t);
                } else {
                    i += 1;
                }
            }
            if self.ready.is_empty() {
                break;
            }
            let k = (self.next_rand() % self.ready.len() as u64) as usize;
            let t = self.ready[k];
            let burst = 1 + self.next_rand() % self.cfg.max_burst.max(1) as u64;
            for _ in 0..burst {
                if self.stats.instructions >= self.cfg.max_instructions {
                    return Err(format!(
                        "{}: gave up after {} instructions (a barrier that never opens?)",
                        self.kernel, self.stats.instructions
                    ));
                }
                self.stats.instructions += 1;
                let pc = self.threads[t].pc;
                let line = self.code.get(pc).map_or(0, |i| i.line);
                self.step(t).map_err(|e| {
                    format!(
                        "{}: line {line}, block {}, thread {}: {e}",
                        self.kernel, self.threads[t].cta, self.threads[t].tid
                    )
                })?;
                if self.threads[t].status != Status::Ready || self.synced {
                    break;
                }
            }
            if self.threads[t].status != Status::Ready {
                self.ready.swap_remove(k);
                self.threads[t].listed = false;
            } else if std::mem::take(&mut self.synced)
                && self.cfg.max_stall > 0
                && self.next_rand() % 100 < self.cfg.stall_percent
            {
                let wake = self.stats.instructions + 1 + self.next_rand() % self.cfg.max_stall;
                self.ready.swap_remove(k);
                self.sleeping.push((wake, t));
            }
            self.synced = false;
        }
        if self.threads.iter().any(|t| t.status != Status::Done) {
            return Err(format!(
                "{}: deadlock: threads wait at bar.sync while others of their block have exited",
                self.kernel
            ));
        }
        Ok(())
    }

    fn val(&self, t: usize, o: &Opd) -> Result<u64, String> {
        let th = &self.threads[t];
        Ok(match o {
            Opd::Reg(r) => th.regs[*r as usize],
            Opd::Imm(v) => *v,
            Opd::Special(s) => match s {
                Sreg::TidX => th.tid as u64,
                Sreg::NtidX => self.cfg.block as u64,
                Sreg::CtaidX => th.cta as u64,
                Sreg::NctaidX => self.cfg.grid as u64,
            },
            Opd::Sym(s) => return Err(format!("{s} is not a value")),
            Opd::Addr(..) => return Err("an address where a value is expected".into()),
        })
    }

    fn addr(&self, t: usize, o: &Opd) -> Result<u64, String> {
        match o {
            Opd::Addr(b, off) => Ok(self.val(t, b)?.wrapping_add(*off as u64)),
            _ => Err("expected an address [..]".into()),
        }
    }

    fn set(&mut self, t: usize, o: &Opd, v: u64) -> Result<(), String> {
        match o {
            Opd::Reg(r) => {
                self.threads[t].regs[*r as usize] = v;
                Ok(())
            }
            _ => Err("the destination is not a register".into()),
        }
    }

    fn publish(&mut self, a: u64, v: u32) -> Result<(), String> {
        self.synced = true;
        self.clock += 1;
        let c = self.clock;
        let h = self.dev.word_mut(a)?;
        h.push((c, v));
        if h.len() > 64 {
            // Keep the history bounded: a thread whose seen time is older than what is
            // dropped reads the oldest kept value (more visible, never less).
            h.drain(..h.len() - 32);
        }
        Ok(())
    }

    /// Publishes the thread's pending stores and those its block passed to it.
    fn release(&mut self, t: usize) -> Result<(), String> {
        let pend = std::mem::take(&mut self.threads[t].pending);
        let cta = self.threads[t].cta;
        let block: Vec<(u64, u32)> = self.ctas[cta].pending.drain().collect();
        for (a, v) in block.into_iter().chain(pend) {
            self.publish(a, v)?;
        }
        Ok(())
    }

    fn acquire(&mut self, t: usize) {
        self.threads[t].seen = self.clock;
        self.synced = true;
    }

    fn newest(&self, a: u64) -> Result<u32, String> {
        Ok(self.dev.word(a)?.0.last().unwrap().1)
    }

    fn load_global(&mut self, t: usize, a: u64, sem: Sem) -> Result<u32, String> {
        if let Some((_, v)) = self.threads[t].pending.iter().rev().find(|(x, _)| *x == a) {
            return Ok(*v);
        }
        if sem != Sem::Weak {
            let v = self.newest(a)?;
            if matches!(sem, Sem::Acquire | Sem::AcqRel) {
                self.acquire(t);
            }
            return Ok(v);
        }
        let cta = self.threads[t].cta;
        if let Some(v) = self.ctas[cta].pending.get(&a) {
            return Ok(*v);
        }
        let seen = self.threads[t].seen;
        let (h, _) = self.dev.word(a)?;
        let v = h.iter().rev().find(|(s, _)| *s <= seen).unwrap_or(&h[0]).1;
        if v != h.last().unwrap().1 {
            self.stats.stale_reads += 1;
        }
        Ok(v)
    }

    fn store_global(&mut self, t: usize, a: u64, v: u32, sem: Sem) -> Result<(), String> {
        let (_, ro) = self.dev.word(a)?;
        if ro {
            return Err(format!("a store to read-only data at {a:#x}"));
        }
        match sem {
            Sem::Weak => {
                self.threads[t].pending.push((a, v));
                Ok(())
            }
            Sem::Relaxed | Sem::Acquire => self.publish(a, v),
            Sem::Release | Sem::AcqRel => {
                self.release(t)?;
                self.publish(a, v)
            }
        }
    }

    fn shared_word(&mut self, t: usize, a: u64) -> Result<&mut u32, String> {
        let cta = self.threads[t].cta;
        if !a.is_multiple_of(4) {
            return Err(format!("a misaligned shared access at {a:#x}"));
        }
        let n = self.ctas[cta].shared.len();
        self.ctas[cta]
            .shared
            .get_mut(a as usize / 4)
            .ok_or_else(|| format!("shared address {a:#x} is past the {} bytes declared", n * 4))
    }

    fn bar_sync(&mut self, t: usize) {
        self.stats.bar_syncs += 1;
        let cta = self.threads[t].cta;
        self.threads[t].status = Status::AtBar;
        self.ctas[cta].arrived += 1;
        self.try_open(cta);
    }

    fn try_open(&mut self, cta: usize) {
        let c = &self.ctas[cta];
        if c.arrived < c.live || c.arrived == 0 {
            return;
        }
        let range = c.first..c.first + self.cfg.block as usize;
        let seen = range
            .clone()
            .map(|i| self.threads[i].seen)
            .max()
            .unwrap_or(0);
        for i in range {
            let th = &mut self.threads[i];
            for (a, v) in th.pending.drain(..) {
                self.ctas[cta].pending.insert(a, v);
            }
            if th.status == Status::AtBar {
                th.status = Status::Ready;
                th.seen = seen;
                if !th.listed {
                    th.listed = true;
                    self.ready.push(i);
                }
            }
        }
        self.ctas[cta].arrived = 0;
    }

    fn step(&mut self, t: usize) -> Result<(), String> {
        let pc = self.threads[t].pc;
        let code = Rc::clone(&self.code);
        let ins = code.get(pc).ok_or("ran past the end of the kernel")?;
        self.threads[t].pc = pc + 1;
        if let Some((p, neg)) = ins.guard {
            let v = self.threads[t].regs[p as usize] != 0;
            if v == neg {
                return Ok(());
            }
        }
        let a = &ins.args;
        let need = |n: usize| -> Result<(), String> {
            if a.len() == n {
                Ok(())
            } else {
                Err(format!(
                    "{:?} takes {n} operands, given {}",
                    ins.op,
                    a.len()
                ))
            }
        };
        let f = |v: u64| f32::from_bits(v as u32);
        let fb = |x: f32| x.to_bits() as u64;
        match ins.op {
            Op::Mov(ty) => {
                need(2)?;
                let v = self.val(t, &a[1])?;
                self.set(t, &a[0], trunc(ty, v))?;
            }
            Op::Ld {
                space,
                sem,
                nc: _,
                ty,
            } => {
                need(2)?;
                let v = match space {
                    Space::Param => match &a[1] {
                        Opd::Addr(b, 0) => match b.as_ref() {
                            Opd::Sym(s) if s.starts_with('#') => {
                                let i: usize = s[1..].parse().unwrap();
                                trunc(ty, self.params[i])
                            }
                            _ => return Err("ld.param of something not a parameter".into()),
                        },
                        _ => return Err("ld.param needs [parameter]".into()),
                    },
                    _ if ty.bytes() != 4 => {
                        return Err("only 32-bit global and shared loads are supported".into());
                    }
                    Space::Global => {
                        let ad = self.addr(t, &a[1])?;
                        self.load_global(t, ad, sem)? as u64
                    }
                    Space::Shared => {
                        let ad = self.addr(t, &a[1])?;
                        *self.shared_word(t, ad)? as u64
                    }
                };
                self.set(t, &a[0], v)?;
            }
            Op::St { space, sem, ty } => {
                need(2)?;
                if ty.bytes() != 4 {
                    return Err("only 32-bit stores are supported".into());
                }
                let ad = self.addr(t, &a[0])?;
                let v = self.val(t, &a[1])? as u32;
                match space {
                    Space::Global => self.store_global(t, ad, v, sem)?,
                    Space::Shared => *self.shared_word(t, ad)? = v,
                    Space::Param => return Err("a store to a parameter".into()),
                }
            }
            Op::CvtaToGlobal => {
                need(2)?;
                let v = self.val(t, &a[1])?;
                self.set(t, &a[0], v)?;
            }
            Op::Add(ty)
            | Op::Sub(ty)
            | Op::MulLo(ty)
            | Op::Min(ty)
            | Op::Max(ty)
            | Op::Div(ty)
            | Op::Rem(ty) => {
                need(3)?;
                let (x, y) = (self.val(t, &a[1])?, self.val(t, &a[2])?);
                let r = binary(ins.op, ty, x, y)?;
                self.set(t, &a[0], r)?;
            }
            Op::MulWide(ty) => {
                need(3)?;
                let (x, y) = (self.val(t, &a[1])?, self.val(t, &a[2])?);
                let r = match ty {
                    Ty::S32 => ((x as u32 as i32 as i64) * (y as u32 as i32 as i64)) as u64,
                    Ty::U32 => (x as u32 as u64) * (y as u32 as u64),
                    _ => return Err("mul.wide takes .s32 or .u32".into()),
                };
                self.set(t, &a[0], r)?;
            }
            Op::MadLo(ty) => {
                need(4)?;
                let (x, y, z) = (
                    self.val(t, &a[1])?,
                    self.val(t, &a[2])?,
                    self.val(t, &a[3])?,
                );
                let m = binary(Op::MulLo(ty), ty, x, y)?;
                let r = binary(Op::Add(ty), ty, m, z)?;
                self.set(t, &a[0], r)?;
            }
            Op::Fma => {
                need(4)?;
                let (x, y, z) = (
                    self.val(t, &a[1])?,
                    self.val(t, &a[2])?,
                    self.val(t, &a[3])?,
                );
                self.set(t, &a[0], fb(f(x).mul_add(f(y), f(z))))?;
            }
            Op::Neg(ty) | Op::Abs(ty) => {
                need(2)?;
                let x = self.val(t, &a[1])?;
                let r = match (ins.op, ty) {
                    (Op::Neg(_), Ty::F32) => fb(-f(x)),
                    (Op::Abs(_), Ty::F32) => fb(f(x).abs()),
                    (Op::Neg(_), Ty::S32) => (x as u32 as i32).wrapping_neg() as u32 as u64,
                    (Op::Abs(_), Ty::S32) => (x as u32 as i32).wrapping_abs() as u32 as u64,
                    _ => return Err(format!("{:?} is not supported", ins.op)),
                };
                self.set(t, &a[0], r)?;
            }
            Op::Ex2 | Op::Lg2 => {
                need(2)?;
                let x = f(self.val(t, &a[1])?) as f64;
                let r = if ins.op == Op::Ex2 {
                    x.exp2()
                } else {
                    x.log2()
                };
                self.set(t, &a[0], fb(r as f32))?;
            }
            Op::Setp(cmp, ty) => {
                need(3)?;
                let (x, y) = (self.val(t, &a[1])?, self.val(t, &a[2])?);
                let r = compare(cmp, ty, x, y)?;
                self.set(t, &a[0], r as u64)?;
            }
            Op::Selp(ty) => {
                need(4)?;
                let p = self.val(t, &a[3])? != 0;
                let v = if p {
                    self.val(t, &a[1])?
                } else {
                    self.val(t, &a[2])?
                };
                self.set(t, &a[0], trunc(ty, v))?;
            }
            Op::Bra => {
                need(1)?;
                let target = self.val(t, &a[0])? as usize;
                if target > self.code.len() {
                    return Err("a branch out of the kernel".into());
                }
                self.threads[t].pc = target;
            }
            Op::BarSync => {
                match a.first() {
                    Some(x) if self.val(t, x)? == 0 => {}
                    _ => return Err("only bar.sync 0 is supported".into()),
                }
                self.bar_sync(t);
            }
            Op::Fence => {
                self.synced = true;
                self.stats.fences += 1;
                self.release(t)?;
                self.acquire(t);
            }
            Op::AtomAdd(sem, ty) => {
                need(3)?;
                if ty != Ty::U32 && ty != Ty::S32 {
                    return Err("atom.add supports .u32 and .s32".into());
                }
                let ad = self.addr(t, &a[1])?;
                let y = self.val(t, &a[2])? as u32;
                if matches!(sem, Sem::Release | Sem::AcqRel) {
                    self.release(t)?;
                }
                let old = self.newest(ad)?;
                if self.dev.word(ad)?.1 {
                    return Err("an atomic on read-only data".into());
                }
                self.publish(ad, old.wrapping_add(y))?;
                if matches!(sem, Sem::Acquire | Sem::AcqRel) {
                    self.acquire(t);
                }
                self.set(t, &a[0], old as u64)?;
            }
            Op::Ret => {
                let th = &mut self.threads[t];
                th.status = Status::Done;
                let cta = th.cta;
                self.ctas[cta].live -= 1;
                self.try_open(cta);
            }
        }
        Ok(())
    }
}

fn trunc(ty: Ty, v: u64) -> u64 {
    match ty.bytes() {
        1 => (v != 0) as u64,
        4 => v & 0xffff_ffff,
        _ => v,
    }
}

fn binary(op: Op, ty: Ty, x: u64, y: u64) -> Result<u64, String> {
    let fx = f32::from_bits(x as u32);
    let fy = f32::from_bits(y as u32);
    let fb = |v: f32| v.to_bits() as u64;
    Ok(match ty {
        Ty::F32 => match op {
            Op::Add(_) => fb(fx + fy),
            Op::Sub(_) => fb(fx - fy),
            Op::MulLo(_) => fb(fx * fy),
            Op::Div(_) => fb(fx / fy),
            Op::Min(_) => fb(fx.min(fy)),
            Op::Max(_) => fb(fx.max(fy)),
            _ => return Err(format!("{op:?} on .f32")),
        },
        Ty::U32 | Ty::B32 => {
            let (a, b) = (x as u32, y as u32);
            (match op {
                Op::Add(_) => a.wrapping_add(b),
                Op::Sub(_) => a.wrapping_sub(b),
                Op::MulLo(_) => a.wrapping_mul(b),
                Op::Min(_) => a.min(b),
                Op::Max(_) => a.max(b),
                Op::Div(_) => a.checked_div(b).ok_or("a division by zero")?,
                Op::Rem(_) => a.checked_rem(b).ok_or("a division by zero")?,
                _ => return Err(format!("{op:?}")),
            }) as u64
        }
        Ty::S32 => {
            let (a, b) = (x as u32 as i32, y as u32 as i32);
            (match op {
                Op::Add(_) => a.wrapping_add(b),
                Op::Sub(_) => a.wrapping_sub(b),
                Op::MulLo(_) => a.wrapping_mul(b),
                Op::Min(_) => a.min(b),
                Op::Max(_) => a.max(b),
                Op::Div(_) => a.checked_div(b).ok_or("a division by zero")?,
                Op::Rem(_) => a.checked_rem(b).ok_or("a division by zero")?,
                _ => return Err(format!("{op:?}")),
            }) as u32 as u64
        }
        Ty::U64 | Ty::B64 | Ty::S64 => match op {
            Op::Add(_) => x.wrapping_add(y),
            Op::Sub(_) => x.wrapping_sub(y),
            Op::MulLo(_) => x.wrapping_mul(y),
            _ => return Err(format!("{op:?} on 64 bits")),
        },
        Ty::Pred => return Err("arithmetic on a predicate".into()),
    })
}

fn compare(cmp: Cmp, ty: Ty, x: u64, y: u64) -> Result<bool, String> {
    use std::cmp::Ordering::*;
    let o = match ty {
        Ty::F32 => f32::from_bits(x as u32).partial_cmp(&f32::from_bits(y as u32)),
        Ty::U32 | Ty::B32 => Some((x as u32).cmp(&(y as u32))),
        Ty::S32 => Some((x as u32 as i32).cmp(&(y as u32 as i32))),
        Ty::U64 | Ty::B64 => Some(x.cmp(&y)),
        Ty::S64 => Some((x as i64).cmp(&(y as i64))),
        Ty::Pred => return Err("setp on predicates".into()),
    };
    // Ordered comparisons: false when either float operand is NaN.
    let Some(o) = o else { return Ok(false) };
    Ok(match cmp {
        Cmp::Eq => o == Equal,
        Cmp::Ne => o != Equal,
        Cmp::Lt => o == Less,
        Cmp::Le => o != Greater,
        Cmp::Gt => o == Greater,
        Cmp::Ge => o != Less,
    })
}
