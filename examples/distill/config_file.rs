//! `distill --config FILE` (or `DISTILL_CONFIG=FILE`): defaults for any command's flags, from
//! a TOML file whose tables are the commands and whose keys are their long flag names:
//!
//! ```toml
//! verbose = 1              # the global flags at the top
//! [generate]
//! num-examples = 50
//! config = "teacher.toml"  # generate's own --config: the teacher's settings
//! [eval.text]              # a nested command
//! references = ["a.txt", "b.txt"]
//! ```
//!
//! Precedence is the environment, then the file, then the flags: the file's values become
//! flags placed before the user's own, so clap applies them exactly as if typed (over the
//! environment, through the same parsers) and a flag on the command line replaces the file's
//! value, or drops it when the two conflict. Paths are taken as on the command line, relative
//! to the working directory.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Arg, ArgAction, Command};

/// The environment variable that names a config file when `--config` is not given.
pub const CONFIG_VAR: &str = "DISTILL_CONFIG";

/// `argv` with the config file's values inserted as flags; `argv` unchanged without a file.
pub fn expand(root: &Command, argv: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let invocation = Invocation::scan(root, &argv);
    let path = match &invocation.config {
        Some(path) => Some(path.clone()),
        None => std::env::var_os(CONFIG_VAR)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from),
    };
    let Some(path) = path else {
        return Ok(argv);
    };
    let text = std::fs::read_to_string(&path).with_context(|| format!("config file {}", path.display()))?;
    let file = ConfigFile {
        path: &path,
        text: &text,
    };
    let table: toml::Table = toml::from_str(&text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_at(&text, s.start));
        anyhow::anyhow!("{}:{line}: {}", path.display(), e.message())
    })?;
    file.check(root, &table, &[])?;

    // Insert from the deepest command up, so that earlier indices stay valid.
    let mut argv = argv;
    let mut table = Some(&table);
    let mut inserts = Vec::new();
    for (depth, level) in invocation.levels.iter().enumerate() {
        let Some(current) = table else { break };
        let deeper = invocation.levels.get(depth + 1);
        // A command whose flags conflict with its subcommands (`eval` and `eval text`) takes
        // its table's flags only when it is the command run.
        let skip = deeper.is_some() && level.command.is_args_conflicts_with_subcommands_set();
        if !skip {
            let flags = file.flags(&level.command, current, &invocation.given(depth))?;
            inserts.push((level.index + 1, flags));
        }
        table = deeper.and_then(|next| current.get(next.command.get_name())?.as_table());
    }
    for (at, flags) in inserts.into_iter().rev() {
        argv.splice(at..at, flags);
    }
    Ok(argv)
}

/// One command on the command line: `distill`, then each subcommand named.
struct Level {
    command: Command,
    /// Where the command's name is in `argv` (0 for the binary).
    index: usize,
    /// The long names of the flags given at this level.
    given: Vec<String>,
}

/// What the command line names: its commands, their flags, and `--config`.
struct Invocation {
    levels: Vec<Level>,
    config: Option<PathBuf>,
}

impl Invocation {
    fn scan(root: &Command, argv: &[OsString]) -> Self {
        let globals: Vec<Arg> = root
            .get_arguments()
            .filter(|a| a.is_global_set())
            .cloned()
            .collect();
        let mut levels = vec![Level {
            command: root.clone(),
            index: 0,
            given: Vec::new(),
        }];
        let mut config = None;
        let mut i = 1;
        while i < argv.len() {
            let Some(token) = argv[i].to_str() else {
                i += 1;
                continue;
            };
            if token == "--" {
                break;
            }
            let level = levels.last_mut().expect("the root level");
            let find = |pred: &dyn Fn(&Arg) -> bool| {
                level
                    .command
                    .get_arguments()
                    .chain(&globals)
                    .find(|a| pred(a))
                    .cloned()
            };
            let (arg, attached) = if let Some(long) = token.strip_prefix("--") {
                let (name, value) = match long.split_once('=') {
                    Some((name, value)) => (name, Some(value)),
                    None => (long, None),
                };
                (
                    find(&|a| long_names(a).any(|n| n == name)),
                    value.map(str::to_owned),
                )
            } else if let Some(shorts) = token.strip_prefix('-').filter(|s| !s.is_empty()) {
                let first = shorts.chars().next().expect("not empty");
                let rest = &shorts[first.len_utf8()..];
                (
                    find(&|a| a.get_short() == Some(first)),
                    (!rest.is_empty()).then(|| rest.to_owned()),
                )
            } else {
                let sub = level.command.find_subcommand(token).cloned();
                if let Some(sub) = sub {
                    levels.push(Level {
                        command: sub,
                        index: i,
                        given: Vec::new(),
                    });
                }
                i += 1;
                continue;
            };
            i += 1;
            let Some(arg) = arg else { continue };
            let mut value = attached;
            if value.is_none() && arg.get_action().takes_values() {
                value = argv.get(i).and_then(|v| v.to_str()).map(str::to_owned);
                i += 1;
            }
            if levels.len() == 1 && arg.get_long() == Some("config") {
                config = value.map(PathBuf::from);
            }
            if let Some(long) = arg.get_long() {
                levels
                    .last_mut()
                    .expect("the root level")
                    .given
                    .push(long.to_owned());
            }
        }
        Self { levels, config }
    }

