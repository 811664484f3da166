//! Reads the verbs' `--help` texts as structured documents, so the man
//! page and the shell completions are generated from the very text
//! `--help` prints (with the option table each verb's parser accepts)
//! instead of from hand-kept copies that drift.
//!
//! A help text is: a title line `ferry <verb> — <summary>`, then blocks
//! separated by blank lines. A block whose first line ends in `:` is a
//! section (`Usage:`, `Options:`, ...); in `Options:` each entry starts
//! with `  -x, --name VALUE   text` and continues on deeper-indented lines.

/// One block of a help text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// Prose: the lines joined with spaces.
    Text(String),
    /// `Usage:`: the usage lines, trimmed.
    Usage(Vec<String>),
    /// `Options:`.
    Options(Vec<OptionDoc>),
    /// Any other titled section (`Exit status:`...), kept as lines.
    Section(String, Vec<String>),
}

/// An entry of an `Options:` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptionDoc {
    /// Long name without dashes (`token-file`).
    pub name: String,
    /// Short form without the dash, when there is one (`h`).
    pub short: Option<char>,
    /// The value's placeholder (`F`, `URL`), None for a switch.
    pub value: Option<String>,
    /// The description, lines joined with spaces.
    pub text: String,
}

/// A parsed help text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Help {
    /// `ferry status` (the words before ` — `).
    pub title: String,
    /// What follows ` — ` on the first line.
    pub summary: String,
    pub blocks: Vec<Block>,
}

impl Help {
    pub fn parse(text: &str) -> Help {
        let mut lines = text.lines();
        let first = lines.next().unwrap_or("");
        let (title, summary) = match first.split_once(" — ") {
            Some((t, s)) => (t.trim().to_string(), s.trim().to_string()),
            None => (first.trim().to_string(), String::new()),
        };
        let rest: Vec<&str> = lines.collect();
        let blocks = rest
            .split(|l| l.trim().is_empty())
            .filter(|b| !b.is_empty())
            .map(block)
            .collect();
        Help {
            title,
            summary,
            blocks,
        }
    }

    /// Every documented option, in order.
    pub fn options(&self) -> Vec<&OptionDoc> {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                Block::Options(o) => Some(o),
                _ => None,
            })
            .flatten()
            .collect()
    }

    /// The usage lines.
    pub fn usage(&self) -> Vec<&str> {
        self.blocks
            .iter()
            .filter_map(|b| match b {
                Block::Usage(u) => Some(u),
                _ => None,
            })
            .flatten()
            .map(String::as_str)
            .collect()
    }
}

fn block(lines: &[&str]) -> Block {
    let head = lines[0].trim_end();
    let body = &lines[1..];
    match head {
        "Usage:" => Block::Usage(body.iter().map(|l| l.trim().to_string()).collect()),
        "Options:" => Block::Options(options(body)),
        h if h.ends_with(':') && !h.starts_with(' ') && !h.contains(". ") => Block::Section(
            h.trim_end_matches(':').to_string(),
            body.iter().map(|l| l.trim_end().to_string()).collect(),
        ),
        _ => Block::Text(lines.iter().map(|l| l.trim()).collect::<Vec<_>>().join(" ")),
    }
}

/// `  -h, --help          this text` and its continuation lines.
fn options(lines: &[&str]) -> Vec<OptionDoc> {
    let mut out: Vec<OptionDoc> = Vec::new();
    for line in lines {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.starts_with('-') && indent <= 4 {
            out.push(entry(trimmed));
        } else if let Some(last) = out.last_mut() {
            last.text.push(' ');
            last.text.push_str(trimmed.trim());
        }
    }
    out
}

fn entry(line: &str) -> OptionDoc {
    // The option part ends at the first run of two spaces.
    let (spec, text) = match line.find("  ") {
        Some(i) => (&line[..i], line[i..].trim()),
        None => (line, ""),
    };
    let mut short = None;
    let mut name = String::new();
    let mut value = None;
    for word in spec.split([' ', ',']).filter(|w| !w.is_empty()) {
        if let Some(long) = word.strip_prefix("--") {
            name = long.to_string();
        } else if let Some(s) = word.strip_prefix('-') {
            short = s.chars().next();
        } else if !name.is_empty() {
            value = Some(word.to_string());
        }
    }
    OptionDoc {
        name,
        short,
        value,
        text: text.trim().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "ferry thing — does a thing

Usage:
  ferry thing <x> [--to URL]

Does it well,
on two lines.

Options:
  --to URL         where to, e.g. http://d
                   (continued)
  --start          start it
  -h, --help       this text

Exit status: 0 when fine.";

    #[test]
    fn a_help_text_reads_as_blocks() {
        let h = Help::parse(SAMPLE);
        assert_eq!(h.title, "ferry thing");
        assert_eq!(h.summary, "does a thing");
        assert_eq!(h.usage(), vec!["ferry thing <x> [--to URL]"]);
        assert_eq!(
            h.blocks[1],
            Block::Text("Does it well, on two lines.".into())
        );
        let o = h.options();
        assert_eq!(o.len(), 3);
        assert_eq!(o[0].name, "to");
        assert_eq!(o[0].value.as_deref(), Some("URL"));
        assert_eq!(o[0].text, "where to, e.g. http://d (continued)");
        assert_eq!((o[1].name.as_str(), o[1].value.as_deref()), ("start", None));
        assert_eq!((o[2].name.as_str(), o[2].short), ("help", Some('h')));
        // A sentence that happens to contain a colon stays prose.
        assert_eq!(h.blocks[3], Block::Text("Exit status: 0 when fine.".into()));
    }
}
