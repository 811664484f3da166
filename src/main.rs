//! The `ferry` binary: a thin front over the library's command line
//! ([`ferry::cli`]), which owns the verbs and their exit statuses.

#![deny(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    // `env::args` would panic on a non-UTF-8 argument; say so instead.
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    match args {
        Ok(args) => ExitCode::from(ferry::cli::run(&args)),
        Err(bad) => {
            eprintln!("ferry: the argument {bad:?} is not valid UTF-8");
            ExitCode::from(2)
        }
    }
}
