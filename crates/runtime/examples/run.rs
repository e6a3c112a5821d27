//! Runs a command in a flattened ext4 image, for trying the runner by hand:
//!
//! ```text
//! cargo run --release -p kindling-runtime --example run -- IMAGE.img [--ro] [--tty] [--user U] -- CMD ARGS...
//! ```
//!
//! Attaches IMAGE.img to a loop device, mounts it on a temporary directory,
//! runs CMD in a container and exits with its code.

use std::path::PathBuf;
use std::time::Instant;

use kindling_runtime::{
    forward_signals, mount_ext4, process_from_image, Container, LoopDevice, RunOptions,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let mut args = std::env::args().skip(1);
    let image = PathBuf::from(
        args.next()
            .ok_or("usage: run IMAGE.img [--ro] [--tty] [--user U] -- CMD...")?,
    );
    let (mut ro, mut tty, mut user) = (false, false, String::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ro" => ro = true,
            "--tty" => tty = true,
            "--user" => user = args.next().ok_or("--user needs a value")?,
            "--" => break,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    let cmd: Vec<String> = args.collect();
    forward_signals(|sig| std::process::exit(128 + sig))?;
    let mnt = tempfile::tempdir()?;
    let dev = LoopDevice::attach(&image, ro)?;
    let root = mount_ext4(dev.path(), mnt.path(), ro)?;
    let mut spec = process_from_image(&[], &cmd, &[], "", &user, None);
    spec.terminal = tty;
    let id = format!("example-{}", std::process::id());
    let opts = RunOptions {
        on_first_output: Some(Box::new(move || {
            eprintln!("[first output after {:?}]", start.elapsed())
        })),
        ..RunOptions::default()
    };
    let status = Container::run(&id, root.target(), &spec, opts);
    drop(root);
    drop(dev);
    let status = status?;
    eprintln!("[exit {} after {:?}]", status.code(), start.elapsed());
    std::process::exit(status.code());
}
