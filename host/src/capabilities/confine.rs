//! OS confinement of a plugin's child programs (Landlock, Linux ≥ 5.13;
//! network rules ≥ 6.7, signal scoping ≥ 6.12). A child may execute only its
//! own program file (with the interpreter and loader that file needs, and
//! what its policy lists), read only system paths, write only the step's
//! scratch folder (and the database folder its policy grants), connect over
//! TCP only to the ports of the step's connections, bind none, and signal
//! or trace nothing outside its own sandbox — so it cannot read the host's
//! `/proc/PID/environ` or memory either. The rules are built in the host and
//! applied between fork and exec.

use super::program_policy::{ProgramPolicy, System};
use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreated, RulesetCreatedAttr, RulesetStatus, Scope,
};
use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};

/// The newest Landlock ABI the rules are written for; older kernels enforce
/// what they know (best effort), and a kernel with none refuses the child.
const ABI_USED: ABI = ABI::V6;

/// Running children without Landlock is an operator's explicit choice
/// (`ENVSYNC_UNCONFINED_CHILDREN=1`), for kernels or container runtimes
/// that lack it; every child is refused otherwise.
pub const UNCONFINED_ENV: &str = "ENVSYNC_UNCONFINED_CHILDREN";

/// What one child may reach.
pub struct Grant<'a> {
    pub program: &'a Path,
    pub policy: Option<&'a ProgramPolicy>,
    pub system: &'a System,
    pub scratch: &'a Path,
    pub database_folders: &'a [PathBuf],
    pub ports: &'a BTreeSet<u16>,
}

/// A ruleset ready to apply in the child.
pub struct Confinement {
    ruleset: Option<RulesetCreated>,
    allow_unconfined: bool,
}

impl Confinement {
    /// Builds the rules for `grant`. Paths that do not exist on this machine
    /// are skipped.
    pub fn build(grant: &Grant) -> Result<Confinement, String> {
        let allow_unconfined = std::env::var_os(UNCONFINED_ENV).is_some_and(|v| v == "1");
        let ruleset = rules(grant).map_err(|e| format!("building the Landlock rules: {e}"))?;
        Ok(Confinement {
            ruleset: Some(ruleset),
            allow_unconfined,
        })
    }

    /// Applies the rules to the calling (forked, single-threaded) process:
    /// no new privileges, then the Landlock domain. Only system calls, no
    /// allocation on success: safe between fork and exec.
    pub fn apply(&mut self) -> io::Result<()> {
        let Some(ruleset) = self.ruleset.take() else {
            return Ok(());
        };
        let status = ruleset.restrict_self().map_err(io::Error::other)?;
        if status.ruleset == RulesetStatus::NotEnforced && !self.allow_unconfined {
            return Err(io::Error::other(
                "this kernel does not enforce Landlock, so envsync-host cannot confine the \
                 plugin's programs; run on Linux 5.13 or later with Landlock enabled (and \
                 allowed by the container's seccomp profile), or set \
                 ENVSYNC_UNCONFINED_CHILDREN=1 to run them unconfined",
            ));
        }
        Ok(())
    }
}

fn rules(grant: &Grant) -> Result<RulesetCreated, landlock::RulesetError> {
    let read = AccessFs::ReadFile | AccessFs::ReadDir;
    let run = read | AccessFs::Execute;
    let write = AccessFs::from_all(ABI_USED) & !BitFlags::from(AccessFs::Execute);
    let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate;

    let mut paths: Vec<(PathBuf, BitFlags<AccessFs>)> = Vec::new();
    paths.extend(grant.system.read.iter().map(|p| (p.into(), read)));
    paths.extend(grant.system.devices.iter().map(|p| (p.into(), device)));
    if let Some(policy) = grant.policy {
        paths.extend(policy.read.iter().map(|p| (p.into(), read)));
        paths.extend(policy.exec_beneath.iter().map(|p| (p.into(), run)));
    }
    paths.extend(executables(grant.program).into_iter().map(|p| (p, run)));
    paths.push((grant.scratch.to_path_buf(), write | read));
    for folder in grant.database_folders {
        paths.push((folder.clone(), write | read));
    }
    // Paths missing on this machine are skipped.
    let path_rules = paths.into_iter().filter_map(|(path, access)| {
        PathFd::new(path)
            .ok()
            .map(|fd| Ok::<_, landlock::RulesetError>(PathBeneath::new(fd, access)))
    });
    let port_rules = grant
        .ports
        .iter()
        .map(|port| Ok::<_, landlock::RulesetError>(NetPort::new(*port, AccessNet::ConnectTcp)));
    Ruleset::default()
        .handle_access(AccessFs::from_all(ABI_USED))?
        .handle_access(AccessNet::from_all(ABI_USED))?
        .scope(Scope::from_all(ABI_USED))?
        .create()?
        .add_rules(path_rules)?
        .add_rules(port_rules)
}

/// The files executing `program` opens for execution: the program itself,
/// the `#!` interpreter of a script (recursively), and an ELF's loader.
fn executables(program: &Path) -> Vec<PathBuf> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static FOUND: OnceLock<Mutex<HashMap<PathBuf, Vec<PathBuf>>>> = OnceLock::new();
    let cache = FOUND.get_or_init(Default::default);
    if let Some(found) = cache.lock().expect("executables cache").get(program) {
        return found.clone();
    }
    let found = find_executables(program);
    cache
        .lock()
        .expect("executables cache")
        .insert(program.to_path_buf(), found.clone());
    found
}

fn find_executables(program: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut next = Some(program.to_path_buf());
    while let Some(path) = next.take() {
        let Ok(real) = std::fs::canonicalize(&path) else {
            break;
        };
        if out.contains(&real) || out.len() > 4 {
            break;
        }
        let Ok(bytes) = read_start(&real) else {
            out.push(real);
            break;
        };
        if let Some(line) = bytes.strip_prefix(b"#!") {
            let line = line.split(|b| *b == b'\n').next().unwrap_or_default();
            let text = String::from_utf8_lossy(line);
            next = text.split_whitespace().next().map(PathBuf::from);
        } else if let Some(interp) = elf_interpreter(&real) {
            out.push(real);
            if let Ok(loader) = std::fs::canonicalize(interp) {
                out.push(loader);
            }
            break;
        }
        out.push(real);
    }
    out
}

fn read_start(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; 256];
    let n = std::fs::File::open(path)?.read(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

/// PT_INTERP of an ELF executable (its dynamic loader).
fn elf_interpreter(path: &Path) -> Option<PathBuf> {
    use object::read::elf::{ElfFile64, ProgramHeader};
    let data = std::fs::read(path).ok()?;
    let elf = ElfFile64::<object::Endianness>::parse(&*data).ok()?;
    let endian = elf.endian();
    elf.elf_program_headers().iter().find_map(|header| {
        let interp = header.interpreter(endian, &*data).ok()??;
        let text = std::str::from_utf8(interp).ok()?;
        Some(PathBuf::from(text.trim_end_matches('\0')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_interpreters_and_loaders_are_found() {
        let sh = Path::new("/bin/sh");
        let found = executables(sh);
        assert!(!found.is_empty());
        assert!(
            found
                .iter()
                .any(|p| p.to_string_lossy().contains("ld-linux")),
            "{found:?}"
        );
    }
}
