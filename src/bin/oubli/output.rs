//! Standard output for every command: `outln!` and `out!` instead of `println!` and `print!`.
//! When the reader goes away (`oubli erase status ... | head`), the command ends quietly with
//! status 0, as ripgrep does, where `println!` would panic with "failed printing to stdout:
//! Broken pipe". Nothing is left to do once nobody reads the answer.
use std::{
    fmt,
    io::{self, Write},
};

/// `println!` to standard output; a closed pipe ends the command quietly.
macro_rules! outln {
    () => {
        $crate::output::write(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::output::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `print!` to standard output; a closed pipe ends the command quietly.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

pub fn write(text: fmt::Arguments<'_>) {
    if let Err(e) = io::stdout().lock().write_fmt(text) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("oubli: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}
