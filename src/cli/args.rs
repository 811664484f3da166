//! Hand-written argument parsing shared by every verb: positionals,
//! `--name value`, `--name=value`, bare switches, `--help`, and `--` to end
//! the options. Usage mistakes come back as [`Usage`] so the verb can print
//! them with a hint and exit 2.

/// A usage mistake, phrased for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage(pub String);

impl Usage {
    pub fn new(message: impl Into<String>) -> Usage {
        Usage(message.into())
    }
}

/// What a verb accepts.
pub struct Spec<'a> {
    /// Options that take a value.
    pub values: &'a [&'a str],
    /// Options that take none.
    pub switches: &'a [&'a str],
    /// Largest number of positional arguments.
    pub max_positionals: usize,
}

#[derive(Debug, Default)]
pub struct Args {
    pub positionals: Vec<String>,
    pairs: Vec<(String, Option<String>)>,
    /// `--help` or `-h` was given anywhere.
    pub help: bool,
}

impl Args {
    pub fn parse(args: &[String], spec: &Spec) -> Result<Args, Usage> {
        let mut out = Args::default();
        // Help wins over every other mistake, so `verb --bogus --help` helps.
        if args
            .iter()
            .take_while(|a| *a != "--")
            .any(|a| a == "--help" || a == "-h")
        {
            out.help = true;
            return Ok(out);
        }
        let mut it = args.iter();
        let mut options_ended = false;
        while let Some(arg) = it.next() {
            if options_ended || !arg.starts_with('-') || arg == "-" {
                out.positionals.push(arg.clone());
                continue;
            }
            if arg == "--" {
                options_ended = true;
                continue;
            }
            let Some(body) = arg.strip_prefix("--") else {
                return Err(Usage::new(format!("unknown option `{arg}`")));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            if out.pairs.iter().any(|(k, _)| k == name) {
                return Err(Usage::new(format!("--{name} is given twice")));
            }
            if spec.switches.contains(&name) {
                if inline.is_some() {
                    return Err(Usage::new(format!("--{name} takes no value")));
                }
                out.pairs.push((name.to_string(), None));
            } else if spec.values.contains(&name) {
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| Usage::new(format!("--{name} needs a value")))?,
                };
                out.pairs.push((name.to_string(), Some(value)));
            } else {
                return Err(Usage::new(format!("unknown option --{name}")));
            }
        }
        if out.positionals.len() > spec.max_positionals {
            let extra = &out.positionals[spec.max_positionals];
            return Err(Usage::new(format!("unexpected argument `{extra}`")));
        }
        Ok(out)
    }

    pub fn value(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
    }

    pub fn has(&self, name: &str) -> bool {
        self.pairs.iter().any(|(k, _)| k == name)
    }

    pub fn positional(&self, index: usize) -> Option<&str> {
        self.positionals.get(index).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    const SPEC: Spec = Spec {
        values: &["to", "node"],
        switches: &["start"],
        max_positionals: 1,
    };

    #[test]
    fn values_switches_and_positionals() {
        let a = Args::parse(
            &strings(&["u", "--to", "http://d", "--start", "--node=http://n"]),
            &SPEC,
        )
        .unwrap();
        assert_eq!(a.positional(0), Some("u"));
        assert_eq!(a.value("to"), Some("http://d"));
        assert_eq!(a.value("node"), Some("http://n"));
        assert!(a.has("start") && !a.help);
        let a = Args::parse(&strings(&["--", "--weird"]), &SPEC).unwrap();
        assert_eq!(a.positional(0), Some("--weird"));
    }

    #[test]
    fn mistakes_are_named() {
        let e = |args: &[&str]| Args::parse(&strings(args), &SPEC).unwrap_err().0;
        assert_eq!(e(&["--bogus"]), "unknown option --bogus");
        assert_eq!(e(&["--to"]), "--to needs a value");
        assert_eq!(e(&["--start=yes"]), "--start takes no value");
        assert_eq!(e(&["a", "b"]), "unexpected argument `b`");
        assert_eq!(e(&["--to", "x", "--to", "y"]), "--to is given twice");
        assert_eq!(e(&["-x"]), "unknown option `-x`");
    }

    #[test]
    fn help_anywhere() {
        assert!(
            Args::parse(&strings(&["a", "b", "-h"]), &SPEC)
                .unwrap()
                .help
        );
        assert!(
            Args::parse(&strings(&["--bogus", "--help"]), &SPEC)
                .unwrap()
                .help
        );
        assert!(
            !Args::parse(&strings(&["--", "--help"]), &SPEC)
                .unwrap()
                .help
        );
    }
}
