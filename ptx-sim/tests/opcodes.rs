//! Each supported opcode on hand-written PTX, against values worked out from the PTX ISA
//! manual (8.x, chapter 9: integer arithmetic wraps modulo 2^n, `div`/`rem` truncate toward
//! zero, `.wide` multiplies extend by signedness, `min`/`max.f32` return the other operand when
//! one is NaN, `setp` comparisons other than the `u`-suffixed ones are false on NaN, `ex2`/`lg2`
//! special values, `selp`, `bra`, `bar.sync`, `atom.add` returning the old value); then the
//! memory model on litmus tests: message passing across blocks with and without fences.

use hlstm_ptx_sim::{Arg, Device, LaunchConfig, parse};

const HEAD: &str = ".version 7.8\n.target sm_80\n.address_size 64\n";

fn kernel(decls: &str, body: &str) -> String {
    format!(
        "{HEAD}{decls}
.visible .entry k(
\t.param .u64 k_out,
\t.param .u32 k_n
)
.maxntid 1024, 1, 1
{{
\t.reg .pred %p<8>;
\t.reg .b32 %r<32>;
\t.reg .f32 %f<32>;
\t.reg .b64 %rd<16>;
\tld.param.u64 %rd0, [k_out];
\tcvta.to.global.u64 %rd0, %rd0;
\tld.param.u32 %r31, [k_n];
{body}
\tret;
}}
"
    )
}

/// Runs `body` on `grid` x `block` threads with `out` (n words, zero) and k_n = 7; returns out.
fn run_on(
    decls: &str,
    body: &str,
    n: usize,
    grid: u32,
    block: u32,
    seed: u64,
) -> Result<Vec<u32>, String> {
    let m = parse(&kernel(decls, body))?;
    let mut dev = Device::new(m)?;
    let out = dev.alloc_zeroed(4 * n);
    let cfg = LaunchConfig {
        grid,
        block,
        seed,
        max_instructions: 10_000_000,
        ..Default::default()
    };
    dev.launch("k", &cfg, &[Arg::U64(out), Arg::U32(7)])?;
    dev.read_words(out, n)
}

fn run(body: &str, n: usize) -> Vec<u32> {
    run_on("", body, n, 1, 1, 1).unwrap_or_else(|e| panic!("{e}\n{body}"))
}

/// Stores register `r` to word `i` of out.
fn st(i: usize, r: &str) -> String {
    format!("\tst.global.u32 [%rd0+{}], {r};\n", 4 * i)
}

fn stf(i: usize, r: &str) -> String {
    format!("\tst.global.f32 [%rd0+{}], {r};\n", 4 * i)
}

fn f(x: f32) -> u32 {
    x.to_bits()
}

#[test]
fn integer_add_sub_wrap() {
    let body = format!(
        "\tadd.u32 %r0, 0xFFFFFFFF, 2;\n{}\tsub.u32 %r1, 0, 1;\n{}\tadd.s32 %r2, 2147483647, 1;\n{}\tsub.s32 %r3, -5, 7;\n{}\tadd.s64 %rd1, %rd0, 16;\n\tst.global.u32 [%rd1], 9;\n\tadd.u32 %r4, %r31, 0;\n{}",
        st(0, "%r0"),
        st(1, "%r1"),
        st(2, "%r2"),
        st(3, "%r3"),
        st(5, "%r4"),
    );
    let o = run(&body, 6);
    assert_eq!(
        o,
        [1, 0xFFFF_FFFF, 0x8000_0000, (-12i32) as u32, 9, 7],
        "ld.param.u32 gives k_n = 7"
    );
}