    /// The flags the user gave that count at `depth`: its own, and the global ones anywhere.
    fn given(&self, depth: usize) -> Vec<String> {
        let mut given = self.levels[depth].given.clone();
        let root = &self.levels[0].command;
        for level in &self.levels {
            given.extend(level.given.iter().filter(|name| is_global(root, name)).cloned());
        }
        given
    }
}

fn is_global(root: &Command, long: &str) -> bool {
    root.get_arguments()
        .any(|a| a.is_global_set() && a.get_long() == Some(long))
}

/// Whether `arg` and the flag named `--other` exclude each other (declared on either side).
fn conflicts(command: &Command, arg: &Arg, other: &str) -> bool {
    let named = |a: &Arg| a.get_long() == Some(other);
    let Some(other_arg) = command.get_arguments().find(|a| named(a)) else {
        return false;
    };
    command.get_arg_conflicts_with(arg).into_iter().any(named)
        || command
            .get_arg_conflicts_with(other_arg)
            .into_iter()
            .any(|a| a.get_id() == arg.get_id())
}

/// A flag's long name and its aliases.
fn long_names(arg: &Arg) -> impl Iterator<Item = &str> {
    arg.get_long()
        .into_iter()
        .chain(arg.get_all_aliases().unwrap_or_default())
}

/// The file, for its errors.
struct ConfigFile<'a> {
    path: &'a Path,
    text: &'a str,
}

