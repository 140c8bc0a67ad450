//! Outputs on USB sticks as they are: FAT32 and exFAT, mounted through FUSE
//! (this kernel has no vfat module; `fusefat` and `exfat-fuse` are what a
//! Debian laptop without it would use). Every test writes through keyrite,
//! unmounts, checks the image with the filesystem's own fsck, mounts it again
//! and reads back what keyrite wrote.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{keyrite, p, require_tool, stderr, stdout, SoftHsm};

#[derive(Clone, Copy, Debug)]
enum Fs {
    Fat32,
    Exfat,
}

/// A filesystem image mounted through FUSE; unmounted (and its loop device
/// released) when dropped, so a failing test leaves no mount behind.
struct Medium {
    fs: Fs,
    _dir: tempfile::TempDir,
    image: PathBuf,
    mount: PathBuf,
    loop_dev: Option<String>,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}{}", stdout(&out), stderr(&out));
    stdout(&out)
}

impl Medium {
    fn new(fs: Fs) -> Medium {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = dir.path().join("stick.img");
        let mount = dir.path().join("mnt");
        std::fs::create_dir(&mount).expect("mount point");
        std::fs::File::create(&image).and_then(|f| f.set_len(64 << 20)).expect("image");
        match fs {
            Fs::Fat32 => {
                require_tool("mkfs.fat", "dosfstools");
                run(Command::new("mkfs.fat").args(["-F", "32", "-n", "CEREMONY"]).arg(&image));
            }
            Fs::Exfat => {
                require_tool("mkfs.exfat", "exfatprogs");
                run(Command::new("mkfs.exfat").args(["-L", "CEREMONY"]).arg(&image));
            }
        }
        let mut medium = Medium { fs, _dir: dir, image, mount, loop_dev: None };
        medium.attach();
        medium
    }

    fn attach(&mut self) {
        match self.fs {
            Fs::Fat32 => {
                require_tool("fusefat", "fusefat");
                run(Command::new("fusefat").args(["-o", "rw+"]).arg(&self.image).arg(&self.mount));
            }
            Fs::Exfat => {
                // exfat-fuse run as root insists on a block device.
                require_tool("mount.exfat-fuse", "exfat-fuse");
                let dev = run(Command::new("losetup").args(["-f", "--show"]).arg(&self.image)).trim().to_string();
                run(Command::new("mount.exfat-fuse").arg(&dev).arg(&self.mount));
                self.loop_dev = Some(dev);
            }
        }
        let mounts = std::fs::read_to_string("/proc/mounts").expect("/proc/mounts");
        assert!(mounts.contains(p(&self.mount)), "{:?} is not mounted at {}", self.fs, self.mount.display());
    }

    fn detach(&mut self) {
        let _ = Command::new("sync").status();
        run(Command::new("fusermount").arg("-u").arg(&self.mount));
        if let Some(dev) = self.loop_dev.take() {
            run(Command::new("losetup").arg("-d").arg(dev));
        }
    }

    /// Unmounts, runs the filesystem's fsck (read-only) on the image, and
    /// mounts it again: what a person does moving the stick between hosts.
    fn replug_and_fsck(&mut self) {
        self.detach();
        let (tool, pkg) = match self.fs {
            Fs::Fat32 => ("fsck.fat", "dosfstools"),
            Fs::Exfat => ("fsck.exfat", "exfatprogs"),
        };
        require_tool(tool, pkg);
        let out = Command::new(tool).arg("-n").arg(&self.image).output().expect(tool);
        assert!(
            out.status.success(),
            "{tool} found errors on the {:?} image: {}{}",
            self.fs,
            stdout(&out),
            stderr(&out)
        );
        self.attach();
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mount.join(rel)
    }
}

impl Drop for Medium {
    fn drop(&mut self) {
        let _ = Command::new("fusermount").arg("-u").arg(&self.mount).status();
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").arg("-d").arg(dev).status();
        }
    }
}

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn print_script(output: &Path) -> std::process::Output {
    keyrite()
        .args(["ceremony", "print", p(&repo("ceremonies/root-init.toml")), "--format", "html", "--output", p(output)])
        .output()
        .expect("keyrite ceremony print")
}