#[test]
fn integer_multiply_divide() {
    let body = [
        "\tmul.lo.u32 %r0, 0x10000, 0x10001;\n".to_string(),
        st(0, "%r0"),
        "\tmul.lo.s32 %r1, -3, 5;\n".into(),
        st(1, "%r1"),
        "\tmad.lo.s32 %r2, 3, -4, 5;\n".into(),
        st(2, "%r2"),
        "\tmad.lo.u32 %r3, 0x80000000, 2, 3;\n".into(),
        st(3, "%r3"),
        "\tdiv.u32 %r4, 7, 2;\n".into(),
        st(4, "%r4"),
        "\trem.u32 %r5, 7, 2;\n".into(),
        st(5, "%r5"),
        "\tdiv.s32 %r6, -7, 2;\n".into(),
        st(6, "%r6"),
        "\trem.s32 %r7, -7, 2;\n".into(),
        st(7, "%r7"),
        "\tmin.u32 %r8, 0xFFFFFFFF, 1;\n".into(),
        st(8, "%r8"),
        "\tmin.s32 %r9, -1, 1;\n".into(),
        st(9, "%r9"),
        "\tmax.s32 %r10, -1, 1;\n".into(),
        st(10, "%r10"),
        "\tneg.s32 %r11, 5;\n".into(),
        st(11, "%r11"),
        "\tabs.s32 %r12, -5;\n".into(),
        st(12, "%r12"),
        "\tmax.u32 %r13, 0xFFFFFFFF, 1;\n".into(),
        st(13, "%r13"),
    ]
    .concat();
    let o = run(&body, 14);
    let s = |x: i32| x as u32;
    assert_eq!(
        o,
        [
            0x10000,
            s(-15),
            s(-7),
            3,
            3,
            1,
            s(-3),
            s(-1),
            1,
            s(-1),
            1,
            s(-5),
            5,
            0xFFFF_FFFF
        ]
    );
}

#[test]
fn wide_multiplies_extend_by_signedness() {
    // mul.wide.s32 -1, 4 = -4 (64 bits): out + 8 - 4 = out + 4.
    let body = "\tmul.wide.s32 %rd2, -1, 4;\n\tadd.s64 %rd3, %rd0, 8;\n\tadd.s64 %rd3, %rd3, %rd2;\n\tst.global.u32 [%rd3], 11;\n\tmul.wide.u32 %rd4, 3, 4;\n\tadd.s64 %rd5, %rd0, %rd4;\n\tst.global.u32 [%rd5], 12;\n";
    assert_eq!(run(body, 4), [0, 11, 0, 12]);
    // mul.wide.u32 0xFFFFFFFF, 4 = 0x3_FFFF_FFFC: far outside the buffer.
    let body = "\tmul.wide.u32 %rd2, 0xFFFFFFFF, 4;\n\tadd.s64 %rd3, %rd0, %rd2;\n\tst.global.u32 [%rd3], 1;\n";
    let e = run_on("", body, 4, 1, 1, 1).unwrap_err();
    assert!(e.contains("not allocated") || e.contains("past"), "{e}");
}

#[test]
fn float_arithmetic_rounds_to_nearest() {
    let a = 0x3F80_0800u32; // 1 + 2^-12
    let c = 0xBF80_1000u32; // -(1 + 2^-11)
    let body = [
        "\tadd.rn.f32 %f0, 0f3FC00000, 0f40100000;\n".to_string(), // 1.5 + 2.25
        stf(0, "%f0"),
        "\tsub.rn.f32 %f1, 0f3FC00000, 0f40100000;\n".into(),
        stf(1, "%f1"),
        "\tmul.rn.f32 %f2, 0f3FC00000, 0f40100000;\n".into(),
        stf(2, "%f2"),
        "\tdiv.rn.f32 %f3, 0f3F800000, 0f40400000;\n".into(), // 1/3
        stf(3, "%f3"),
        // (1 + 2^-12)^2 - (1 + 2^-11) = 2^-24 fused; 0 after a rounded multiply.
        format!("\tfma.rn.f32 %f4, 0f{a:08X}, 0f{a:08X}, 0f{c:08X};\n"),
        stf(4, "%f4"),
        format!("\tmul.rn.f32 %f5, 0f{a:08X}, 0f{a:08X};\n\tadd.rn.f32 %f5, %f5, 0f{c:08X};\n"),
        stf(5, "%f5"),
        "\tneg.f32 %f6, 0f00000000;\n".into(),
        stf(6, "%f6"),
        "\tabs.f32 %f7, 0fC0000000;\n".into(),
        stf(7, "%f7"),
        "\tmax.f32 %f8, 0f7FC00000, 0f3F800000;\n".into(), // NaN, 1 -> 1
        stf(8, "%f8"),
        "\tmin.f32 %f9, 0f3F800000, 0f7FC00000;\n".into(),
        stf(9, "%f9"),
        "\tmin.f32 %f10, 0fBF800000, 0f3F800000;\n".into(),
        stf(10, "%f10"),
        "\tmov.f32 %f11, 0f40490FDB;\n".into(),
        stf(11, "%f11"),
    ]
    .concat();
    let o = run(&body, 12);
    assert_eq!(
        o,
        [
            f(3.75),
            f(-0.75),
            f(3.375),
            0x3EAA_AAAB,
            0x3380_0000,
            0,
            0x8000_0000,
            f(2.0),
            f(1.0),
            f(1.0),
            f(-1.0),
            f(std::f32::consts::PI)
        ]
    );
}

