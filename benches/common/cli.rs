//! The command-line pieces the benches share, on top of the examples' `Args` (lexopt
//! underneath): lists of names (`--only a,b`, `--impls a,b`) and the flags that are not a
//! bench's own.

use super::example::workloads::BenchResult;

/// The items a comma-separated `list` (the value of `flag`) names: `one` gives the items a
/// name stands for (several, for a name of a group), or `None` for an unknown name, which is
/// refused with `usage`. An empty list is refused too.
pub fn parse_list<T>(
    list: &str,
    flag: &str,
    usage: &str,
    one: impl Fn(&str) -> Option<Vec<T>>,
) -> BenchResult<Vec<T>> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        out.extend(one(item).ok_or_else(|| format!("{flag}: unknown {item:?}\n{usage}"))?);
    }
    if out.is_empty() {
        return Err(format!("{flag}: empty list"));
    }
    Ok(out)
}

/// The members of `all` that a comma-separated `list` names by `key`, in the list's order.
pub fn pick<T: Copy>(
    list: &str,
    flag: &str,
    usage: &str,
    all: &[T],
    key: impl Fn(T) -> &'static str,
) -> BenchResult<Vec<T>> {
    parse_list(list, flag, usage, |name| {
        all.iter()
            .copied()
            .find(|&c| key(c) == name)
            .map(|c| vec![c])
    })
}

/// A flag that is not the bench's own: `--bench` (which `cargo bench` passes) is ignored,
/// `--help` prints `usage` and exits, anything else is an error.
pub fn other_flag(name: &str, usage: &str) -> BenchResult<()> {
    match name {
        "--bench" => Ok(()),
        "--help" | "-h" => {
            println!("{usage}");
            std::process::exit(0);
        }
        other => Err(format!("unknown option {other}\n{usage}")),
    }
}
