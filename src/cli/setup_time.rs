//! The setup-time breakdown of `hlstmc compile --time-passes` and `hlstmc bench` (`phases` in
//! `--json`, the table with `--time-passes`): the named phases of import, optimize and compile
//! (`hlstm_ir::timing`), each a path whose first part is its stage.

use std::borrow::Cow;
use std::time::Duration;

/// Phases as `hlstm_ir::timing::record` returns them.
pub type Phases = Vec<(Cow<'static, str>, Duration)>;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The phases as JSON: `[{"name": "import/parse protobuf", "ms": 1.25}, ...]`, in the order
/// they first ran.
pub fn json(phases: &Phases) -> serde_json::Value {
    phases
        .iter()
        .map(|(n, d)| serde_json::json!({ "name": n, "ms": ms(*d) }))
        .collect()
}

/// A table of the stages' totals (`stages`: name and wall time) and, under each, its phases
/// indented by depth; time not in a named phase of a stage is listed as "(other)".
pub fn table(stages: &[(&str, Duration)], phases: &Phases) -> String {
    let total: Duration = stages.iter().map(|(_, d)| *d).sum();
    let pct = |d: Duration| {
        if total.is_zero() {
            0.0
        } else {
            100.0 * d.as_secs_f64() / total.as_secs_f64()
        }
    };
    let mut s = String::new();
    s.push_str("===-------------------------------------------------------------------------===\n");
    s.push_str("                          Setup time report\n");
    s.push_str(&format!("  Total: {:.3} ms\n", ms(total)));
    s.push_str("   time (ms)       %  phase\n");
    for (stage, d) in stages {
        s.push_str(&format!("{:12.3} {:6.1}%  {stage}\n", ms(*d), pct(*d)));
        let prefix = format!("{stage}/");
        // A phase named like a stage is that stage's total, given in `stages`.
        let mut named = Duration::ZERO;
        for (n, pd) in phases.iter().filter(|(n, _)| n.starts_with(&prefix)) {
            let rest = &n[prefix.len()..];
            let depth = rest.matches('/').count();
            if depth == 0 {
                named += *pd;
            }
            let leaf = rest.rsplit('/').next().unwrap_or(rest);
            let indent = "  ".repeat(depth + 1);
            s.push_str(&format!(
                "{:12.3} {:6.1}%  {indent}{leaf}\n",
                ms(*pd),
                pct(*pd)
            ));
        }
        if named > Duration::ZERO && *d > named {
            let other = *d - named;
            s.push_str(&format!(
                "{:12.3} {:6.1}%    (other)\n",
                ms(other),
                pct(other)
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_nests_phases_under_their_stage() {
        let ms = Duration::from_millis;
        let phases: Phases = vec![
            ("import/parse protobuf".into(), ms(2)),
            ("compile/codegen".into(), ms(5)),
            ("compile/codegen/cranelift".into(), ms(4)),
        ];
        let t = table(&[("import", ms(3)), ("compile", ms(6))], &phases);
        assert!(t.contains("  Total: 9.000 ms"), "{t}");
        assert!(t.contains("    parse protobuf\n"), "{t}");
        assert!(t.contains("      cranelift\n"), "{t}");
        // 1 ms of import and 1 ms of compile are in no named phase.
        assert_eq!(t.matches("(other)").count(), 2, "{t}");
        assert_eq!(json(&phases)[2]["name"], "compile/codegen/cranelift");
    }
}