#[test]
fn ex2_and_lg2_and_their_special_values() {
    let body = [
        "\tex2.approx.f32 %f0, 0f40400000;\n".to_string(), // 2^3
        stf(0, "%f0"),
        "\tex2.approx.f32 %f1, 0f3F000000;\n".into(), // 2^0.5
        stf(1, "%f1"),
        "\tex2.approx.f32 %f2, 0fFF800000;\n".into(), // 2^-inf = +0
        stf(2, "%f2"),
        "\tex2.approx.f32 %f3, 0f7F800000;\n".into(), // +inf
        stf(3, "%f3"),
        "\tlg2.approx.f32 %f4, 0f41000000;\n".into(), // log2 8
        stf(4, "%f4"),
        "\tlg2.approx.f32 %f5, 0f00000000;\n".into(), // -inf
        stf(5, "%f5"),
        "\tlg2.approx.f32 %f6, 0fBF800000;\n".into(), // NaN
        stf(6, "%f6"),
        "\tlg2.approx.f32 %f7, 0f7F800000;\n".into(), // +inf
        stf(7, "%f7"),
    ]
    .concat();
    let o = run(&body, 8);
    assert_eq!(o[0], f(8.0));
    let r2 = f32::from_bits(o[1]);
    // The manual's bound for ex2.approx: 2 ulp over the full range.
    assert!((r2 - std::f32::consts::SQRT_2).abs() <= 2.0 * f32::EPSILON * 1.5);
    assert_eq!(o[2], 0);
    assert_eq!(o[3], f(f32::INFINITY));
    assert_eq!(o[4], f(3.0));
    assert_eq!(o[5], f(f32::NEG_INFINITY));
    assert!(f32::from_bits(o[6]).is_nan());
    assert_eq!(o[7], f(f32::INFINITY));
}