impl ConfigFile<'_> {
    /// Every key of the file names a flag or a command, with a value the flag can take.
    fn check(&self, command: &Command, table: &toml::Table, at: &[&str]) -> anyhow::Result<()> {
        for (key, value) in table {
            let mut keys = at.to_vec();
            keys.push(key);
            if let (Some(sub), toml::Value::Table(inner)) = (command.find_subcommand(key), value) {
                self.check(sub, inner, &keys)?;
                continue;
            }
            let arg = self.flag(command, &keys)?;
            let tokens = self.tokens(&arg, value, &keys)?;
            self.check_values(&arg, &tokens, &keys)?;
        }
        Ok(())
    }

    /// The flags that `table` gives `command`, less those the user gave (or that conflict
    /// with one the user gave).
    fn flags(
        &self,
        command: &Command,
        table: &toml::Table,
        given: &[String],
    ) -> anyhow::Result<Vec<OsString>> {
        let mut flags = Vec::new();
        for (key, value) in table {
            if value.is_table() && command.find_subcommand(key).is_some() {
                continue;
            }
            let keys = [key.as_str()];
            let arg = self.flag(command, &keys)?;
            let overridden = given
                .iter()
                .any(|long| arg.get_long() == Some(long.as_str()) || conflicts(command, &arg, long));
            if !overridden {
                flags.extend(self.tokens(&arg, value, &keys)?.into_iter().map(OsString::from));
            }
        }
        Ok(flags)
    }

    /// The flag that a key names, by long name or alias (`num_examples` as `num-examples`).
    fn flag(&self, command: &Command, keys: &[&str]) -> anyhow::Result<Arg> {
        let key = keys.last().expect("a key");
        let wanted = key.replace('_', "-");
        let found = command
            .get_arguments()
            .find(|a| a.get_long().is_some() && long_names(a).any(|n| n == *key || n == wanted));
        match found {
            Some(arg) if arg.get_long() != Some("config") || keys.len() > 1 => Ok(arg.clone()),
            Some(_) => bail!("{}: `config` cannot name another config file", self.at(keys)),
            None if command.find_subcommand(key).is_some() => bail!(
                "{}: `{key}` is a command of `{}`: give its flags in a [{}] table",
                self.at(keys),
                command_name(keys),
                keys.join(".")
            ),
            None => {
                let names: Vec<&str> = command.get_arguments().filter_map(Arg::get_long).collect();
                let subs: Vec<&str> = command.get_subcommands().map(Command::get_name).collect();
                let known = match (names.is_empty(), subs.is_empty()) {
                    (false, true) => format!("its flags are {}", names.join(", ")),
                    (true, _) => format!("its commands are {}", subs.join(", ")),
                    (false, false) => format!(
                        "its flags are {}; its commands {}",
                        names.join(", "),
                        subs.join(", ")
                    ),
                };
                bail!(
                    "{}: `{}` has no --{wanted} ({known})",
                    self.at(keys),
                    command_name(keys)
                )
            }
        }
    }

    /// The command-line tokens for `arg = value` (`--flag`, `--flag=value`, …).
    fn tokens(&self, arg: &Arg, value: &toml::Value, keys: &[&str]) -> anyhow::Result<Vec<String>> {
        let long = format!("--{}", arg.get_long().expect("flags found by long name"));
        let at = || self.at(keys);
        let tokens = match (arg.get_action(), value) {
            (ArgAction::SetTrue, toml::Value::Boolean(on)) => on.then(|| long.clone()).into_iter().collect(),
            (ArgAction::SetFalse, toml::Value::Boolean(on)) => {
                (!on).then(|| long.clone()).into_iter().collect()
            }
            (ArgAction::SetTrue | ArgAction::SetFalse, _) => bail!("{}: expects true or false", at()),
            (ArgAction::Count, toml::Value::Integer(n)) if (0..=u8::MAX.into()).contains(n) => {
                vec![long.clone(); *n as usize]
            }
            (ArgAction::Count, _) => bail!("{}: expects a count from 0 to 255", at()),
            (ArgAction::Append, toml::Value::Array(items)) => {
                let values = items
                    .iter()
                    .map(|item| scalar(item).ok_or_else(|| self.not_scalar(keys)));
                values
                    .map(|v| v.map(|v| format!("{long}={v}")))
                    .collect::<anyhow::Result<_>>()?
            }
            (ArgAction::Set | ArgAction::Append, value) => {
                vec![format!(
                    "{long}={}",
                    scalar(value).ok_or_else(|| self.not_scalar(keys))?
                )]
            }
            _ => bail!("{}: this flag cannot be set from a config file", at()),
        };
        Ok(tokens)
    }

    /// Each `--flag=value` of `tokens` through the flag's own value parser.
    fn check_values(&self, arg: &Arg, tokens: &[String], keys: &[&str]) -> anyhow::Result<()> {
        let long = format!("--{}", arg.get_long().expect("flags found by long name"));
        if arg.get_action().takes_values() {
            // The flag's own parser, alone: the file's value is checked before any other flag.
            let mut alone = Arg::new("value")
                .long(long[2..].to_owned())
                .value_parser(arg.get_value_parser().clone());
            if let Some(names) = arg.get_value_names() {
                alone = alone.value_names(names.to_vec());
            }
            let check = Command::new("distill").no_binary_name(true).arg(alone);
            for token in tokens {
                let value = &token[long.len() + 1..];
                if let Err(e) = check
                    .clone()
                    .try_get_matches_from([OsStr::new(&long), OsStr::new(value)])
                {
                    let choices: Vec<String> = arg
                        .get_possible_values()
                        .iter()
                        .map(|v| v.get_name().to_owned())
                        .collect();
                    let choices = if choices.is_empty() {
                        String::new()
                    } else {
                        format!(" (one of {})", choices.join(", "))
                    };
                    bail!("{}: {}{choices}", self.at(keys), clap_message(&e));
                }
            }
        }
        Ok(())
    }

    fn not_scalar(&self, keys: &[&str]) -> anyhow::Error {
        anyhow::anyhow!("{}: expects a string, a number or a boolean", self.at(keys))
    }

    /// `FILE:LINE: [table] key`, for errors.
    fn at(&self, keys: &[&str]) -> String {
        let line = key_line(self.text, keys).unwrap_or(1);
        let (key, tables) = keys.split_last().expect("a key");
        let table = if tables.is_empty() {
            String::new()
        } else {
            format!("[{}] ", tables.join("."))
        };
        format!("{}:{line}: {table}{key}", self.path.display())
    }
}

/// The value as a command-line word.
fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// `distill generate` for the keys `["generate", "num-examples"]`.
fn command_name(keys: &[&str]) -> String {
    let tables = &keys[..keys.len().saturating_sub(1)];
    std::iter::once("distill")
        .chain(tables.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first line of a clap error, without its `error: ` prefix.
fn clap_message(error: &clap::Error) -> String {
    let text = error.to_string();
    let line = text.lines().next().unwrap_or_default();
    line.strip_prefix("error: ").unwrap_or(line).to_owned()
}

/// The line of the key at `keys` (table names, then the key), from the document's spans.
fn key_line(text: &str, keys: &[&str]) -> Option<usize> {
    let document = toml::de::DeTable::parse(text).ok()?;
    let mut table = document.get_ref();
    let mut line = None;
    for (i, key) in keys.iter().enumerate() {
        let (name, value) = table.iter().find(|(name, _)| name.get_ref() == key)?;
        line = Some(line_at(text, name.span().start));
        if i + 1 < keys.len() {
            let toml::de::DeValue::Table(inner) = value.get_ref() else {
                return line;
            };
            table = inner;
        }
    }
    line
}

/// The 1-based line of a byte offset.
fn line_at(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset].iter().filter(|&&b| b == b'\n').count() + 1
}
