//! Command-line parsing for both services. clap's switches take no value and their
//! environment variables only `true` or `false`; here every switch accepts the usual boolean
//! spellings, on the command line (`--flag`, `--flag=1`) and in its variable alike, so
//! `DYNAGATE_…=1` or `=yes` works as operators expect. One rule for every boolean setting,
//! present and future: it is applied to the command, not flag by flag.

use std::ffi::OsString;

use clap::{Arg, ArgAction, Command, CommandFactory, FromArgMatches, builder::BoolishValueParser};

/// What `--help` says about boolean settings.
const BOOLEAN_HELP: &str = "Boolean settings (switches and their environment variables) accept \
                            true/false, 1/0, yes/no, on/off, y/n and t/f.";

/// Parses the process's arguments and environment, exiting with clap's message (and status)
/// on an error or `--help`.
pub fn parse<T: CommandFactory + FromArgMatches>() -> T {
    try_parse_from(std::env::args_os()).unwrap_or_else(|error| error.exit())
}

/// Parses `args` (the first is the program name) and the environment.
pub fn try_parse_from<T, I, A>(args: I) -> Result<T, clap::Error>
where
    T: CommandFactory + FromArgMatches,
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let mut command = command::<T>();
    let mut matches = command.try_get_matches_from_mut(args)?;
    T::from_arg_matches_mut(&mut matches).map_err(|error| error.format(&mut command))
}

/// `T`'s command with every switch made boolish.
pub fn command<T: CommandFactory>() -> Command {
    T::command().mut_args(boolish).after_long_help(BOOLEAN_HELP)
}

/// A switch that also takes an optional boolean value: `--flag` is `--flag=true`, and the
/// value (or the environment variable's) may be any of the usual spellings.
fn boolish(arg: Arg) -> Arg {
    if !matches!(arg.get_action(), ArgAction::SetTrue) {
        return arg;
    }
    arg.action(ArgAction::Set)
        .num_args(0..=1)
        .require_equals(true)
        .default_missing_value("true")
        .default_value("false")
        .hide_default_value(true)
        .value_name("BOOL")
        .value_parser(BoolishValueParser::new())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Flags {
        /// A switch.
        #[arg(long, env = "DYNAGATE_CLI_TEST_NEVER_SET")]
        switch: bool,
        /// Not a switch.
        #[arg(long, default_value_t = 3)]
        number: u32,
    }

    fn switch(args: &[&str]) -> Result<bool, clap::Error> {
        try_parse_from::<Flags, _, _>(std::iter::once("prog").chain(args.iter().copied()))
            .map(|flags| flags.switch)
    }

    #[test]
    fn a_switch_takes_every_usual_spelling() {
        assert!(!switch(&[]).unwrap());
        assert!(switch(&["--switch"]).unwrap());
        for yes in ["1", "true", "yes", "on", "y", "t", "TRUE", "Yes"] {
            assert!(switch(&[&format!("--switch={yes}")]).unwrap(), "{yes}");
        }
        for no in ["0", "false", "no", "off", "n", "f"] {
            assert!(!switch(&[&format!("--switch={no}")]).unwrap(), "{no}");
        }
        assert!(switch(&["--switch=maybe"]).is_err());
    }

    #[test]
    fn a_switch_never_swallows_the_next_argument() {
        let flags = try_parse_from::<Flags, _, _>(["prog", "--switch", "--number", "7"]).unwrap();
        assert!(flags.switch);
        assert_eq!(flags.number, 7);
    }
}