#[test]
fn setp_selp_and_guarded_branches() {
    // Each comparison selects 1 or 0 into a word.
    let cases = [
        ("setp.lt.s32 %p0, -1, 0;", 1),
        ("setp.lt.u32 %p0, 0xFFFFFFFF, 0;", 0),
        ("setp.ge.u32 %p0, 3, 3;", 1),
        ("setp.gt.s32 %p0, 3, 3;", 0),
        ("setp.le.s32 %p0, 3, 3;", 1),
        ("setp.eq.u32 %p0, 4, 4;", 1),
        ("setp.ne.u32 %p0, 4, 4;", 0),
        ("setp.lt.f32 %p0, 0fBF800000, 0f00000000;", 1),
        ("setp.lt.f32 %p0, 0f7FC00000, 0f00000000;", 0), // NaN: false
        ("setp.ne.f32 %p0, 0f7FC00000, 0f00000000;", 0), // ordered ne: false on NaN
        ("setp.ge.f32 %p0, 0f7FC00000, 0f7FC00000;", 0),
        ("setp.eq.f32 %p0, 0f80000000, 0f00000000;", 1), // -0 == +0
        ("setp.gt.f32 %p0, 0f3F800000, 0fBF800000;", 1),
        ("setp.le.f32 %p0, 0f3F800000, 0f3F800000;", 1),
    ];
    let mut body = String::new();
    for (i, (c, _)) in cases.iter().enumerate() {
        body += &format!("\t{c}\n\tselp.u32 %r0, 1, 0, %p0;\n");
        body += &st(i, "%r0");
    }
    let o = run(&body, cases.len());
    for (i, (c, want)) in cases.iter().enumerate() {
        assert_eq!(o[i], *want, "{c}");
    }
    // selp.f32, and a loop with @p / @!p branches: sum 0..7 = 21 (k_n = 7).
    let body = format!(
        "\tsetp.gt.u32 %p1, 2, 1;\n\tselp.f32 %f0, 0f3F800000, 0f40000000, %p1;\n{}\tmov.u32 %r0, 0;\n\tmov.u32 %r1, 0;\nTOP:\n\tadd.u32 %r1, %r1, %r0;\n\tadd.u32 %r0, %r0, 1;\n\tsetp.lt.u32 %p2, %r0, %r31;\n\t@%p2 bra TOP;\n{}\tsetp.eq.u32 %p3, %r1, 21;\n\t@!%p3 bra SKIP;\n\tst.global.u32 [%rd0+8], 5;\nSKIP:\n\tbra.uni END;\n\tst.global.u32 [%rd0+12], 6;\nEND:\n",
        stf(0, "%f0"),
        st(1, "%r1")
    );
    assert_eq!(run(&body, 4), [f(1.0), 21, 5, 0]);
}

#[test]
fn special_registers_per_thread() {
    let body = "\tmov.u32 %r0, %tid.x;\n\tmov.u32 %r1, %ntid.x;\n\tmov.u32 %r2, %ctaid.x;\n\tmov.u32 %r3, %nctaid.x;\n\tmad.lo.u32 %r4, %r2, %r1, %r0;\n\tmul.lo.u32 %r5, %r4, 16;\n\tmul.wide.u32 %rd1, %r5, 1;\n\tadd.s64 %rd1, %rd0, %rd1;\n\tst.global.u32 [%rd1], %r0;\n\tst.global.u32 [%rd1+4], %r1;\n\tst.global.u32 [%rd1+8], %r2;\n\tst.global.u32 [%rd1+12], %r3;\n";
    let o = run_on("", body, 24, 2, 3, 1).unwrap();
    for g in 0..6u32 {
        let w = &o[4 * g as usize..4 * g as usize + 4];
        assert_eq!(w, [g % 3, 3, g / 3, 2], "thread {g}");
    }
}

