//! What the RPM importers (`rpm-updateinfo`, `osv` for AlmaLinux, Rocky Linux, openSUSE
//! and SUSE) share: advisory types as classifications, the packages whose update needs a
//! restart, and the architectures a package can be built for.

/// The classification of an advisory type: `updateinfo.xml`'s `type` attribute (Fedora,
/// RHEL and clones: security, bugfix, enhancement, newpackage; SUSE: security,
/// recommended, optional, feature). None for a type no distribution uses.
pub fn classification(kind: &str) -> Option<&'static str> {
    match kind.trim().to_ascii_lowercase().as_str() {
        "security" => Some("Security Updates"),
        "bugfix" | "recommended" | "optional" => Some("Updates"),
        "enhancement" | "newpackage" | "feature" => Some("Feature Packs"),
        _ => None,
    }
}

/// The advisory type an advisory id names: Red Hat and its rebuilds (`RHSA`, `ALSA`,
/// `RLSA`, `ELSA`, `…BA`, `…EA`) and SUSE (`SUSE-SU-`, `openSUSE-SU-`, `-RU-`, `-FU-`,
/// `-OU-`). None when the id does not say.
pub fn kind_from_id(id: &str) -> Option<&'static str> {
    let upper = id.to_ascii_uppercase();
    let prefix = upper.split(['-', ':']).next().unwrap_or_default();
    if prefix.len() == 4 && prefix.ends_with('A') {
        return match &prefix[2..3] {
            "S" => Some("security"),
            "B" => Some("bugfix"),
            "E" => Some("enhancement"),
            _ => None,
        };
    }
    if upper.starts_with("SUSE-") || upper.starts_with("OPENSUSE-") {
        return match upper.split('-').nth(1) {
            Some("SU") => Some("security"),
            Some("RU") => Some("recommended"),
            Some("OU") => Some("optional"),
            Some("FU") => Some("feature"),
            _ => None,
        };
    }
    None
}

/// Packages whose update takes effect only after a restart: the list dnf's
/// `needs-restarting -r` uses (kernel, glibc, systemd, dbus, firmware, microcode, zlib),
/// plus the kernel flavours of SUSE (`kernel-default`, `kernel-rt`…) and Oracle (`kernel-uek`).
pub fn needs_reboot(package: &str) -> bool {
    const NEED_REBOOT: [&str; 14] = [
        "kernel",
        "kernel-core",
        "kernel-rt",
        "kernel-rt-core",
        "glibc",
        "linux-firmware",
        "systemd",
        "dbus",
        "dbus-broker",
        "dbus-daemon",
        "microcode_ctl",
        "zlib",
        "kernel-uek",
        "kernel-uek-core",
    ];
    NEED_REBOOT.contains(&package)
        || matches!(package, "kernel-default" | "kernel-azure" | "kernel-64k" | "kernel-64k-core" | "ucode-intel")
}

/// Architectures RPM packages are built for (rpm's `rpmrc` arch list, as distributions use
/// it), plus `noarch` and the source arches `src`/`nosrc`.
pub const ARCHITECTURES: [&str; 29] = [
    "noarch",
    "src",
    "nosrc",
    "x86_64",
    "i386",
    "i486",
    "i586",
    "i686",
    "athlon",
    "aarch64",
    "armv7hl",
    "armv7l",
    "armv6hl",
    "ppc",
    "ppc64",
    "ppc64le",
    "ppc64p7",
    "s390",
    "s390x",
    "riscv64",
    "loongarch64",
    "ia64",
    "alpha",
    "sparc",
    "sparc64",
    "sparcv9",
    "mips",
    "mipsel",
    "x86_64_v2",
];

/// A binary package architecture (`src`/`nosrc` are source packages, not installed).
pub fn is_binary_arch(arch: &str) -> bool {
    ARCHITECTURES.contains(&arch) && !matches!(arch, "src" | "nosrc")
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn advisory_ids_and_types_give_the_classification() {
        for (id, class) in [
            ("ALSA-2024:1234", "Security Updates"),
            ("RLBA-2023:0001", "Updates"),
            ("ALEA-2022:8256", "Feature Packs"),
            ("RHSA-2024:0001", "Security Updates"),
            ("SUSE-SU-2024:0123-1", "Security Updates"),
            ("openSUSE-SU-2024:0001-1", "Security Updates"),
            ("SUSE-RU-2024:0123-1", "Updates"),
            ("SUSE-FU-2024:0123-1", "Feature Packs"),
        ] {
            assert_eq!(kind_from_id(id).and_then(classification), Some(class), "{id}");
        }
        assert_eq!(kind_from_id("FEDORA-2007-78"), None);
        assert_eq!(kind_from_id("CVE-2024-1"), None);
        assert_eq!(classification("Security"), Some("Security Updates"));
        assert_eq!(classification("hotfix"), None);
    }

    #[test]
    fn kernels_and_core_libraries_need_a_restart() {
        assert!(needs_reboot("kernel") && needs_reboot("kernel-core") && needs_reboot("glibc"));
        assert!(needs_reboot("kernel-default"));
        assert!(!needs_reboot("kernel-headers") && !needs_reboot("kernel-tools") && !needs_reboot("openssl"));
    }
}
