//! A dependency-free SVG line chart of the soak series against the cycle number. Each series is
//! scaled to its own range (figures differ by orders of magnitude) and labelled with it.

use std::fmt::Write;

pub struct Series<'a> {
    pub name: &'a str,
    pub values: Vec<f64>,
}

const W: f64 = 900.0;
const H: f64 = 420.0;
const PAD: f64 = 50.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
];

pub fn svg(title: &str, series: &[Series<'_>]) -> String {
    let n = series
        .iter()
        .map(|s| s.values.len())
        .max()
        .unwrap_or(0)
        .max(2);
    let x = |i: usize| PAD + (W - 2.0 * PAD) * i as f64 / (n - 1) as f64;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{PAD}" y="20" font-size="14">{}</text>"#,
        escape(title)
    );
    let (top, bottom) = (PAD, H - PAD);
    let _ = writeln!(
        out,
        r#"<line x1="{PAD}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="black"/><text x="{}" y="{}">cycle</text><text x="{PAD}" y="{}">0</text><text x="{}" y="{}">{}</text>"#,
        W - PAD,
        W / 2.0,
        H - 15.0,
        bottom + 15.0,
        W - PAD - 20.0,
        bottom + 15.0,
        n - 1
    );
    for (k, s) in series.iter().enumerate() {
        let color = COLORS[k % COLORS.len()];
        let (lo, hi) = s
            .values
            .iter()
            .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        let span = if hi > lo { hi - lo } else { 1.0 };
        let y = |v: f64| bottom - (bottom - top) * 0.9 * (v - lo) / span - (bottom - top) * 0.05;
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
            points.join(" ")
        );
        let (lo, hi) = if s.values.is_empty() {
            (0.0, 0.0)
        } else {
            (lo, hi)
        };
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" fill="{color}">{} ({lo:.0} to {hi:.0})</text>"#,
            PAD + 10.0 + 145.0 * k as f64,
            PAD - 10.0,
            escape(s.name)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_polyline_per_series() {
        let s = svg(
            "t <1>",
            &[
                Series {
                    name: "tasks",
                    values: vec![1.0, 2.0, 2.0],
                },
                Series {
                    name: "fds",
                    values: vec![5.0, 5.0, 5.0],
                },
            ],
        );
        assert_eq!(s.matches("<polyline").count(), 2);
        assert!(s.contains("t &lt;1&gt;") && s.ends_with("</svg>\n"));
    }
}