#[test]
fn module_arrays_read_only_data_and_shared_memory_with_bar_sync() {
    let decls = ".global .align 4 .u32 k_tab[4] = {10, 20, 0x1E,\n\t40};\n.global .align 4 .f32 k_w[2] = {0f3F800000, 0fC0000000};\n.shared .align 16 .b8 k_smem[64];\n";
    // Thread t: smem[t] = tab[t]; bar.sync; out[t] = smem[(t + 1) % 4] + w[1] as bits check.
    let body = "\tmov.u32 %r0, %tid.x;\n\tmov.u64 %rd1, k_tab;\n\tmul.wide.u32 %rd2, %r0, 4;\n\tadd.s64 %rd1, %rd1, %rd2;\n\tld.global.nc.u32 %r1, [%rd1];\n\tmov.u32 %r2, k_smem;\n\tmad.lo.u32 %r3, %r0, 4, %r2;\n\tst.shared.u32 [%r3], %r1;\n\tbar.sync 0;\n\tadd.u32 %r4, %r0, 1;\n\trem.u32 %r4, %r4, 4;\n\tmad.lo.u32 %r5, %r4, 4, %r2;\n\tld.shared.u32 %r6, [%r5];\n\tmul.wide.u32 %rd3, %r0, 4;\n\tadd.s64 %rd3, %rd0, %rd3;\n\tst.global.u32 [%rd3], %r6;\n\tmov.u64 %rd4, k_w;\n\tld.global.nc.f32 %f0, [%rd4+4];\n\tst.global.f32 [%rd0+16], %f0;\n";
    for seed in 1..=5 {
        let o = run_on(decls, body, 5, 1, 4, seed).unwrap();
        assert_eq!(o, [20, 30, 40, 10, f(-2.0)], "seed {seed}");
    }
    // Without the bar.sync some thread reads a slot not yet written (0) under some schedule.
    let racy = body.replace("\tbar.sync 0;\n", "");
    let mut saw_zero = false;
    for seed in 1..=40 {
        let o = run_on(decls, &racy, 5, 1, 4, seed).unwrap();
        saw_zero |= o[..4].contains(&0);
    }
    assert!(saw_zero, "the scheduler never interleaved the racy kernel");
    // Stores to module data are refused (it is read-only); accesses past an array fail.
    let e = run_on(
        decls,
        "\tmov.u64 %rd1, k_tab;\n\tst.global.u32 [%rd1], 1;\n",
        1,
        1,
        1,
        1,
    )
    .unwrap_err();
    assert!(e.contains("read-only"), "{e}");
    let e = run_on(
        decls,
        "\tmov.u64 %rd1, k_tab;\n\tld.global.u32 %r1, [%rd1+16];\n",
        1,
        1,
        1,
        1,
    )
    .unwrap_err();
    assert!(e.contains("past"), "{e}");
    let e = run_on(decls, "\tld.shared.u32 %r1, [64];\n", 1, 1, 1, 1).unwrap_err();
    assert!(e.contains("shared"), "{e}");
}

#[test]
fn atom_add_returns_the_old_value_and_counts_every_thread() {
    // 4 blocks of 16: each adds 1 to out[0] and stores the old value at out[1 + gtid].
    let body = "\tmov.u32 %r0, %tid.x;\n\tmov.u32 %r1, %ctaid.x;\n\tmad.lo.u32 %r2, %r1, 16, %r0;\n\tatom.relaxed.gpu.global.add.u32 %r3, [%rd0], 1;\n\tadd.u32 %r4, %r2, 1;\n\tmul.wide.u32 %rd1, %r4, 4;\n\tadd.s64 %rd1, %rd0, %rd1;\n\tst.global.u32 [%rd1], %r3;\n";
    let o = run_on("", body, 65, 4, 16, 3).unwrap();
    assert_eq!(o[0], 64);
    let mut old = o[1..].to_vec();
    old.sort();
    assert_eq!(old, (0..64).collect::<Vec<u32>>());
}

/// Message passing: block 0 writes 64 data words (weak stores) then sets a flag; block 1 waits
/// for the flag and copies the data to out[64..128]. `publish` and `subscribe` are what the
/// writer does between data and flag and what the reader does after seeing the flag.
fn message_passing(publish: &str, flag_store: &str, flag_load: &str, subscribe: &str) -> String {
    format!(
        "\tmov.u32 %r0, %tid.x;\n\tmov.u32 %r1, %ctaid.x;\n\tsetp.ne.u32 %p0, %r1, 0;\n\t@%p0 bra READER;\n\
         \tmul.wide.u32 %rd1, %r0, 4;\n\tadd.s64 %rd1, %rd0, %rd1;\n\tadd.u32 %r2, %r0, 100;\n\tst.global.u32 [%rd1+4], %r2;\n\
         \tbar.sync 0;\n\tsetp.ne.u32 %p1, %r0, 0;\n\t@%p1 bra DONE;\n{publish}\t{flag_store} [%rd0], 1;\n\tbra.uni DONE;\n\
         READER:\n\tsetp.ne.u32 %p1, %r0, 0;\n\t@%p1 bra WAITED;\n\
         SPIN:\n\t{flag_load} %r3, [%rd0];\n\tsetp.eq.u32 %p2, %r3, 0;\n\t@%p2 bra SPIN;\n{subscribe}\
         WAITED:\n\tbar.sync 0;\n\tmul.wide.u32 %rd2, %r0, 4;\n\tadd.s64 %rd2, %rd0, %rd2;\n\tld.global.u32 %r4, [%rd2+4];\n\tst.global.u32 [%rd2+260], %r4;\n\
         DONE:\n"
    )
}

