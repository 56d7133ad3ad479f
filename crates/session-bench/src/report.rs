//! Results: one table per section on stdout, and all of them in
//! `results.json` with the machine they were measured on.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

/// Everything one run measured.
#[derive(Debug, Serialize)]
pub(crate) struct Results {
    pub(crate) machine: Machine,
    /// `full` or `quick`.
    pub(crate) mode: &'static str,
    /// Wall time of the whole run, in seconds.
    pub(crate) elapsed_s: f64,
    pub(crate) sections: Vec<Section>,
    /// Sections that failed, with why; the run exits non-zero if any did.
    pub(crate) failures: Vec<Failure>,
}

/// A section that did not complete.
#[derive(Debug, Serialize)]
pub(crate) struct Failure {
    pub(crate) section: &'static str,
    pub(crate) error: String,
}

impl Results {
    pub(crate) fn write(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("could not create {}", dir.display()))?;
        }
        let json = serde_json::to_string_pretty(self)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("could not write {}", path.display()))
    }
}

/// What the numbers were measured on, so a reader can tell runs apart.
#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub(crate) cpus: usize,
    pub(crate) cpu_model: String,
    pub(crate) memory_gib: f64,
    pub(crate) kernel: String,
    /// When the run started, RFC 3339, UTC.
    pub(crate) date: String,
    /// `release` or `debug`: the profile this harness was built with.
    pub(crate) profile: &'static str,
    /// The 1-minute load average when the run started and when it ended: the
    /// machine is shared, and this says how busy it was.
    pub(crate) load_before: f64,
    pub(crate) load_after: Option<f64>,
}

impl Machine {
    pub(crate) fn describe() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(
                || "unknown".to_owned(),
                |(_, model)| model.trim().to_owned(),
            );
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned());
        let date = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|now| {
                now.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        Self {
            cpus: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            memory_gib: (memory_kib / (1024.0 * 1024.0) * 10.0).round() / 10.0,
            kernel,
            date,
            profile: if cfg!(debug_assertions) {
                "debug"
            } else {
                "release"
            },
            load_before: load_average().unwrap_or(0.0),
            load_after: None,
        }
    }
}

/// The 1-minute load average.
pub(crate) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// One benchmark's results: a table.
#[derive(Debug, Serialize)]
pub(crate) struct Section {
    /// A stable name, for scripts reading `results.json`.
    pub(crate) id: &'static str,
    pub(crate) title: String,
    /// What the floor column is.
    pub(crate) floor: String,
    /// How it was measured, in a sentence or two each.
    pub(crate) notes: Vec<String>,
    pub(crate) rows: Vec<Row>,
}

impl Section {
    pub(crate) fn new(
        id: &'static str,
        title: impl Into<String>,
        floor: impl Into<String>,
    ) -> Self {
        Self {
            id,
            title: title.into(),
            floor: floor.into(),
            notes: Vec::new(),
            rows: Vec::new(),
        }
    }

    pub(crate) fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    /// The section as a Markdown table with its notes, aligned for a terminal.
    pub(crate) fn render(&self) -> String {
        let header = ["case", "figure", "floor", "ratio", "target", "details"];
        let lines: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|row| {
                [
                    row.case.clone(),
                    row.figure.to_string(),
                    row.floor.map_or_else(|| "—".to_owned(), |f| f.to_string()),
                    row.ratio
                        .map_or_else(|| "—".to_owned(), |r| format!("{r:.2}×")),
                    row.target
                        .as_ref()
                        .map_or_else(String::new, Target::to_string),
                    row.details
                        .iter()
                        .map(|d| format!("{} {}", d.name, d.figure))
                        .collect::<Vec<_>>()
                        .join(", "),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for line in &lines {
            for (width, cell) in widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let row_text = |cells: &[String]| {
            let mut text = String::from("|");
            for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
                let pad = width - cell.chars().count();
                // Text columns left, numbers right.
                if matches!(i, 0 | 4 | 5) {
                    let _ = write!(text, " {cell}{} |", " ".repeat(pad));
                } else {
                    let _ = write!(text, " {}{cell} |", " ".repeat(pad));
                }
            }
            text
        };
        let mut out = format!("### {}\n\nFloor: {}\n\n", self.title, self.floor);
        out.push_str(&row_text(&header.map(str::to_owned)));
        out.push('\n');
        let mut rule = String::from("|");
        for (i, &width) in widths.iter().enumerate() {
            if matches!(i, 0 | 4 | 5) {
                let _ = write!(rule, " {} |", "-".repeat(width));
            } else {
                let _ = write!(rule, " {}: |", "-".repeat(width.saturating_sub(1)));
            }
        }
        out.push_str(&rule);
        out.push('\n');
        for line in &lines {
            out.push_str(&row_text(line));
            out.push('\n');
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for note in &self.notes {
                out.push_str("- ");
                out.push_str(note);
                out.push('\n');
            }
        }
        out
    }
}

/// One measured case beside its floor.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub(crate) case: String,
    pub(crate) figure: Figure,
    pub(crate) floor: Option<Figure>,
    /// figure / floor, as a median of per-round ratios where the section
    /// alternates rounds: for times and sizes how many times the floor, for
    /// throughput the fraction of the floor reached.
    pub(crate) ratio: Option<f64>,
    pub(crate) target: Option<Target>,
    pub(crate) details: Vec<Detail>,
}

impl Row {
    pub(crate) fn new(case: impl Into<String>, figure: Figure, floor: Figure, ratio: f64) -> Self {
        Self {
            case: case.into(),
            figure,
            floor: Some(floor),
            ratio: Some(ratio),
            target: None,
            details: Vec::new(),
        }
    }

