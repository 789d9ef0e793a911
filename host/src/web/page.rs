//! The status page: the `status` table (red rows for failed or stale runs)
//! and, per database, charts of duration and size over time. One
//! self-contained HTML document with inline SVG: no scripts, no external
//! assets, so it renders anywhere (and in a headless browser in the tests).

use crate::jobs::history::{self, Record, Row};
use crate::progress::running::RunningStep;
use crate::step::human_size;
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Colours of the operations' lines in the charts.
const SERIES_COLOURS: [(&str, &str); 4] = [
    ("backup", "#1f77b4"),
    ("restore", "#2ca02c"),
    ("transform", "#ff7f0e"),
    ("copy", "#9467bd"),
];

/// Runs shown per chart line: the most recent ones.
const MAX_POINTS: usize = 60;

pub fn render(
    title: &str,
    records: &[Record],
    running: &[RunningStep],
    now: DateTime<Utc>,
) -> String {
    let rows = history::latest(records, now);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>envsync · {title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
h1 {{ font-size: 1.4rem; margin-bottom: .2rem; }}
.updated {{ color: #666; margin-top: 0; }}
table {{ border-collapse: collapse; margin: 1rem 0 2rem; }}
th, td {{ padding: .35rem .8rem; border-bottom: 1px solid #ddd; text-align: left; white-space: nowrap; }}
th {{ background: #f4f4f4; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
tr.alarm td {{ color: #b00020; font-weight: 600; }}
section {{ margin-bottom: 2rem; }}
h2 {{ font-size: 1.1rem; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 1.5rem; }}
figure {{ margin: 0; }}
figcaption {{ font-size: .9rem; color: #444; }}
.legend span {{ margin-right: 1rem; font-size: .85rem; }}
</style></head>
<body>
<h1>envsync · {title}</h1>
<p class="updated">Updated {updated} UTC · red: failed, or older than 8 days</p>
"#,
        title = esc(title),
        updated = now.format("%Y-%m-%d %H:%M:%S"),
    );
    if !running.is_empty() {
        running_table(&mut out, running, now);
    }
    if rows.is_empty() {
        out.push_str("<p id=\"empty\">No runs recorded yet.</p>\n");
    } else {
        table(&mut out, &rows);
        charts(&mut out, records);
    }
    out.push_str("</body></html>\n");
    out
}

/// The steps running now and their progress (the same line `status` and
/// the log show).
fn running_table(out: &mut String, running: &[RunningStep], now: DateTime<Utc>) {
    out.push_str(
        "<h2>Running now</h2>\n<table id=\"running\"><thead><tr><th>Instance</th><th>Database</th>\
         <th>Operation</th><th>Running for</th><th>Progress</th></tr></thead><tbody>\n",
    );
    for r in running {
        let since = (now - r.started).to_std().unwrap_or_default().as_secs_f64();
        let progress = r
            .progress
            .as_ref()
            .map(crate::progress::line)
            .unwrap_or_else(|| "no bytes yet".into());
        let _ = writeln!(
            out,
            "<tr class=\"running\" data-database=\"{d}\" data-operation=\"{o}\"><td>{i}</td><td>{d}</td>\
             <td>{o}</td><td class=\"num\">{since}</td><td>{p}</td></tr>",
            i = esc(&r.instance),
            d = esc(&r.database),
            o = esc(&r.operation),
            since = history::short_age(since),
            p = esc(&progress),
        );
    }
    out.push_str("</tbody></table>\n");
}

fn table(out: &mut String, rows: &[Row]) {
    out.push_str(
        "<table id=\"status\"><thead><tr><th>Instance</th><th>Database</th><th>Operation</th>\
         <th>State</th><th>When (UTC)</th><th>Duration</th><th>Size</th><th>Age</th></tr></thead><tbody>\n",
    );
    for row in rows {
        let l = &row.last;
        let _ = writeln!(
            out,
            "<tr class=\"{class}\" data-instance=\"{i}\" data-database=\"{d}\" data-operation=\"{o}\" data-state=\"{s}\">\
             <td>{i}</td><td>{d}</td><td>{o}</td><td>{s}</td><td>{when}</td>\
             <td class=\"num\">{dur:.1}s</td><td class=\"num\">{size}</td><td class=\"num\">{age}</td></tr>",
            class = if row.alarm { "row alarm" } else { "row" },
            i = esc(&l.instance),
            d = esc(&l.database),
            o = esc(&l.operation),
            s = esc(&l.state),
            when = l.time.format("%Y-%m-%d %H:%M"),
            dur = l.duration_seconds,
            size = l.size.map(human_size).unwrap_or_else(|| "-".into()),
            age = history::short_age(row.age_seconds),
        );
    }
    out.push_str("</tbody></table>\n");
}

/// One section per database: duration and size over time, one line per
/// operation.
fn charts(out: &mut String, records: &[Record]) {
    type Series<'r> = BTreeMap<&'r str, Vec<&'r Record>>;
    let mut databases: BTreeMap<(&str, &str), Series<'_>> = BTreeMap::new();
    for r in records {
        databases
            .entry((&r.instance, &r.database))
            .or_default()
            .entry(&r.operation)
            .or_default()
            .push(r);
    }
    for ((instance, database), mut series) in databases {
        for points in series.values_mut() {
            points.sort_by_key(|r| r.time);
            let skip = points.len().saturating_sub(MAX_POINTS);
            points.drain(..skip);
        }
        let _ = writeln!(
            out,
            "<section class=\"database\" data-database=\"{d}\"><h2>{d} <small>on {i}</small></h2>",
            d = esc(database),
            i = esc(instance)
        );
        out.push_str("<div class=\"legend\">");
        for op in series.keys() {
            let _ = write!(
                out,
                "<span style=\"color:{}\">■ {}</span>",
                colour(op),
                esc(op)
            );
        }
        out.push_str("</div><div class=\"charts\">\n");
        let duration: Vec<(&str, Vec<(i64, f64)>)> = series
            .iter()
            .map(|(op, pts)| {
                let p = pts.iter().map(|r| (r.time.timestamp(), r.duration_seconds));
                (*op, p.collect())
            })
            .collect();
        chart(out, "Duration", &duration, |v| format!("{v:.1}s"));
        let size: Vec<(&str, Vec<(i64, f64)>)> = series
            .iter()
            .map(|(op, pts)| {
                let p = pts
                    .iter()
                    .filter_map(|r| r.size.map(|s| (r.time.timestamp(), s as f64)));
                (*op, p.collect())
            })
            .filter(|(_, p): &(&str, Vec<_>)| !p.is_empty())
            .collect();
        if !size.is_empty() {
            chart(out, "Size", &size, |v| human_size(v as u64));
        }
        out.push_str("</div></section>\n");
    }
}

/// A line chart as inline SVG: time on x, `label(value)` at the y extremes.
fn chart(
    out: &mut String,
    caption: &str,
    series: &[(&str, Vec<(i64, f64)>)],
    label: impl Fn(f64) -> String,
) {
    const W: f64 = 420.0;
    const H: f64 = 160.0;
    const LEFT: f64 = 70.0;
    const BOTTOM: f64 = 22.0;
    let all = series.iter().flat_map(|(_, p)| p.iter());
    let (mut t0, mut t1, mut v1) = (i64::MAX, i64::MIN, 0.0f64);
    for &(t, v) in all {
        t0 = t0.min(t);
        t1 = t1.max(t);
        v1 = v1.max(v);
    }
    if t0 > t1 {
        return;
    }
    let span = (t1 - t0).max(1) as f64;
    let v1 = if v1 > 0.0 { v1 } else { 1.0 };
    let x = |t: i64| LEFT + (t - t0) as f64 / span * (W - LEFT - 10.0);
    let y = |v: f64| (H - BOTTOM) - v / v1 * (H - BOTTOM - 10.0);
    let _ = write!(
        out,
        "<figure class=\"chart\" data-chart=\"{c}\"><figcaption>{c}</figcaption>\
         <svg width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{c} over time\">\
         <line x1=\"{LEFT}\" y1=\"10\" x2=\"{LEFT}\" y2=\"{yb}\" stroke=\"#999\"/>\
         <line x1=\"{LEFT}\" y1=\"{yb}\" x2=\"{xr}\" y2=\"{yb}\" stroke=\"#999\"/>\
         <text x=\"{lx}\" y=\"14\" font-size=\"10\" text-anchor=\"end\">{top}</text>\
         <text x=\"{lx}\" y=\"{yb}\" font-size=\"10\" text-anchor=\"end\">0</text>\
         <text x=\"{LEFT}\" y=\"{H}\" font-size=\"10\">{from}</text>\
         <text x=\"{xr}\" y=\"{H}\" font-size=\"10\" text-anchor=\"end\">{to}</text>",
        c = esc(caption),
        yb = H - BOTTOM,
        xr = W - 10.0,
        lx = LEFT - 4.0,
        top = esc(&label(v1)),
        from = fmt_time(t0),
        to = fmt_time(t1),
    );
    for (op, points) in series {
        let path: Vec<String> = points
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{col}\" stroke-width=\"2\" points=\"{pts}\"/>",
            col = colour(op),
            pts = path.join(" ")
        );
        for &(t, v) in points {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{}\"><title>{} {}</title></circle>",
                x(t),
                y(v),
                colour(op),
                esc(op),
                esc(&label(v))
            );
        }
    }
    out.push_str("</svg></figure>\n");
}

fn colour(op: &str) -> &'static str {
    SERIES_COLOURS
        .iter()
        .find(|(o, _)| *o == op)
        .map(|(_, c)| *c)
        .unwrap_or("#555")
}

fn fmt_time(t: i64) -> String {
    DateTime::from_timestamp(t, 0)
        .map(|d| d.format("%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// HTML-escapes text for element content and attribute values.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rec(day: u32, db: &str, op: &str, state: &str, size: Option<u64>) -> Record {
        Record {
            time: Utc.with_ymd_and_hms(2026, 11, day, 4, 0, 0).unwrap(),
            environment: "staging".into(),
            task: None,
            plugin: "postgres".into(),
            instance: "db1".into(),
            database: db.into(),
            operation: op.into(),
            state: state.into(),
            duration_seconds: day as f64,
            size,
            key: None,
            data_time: None,
        }
    }

    #[test]
    fn the_page_has_a_row_per_database_and_operation_and_charts() {
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
        let records = [
            rec(17, "shop", "backup", "succeeded", Some(1000)),
            rec(18, "shop", "backup", "succeeded", Some(3000)),
            rec(19, "shop", "restore", "failed", None),
            rec(1, "<blog>", "backup", "succeeded", Some(10)),
        ];
        let html = render("staging", &records, &[], now);
        assert_eq!(html.matches("<tr class=\"row").count(), 3, "{html}");
        assert_eq!(html.matches("<tr class=\"row alarm\"").count(), 2, "{html}");
        assert!(html.contains("&lt;blog&gt;") && !html.contains("<blog>"));
        assert_eq!(html.matches("<section class=\"database\"").count(), 2);
        assert_eq!(html.matches("data-chart=\"Duration\"").count(), 2);
        assert_eq!(html.matches("data-chart=\"Size\"").count(), 2);
        // shop's backups: one line with two points.
        assert!(html.contains("<title>backup 2.9 KiB</title>"), "{html}");
    }

    #[test]
    fn running_steps_are_listed_with_their_progress() {
        let now = Utc.with_ymd_and_hms(2026, 11, 20, 0, 5, 0).unwrap();
        let step = RunningStep {
            pid: 1,
            environment: "staging".into(),
            task: Some("shop".into()),
            plugin: "postgres".into(),
            instance: "db1".into(),
            database: "<shop>".into(),
            operation: "restore".into(),
            started: Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap(),
            updated: now,
            progress: Some(crate::progress::Snapshot {
                what: "restore of <shop>".into(),
                bytes: 1024 * 1024,
                expected_bytes: Some(4 * 1024 * 1024),
                expected_is_estimate: false,
                stage: None,
                items: None,
                items_total: None,
                elapsed_seconds: 10.0,
                bytes_per_second: 104857.6,
                eta_seconds: Some(30.0),
            }),
        };
        let html = render("staging", &[], &[step], now);
        assert_eq!(html.matches("<tr class=\"running\"").count(), 1, "{html}");
        assert!(html.contains("<td class=\"num\">5m</td>"), "{html}");
        assert!(
            html.contains(
                "restore of &lt;shop&gt;: 1.0 MiB of 4.0 MiB (25%), 102.4 KiB/s, ETA 30s"
            ),
            "{html}"
        );
        assert!(!html.contains("<shop>"));
    }

    #[test]
    fn an_empty_history_says_so() {
        let html = render("staging", &[], &[], Utc::now());
        assert!(html.contains("No runs recorded yet."));
        assert!(!html.contains("<table"));
    }
}