fn the_printed_script_lands_on(fs: Fs) {
    let mut stick = Medium::new(fs);
    let target = stick.path("script.html");
    let out = print_script(&target);
    assert!(out.status.success(), "ceremony print onto {fs:?} failed: {}", stderr(&out));
    let expected = keyrite()
        .args(["ceremony", "print", p(&repo("ceremonies/root-init.toml")), "--format", "html"])
        .output()
        .expect("print to stdout");
    assert!(expected.status.success());

    // Written once: a second run refuses and leaves the first intact.
    let again = print_script(&target);
    assert!(!again.status.success(), "an output on {fs:?} was overwritten");
    assert!(stderr(&again).contains("already exists"), "{}", stderr(&again));

    stick.replug_and_fsck();
    assert_eq!(std::fs::read(&target).expect("read back"), expected.stdout, "the script read back from {fs:?} differs");
    let names = common::list(&stick.mount);
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "temporary files were left on the {fs:?} stick: {names:?}");
}

#[test]
fn the_printed_script_is_written_once_on_a_fat32_stick() {
    the_printed_script_lands_on(Fs::Fat32);
}

#[test]
fn the_printed_script_is_written_once_on_an_exfat_stick() {
    the_printed_script_lands_on(Fs::Exfat);
}

/// A power cut between reserving the name and renaming the bytes into place
/// leaves an empty file; the next run treats it as absent and writes the
/// output, never counting the empty file as one.
fn a_cut_write_is_redone(fs: Fs) {
    let mut stick = Medium::new(fs);
    let target = stick.path("script.html");
    for point in ["files:after-reserve", "files:after-temp"] {
        let _ = std::fs::remove_file(&target);
        let crashed = print_script_crashing_at(&target, point);
        assert!(!crashed.status.success(), "the crash point {point} was not reached");
        assert_eq!(std::fs::metadata(&target).expect("reservation").len(), 0, "after {point}");
        stick.replug_and_fsck();
        let out = print_script(&target);
        assert!(out.status.success(), "after a crash at {point} on {fs:?}: {}", stderr(&out));
        assert!(std::fs::metadata(&target).expect("output").len() > 0);
    }
}

fn print_script_crashing_at(output: &Path, point: &str) -> std::process::Output {
    keyrite()
        .env("KEYRITE_CRASH_AT", point)
        .args(["ceremony", "print", p(&repo("ceremonies/root-init.toml")), "--format", "html", "--output", p(output)])
        .output()
        .expect("keyrite ceremony print")
}

#[test]
fn a_write_cut_by_a_crash_on_a_fat32_stick_is_redone() {
    a_cut_write_is_redone(Fs::Fat32);
}

#[test]
fn a_write_cut_by_a_crash_on_an_exfat_stick_is_redone() {
    a_cut_write_is_redone(Fs::Exfat);
}

/// The intermediate host writes its request bundle onto the stick; after
/// the stick is unplugged and checked, the bundle opens with every hash
/// right.
fn the_request_bundle_travels_on(fs: Fs) {
    const PIN: &str = "int-user-pin-4711";
    let hsm = SoftHsm::new();
    hsm.init_token("int-hsm", "int-so-pin-0815", PIN);
    let work = tempfile::tempdir().expect("work");
    let env = format!(
        "output_dir = \"issuer\"\n[pkcs11]\nmodule = \"{}\"\ntoken_label = \"int-hsm\"\npin = {{ env = \"KEYRITE_TEST_PIN\" }}\n",
        hsm.module.display()
    );
    std::fs::write(work.path().join("env.toml"), env).expect("env");
    let mut stick = Medium::new(fs);
    let bundle = stick.path("request");
    let out = keyrite()
        .current_dir(work.path())
        .env("SOFTHSM2_CONF", &hsm.conf)
        .env("KEYRITE_TEST_PIN", PIN)
        .args(["intermediate", "request", "--env", "env.toml", "--out", p(&bundle), "--label", "issuing-e1"])
        .args(["--subject-cn", "keyrite Example Issuing CA E1", "--requester", "ops@issuing-ca-1"])
        .output()
        .expect("keyrite intermediate request");
    assert!(out.status.success(), "request onto {fs:?} failed: {}{}", stdout(&out), stderr(&out));
    stick.replug_and_fsck();
    let opened = keyrite::transfer::Bundle::open(
        &bundle,
        keyrite::transfer::BundleKind::IntermediateRequest,
        &keyrite::transfer::Limits::default(),
    )
    .unwrap_or_else(|e| panic!("the request bundle read back from {fs:?} does not open: {e}"));
    let csr = opened.file("csr.pem").expect("csr.pem in the bundle");
    assert!(csr.starts_with(b"-----BEGIN CERTIFICATE REQUEST-----"));
}

#[test]
fn the_request_bundle_travels_on_a_fat32_stick() {
    the_request_bundle_travels_on(Fs::Fat32);
}

#[test]
fn the_request_bundle_travels_on_an_exfat_stick() {
    the_request_bundle_travels_on(Fs::Exfat);
}