    pub(crate) fn target(mut self, target: Option<Target>) -> Self {
        self.target = target;
        self
    }

    pub(crate) fn detail(mut self, name: impl Into<String>, figure: Figure) -> Self {
        self.details.push(Detail {
            name: name.into(),
            figure,
        });
        self
    }

    /// [`detail`](Self::detail), when there is a figure.
    pub(crate) fn detail_if(self, name: impl Into<String>, figure: Option<Figure>) -> Self {
        match figure {
            Some(figure) => self.detail(name, figure),
            None => self,
        }
    }
}

/// A secondary figure of a row (a percentile, a count).
#[derive(Debug, Serialize)]
pub(crate) struct Detail {
    pub(crate) name: String,
    pub(crate) figure: Figure,
}

/// A number with its unit.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Figure {
    pub(crate) value: f64,
    pub(crate) unit: Unit,
}

/// Units the harness reports in.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Unit {
    Nanoseconds,
    Microseconds,
    Seconds,
    PerSecond,
    Bytes,
    /// A plain factor, such as growth over a smaller size.
    Ratio,
    /// A number of things, or an average of such numbers.
    Count,
}

impl Figure {
    pub(crate) const fn new(value: f64, unit: Unit) -> Self {
        Self { value, unit }
    }
}

impl std::fmt::Display for Figure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.value;
        match self.unit {
            Unit::Nanoseconds => write!(f, "{v:.0} ns"),
            Unit::Microseconds if v >= 1000.0 => write!(f, "{:.2} ms", v / 1000.0),
            Unit::Microseconds if v < 10.0 => write!(f, "{v:.1} µs"),
            Unit::Microseconds => write!(f, "{v:.0} µs"),
            Unit::Seconds if v < 1.0 => write!(f, "{:.0} ms", v * 1000.0),
            Unit::Seconds => write!(f, "{v:.2} s"),
            Unit::PerSecond => write!(f, "{}/s", thousands(v)),
            Unit::Bytes if v >= 1024.0 * 1024.0 => write!(f, "{:.1} MiB", v / (1024.0 * 1024.0)),
            Unit::Bytes => write!(f, "{v:.0} B"),
            Unit::Ratio => write!(f, "{v:.2}×"),
            Unit::Count if v.fract() == 0.0 => write!(f, "{}", thousands(v)),
            Unit::Count => write!(f, "{v:.1}"),
        }
    }
}

/// `12345.6` as `12,346`.
fn thousands(value: f64) -> String {
    let digits = (value.round().max(0.0) as u64).to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// What a figure aims for, and whether this run reached it.
#[derive(Debug, Serialize)]
pub(crate) struct Target {
    pub(crate) goal: String,
    pub(crate) met: bool,
}

impl Target {
    /// The ratio to the floor is at most `max` (times, sizes).
    pub(crate) fn ratio_at_most(ratio: f64, max: f64) -> Self {
        Self {
            goal: format!("≤ {max:.2}×"),
            met: ratio <= max,
        }
    }

    /// The ratio to the floor is at least `min` (throughput).
    pub(crate) fn ratio_at_least(ratio: f64, min: f64) -> Self {
        Self {
            goal: format!("≥ {min:.2}×"),
            met: ratio >= min,
        }
    }

    /// The figure is at least `min` times another subject's, named `of`
    /// (not the floor), `ratio` being figure / that subject's.
    pub(crate) fn relative_at_least(ratio: f64, min: f64, of: &str) -> Self {
        Self {
            goal: format!("≥ {min:.2}× {of}"),
            met: ratio >= min,
        }
    }

    /// The figure itself is below `max`.
    pub(crate) fn below(figure: Figure, max: Figure) -> Self {
        Self {
            goal: format!("< {max}"),
            met: figure.value < max.value,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let verdict = if self.met { "met" } else { "missed" };
        write!(f, "{} {verdict}", self.goal)
    }
}
