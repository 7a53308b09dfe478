//! Plain-text tables and the small formats they use (human uptimes, shortened text).
//!
//! Columns are separated by two spaces and padded to the widest cell (counted in characters);
//! the last column is never padded, so lines carry no trailing blanks. Empty cells are shown as
//! `-` so every line splits into the same number of fields.

use std::fmt::Write;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

#[derive(Debug)]
pub struct Table {
    headers: Vec<(&'static str, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[(&'static str, Align)]) -> Self {
        Table {
            headers: headers.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are ignored.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cell = |s: &str| if s.is_empty() { "-" } else { s }.to_string();
        let rows: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(|c| cell(c)).collect())
            .collect();
        let widths: Vec<usize> = self
            .headers
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                rows.iter()
                    .map(|r| r[i].chars().count())
                    .chain([h.chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        let header: Vec<String> = self.headers.iter().map(|(h, _)| h.to_string()).collect();
        for r in std::iter::once(&header).chain(rows.iter()) {
            let mut line = String::new();
            let last = r.len().saturating_sub(1);
            for (i, c) in r.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let pad = widths[i].saturating_sub(c.chars().count());
                match self.headers[i].1 {
                    Align::Right => {
                        line.extend(std::iter::repeat_n(' ', pad));
                        line.push_str(c);
                    }
                    Align::Left => {
                        line.push_str(c);
                        if i != last {
                            line.extend(std::iter::repeat_n(' ', pad));
                        }
                    }
                }
            }
            let _ = writeln!(out, "{}", line.trim_end());
        }
        out
    }
}

/// `42s`, `5m07s`, `1h02m`, `3d04h`: two units at most, like `birdc` and `gobgp`.
pub fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if secs < 60 {
        format!("{s}s")
    } else if secs < 3600 {
        format!("{m}m{s:02}s")
    } else if secs < 86_400 {
        format!("{}h{m:02}m", secs / 3600)
    } else {
        format!("{d}d{h:02}h")
    }
}

/// `s` cut to at most `max` characters, ending in `…` when cut.
pub fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `key   value` lines with the keys padded to the longest one.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let w = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, v) in pairs {
        let v = if v.is_empty() { "-" } else { v.as_str() };
        let _ = writeln!(out, "  {k:<w$}  {v}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_padded_to_the_widest_cell() {
        let mut t = Table::new(&[
            ("NAME", Align::Left),
            ("N", Align::Right),
            ("NOTE", Align::Left),
        ]);
        t.row(vec!["a".into(), "1234".into(), "x y".into()]);
        t.row(vec!["longer-name".into(), "5".into(), String::new()]);
        assert_eq!(
            t.render(),
            "NAME            N  NOTE\n\
             a            1234  x y\n\
             longer-name     5  -\n"
        );
    }

    #[test]
    fn an_empty_table_is_its_header() {
        let t = Table::new(&[("PREFIX", Align::Left), ("PEER", Align::Left)]);
        assert_eq!(t.render(), "PREFIX  PEER\n");
    }

    #[test]
    fn widths_count_characters_not_bytes() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["é…".into(), "x".into()]);
        t.row(vec!["abc".into(), "y".into()]);
        assert_eq!(t.render(), "A    B\né…   x\nabc  y\n");
    }

    #[test]
    fn durations_read_like_birdc() {
        assert_eq!(human_duration(0), "0s");
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(61), "1m01s");
        assert_eq!(human_duration(3599), "59m59s");
        assert_eq!(human_duration(3725), "1h02m");
        assert_eq!(human_duration(86_399), "23h59m");
        assert_eq!(human_duration(90_061), "1d01h");
        assert_eq!(human_duration(400 * 86_400), "400d00h");
    }

    #[test]
    fn shortens_on_characters() {
        assert_eq!(shorten("short", 10), "short");
        assert_eq!(shorten("exactly10!", 10), "exactly10!");
        assert_eq!(shorten("this is too long", 8), "this is…");
        assert_eq!(shorten("ééééé", 3), "éé…");
    }

    #[test]
    fn key_values_align() {
        let s = key_values(&[
            ("state", "Established".into()),
            ("hold time", String::new()),
        ]);
        assert_eq!(s, "  state      Established\n  hold time  -\n");
    }
}