fn mp_stale(body: &str, seeds: std::ops::RangeInclusive<u64>) -> usize {
    seeds
        .filter(|s| {
            let o = run_on("", body, 1 + 64 + 64, 2, 64, *s).unwrap();
            (0..64).any(|i| o[65 + i] != 100 + i as u32)
        })
        .count()
}

#[test]
fn message_passing_needs_release_and_acquire() {
    // Fence + release store, acquire load: always the data.
    let ok = message_passing(
        "\tfence.acq_rel.gpu;\n",
        "st.release.gpu.global.u32",
        "ld.acquire.gpu.global.u32",
        "",
    );
    assert_eq!(mp_stale(&ok, 1..=10), 0);
    // The same with membar.gl / relaxed accesses and a fence after the wait.
    let ok2 = message_passing(
        "\tmembar.gl;\n",
        "st.relaxed.gpu.global.u32",
        "ld.volatile.global.u32",
        "\tfence.sc.gpu;\n",
    );
    assert_eq!(mp_stale(&ok2, 1..=10), 0);
    // A relaxed flag store without a fence: the reader sees the flag and old data.
    let no_release = message_passing(
        "",
        "st.relaxed.gpu.global.u32",
        "ld.acquire.gpu.global.u32",
        "",
    );
    assert_eq!(mp_stale(&no_release, 1..=5), 5);
    // A release store but a relaxed load and no fence after it: old data too.
    let no_acquire = message_passing(
        "",
        "st.release.gpu.global.u32",
        "ld.relaxed.gpu.global.u32",
        "",
    );
    assert_eq!(mp_stale(&no_acquire, 1..=5), 5);
    // An atomic flag with release semantics and an acquire load works.
    let atom = message_passing(
        "",
        "atom.release.gpu.global.add.u32 %r9,",
        "ld.acquire.gpu.global.u32",
        "",
    );
    assert_eq!(mp_stale(&atom, 1..=10), 0);
}

#[test]
fn errors_name_the_line() {
    let e = parse(&kernel("", "\tfoo.u32 %r0, 1;\n")).unwrap_err();
    assert!(e.contains("line") && e.contains("foo.u32"), "{e}");
    let e = parse(&kernel("", "\tadd.u32 %q0, 1, 1;\n")).unwrap_err();
    assert!(e.contains("%q0"), "{e}");
    let e = run_on("", "\tdiv.u32 %r0, 1, 0;\n", 1, 1, 1, 1).unwrap_err();
    assert!(e.contains("division by zero") && e.contains("line"), "{e}");
    let e = run_on("", "\tst.global.u32 [%rd0+2], 1;\n", 1, 1, 1, 1).unwrap_err();
    assert!(e.contains("misaligned"), "{e}");
    // Threads that exited count as arrived at bar.sync (as on Volta and later).
    let body = "\tmov.u32 %r0, %tid.x;\n\tsetp.eq.u32 %p0, %r0, 0;\n\t@%p0 bra OUT;\n\tbar.sync 0;\n\tbar.sync 0;\n\tst.global.u32 [%rd0], 3;\nOUT:\n";
    assert_eq!(run_on("", body, 1, 1, 2, 1).unwrap(), [3]);
    // A spin that never ends gives up.
    let body = "SPIN:\n\tld.acquire.gpu.global.u32 %r0, [%rd0];\n\tsetp.eq.u32 %p0, %r0, 0;\n\t@%p0 bra SPIN;\n";
    let e = run_on("", body, 1, 1, 1, 1).unwrap_err();
    assert!(e.contains("gave up"), "{e}");
}
