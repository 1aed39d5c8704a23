#!/usr/bin/env python3
"""Generate the example update catalog and simulated fleet for patchops.

Writes two files, deterministically (fixed seeds, Python 3.11 standard library only):

  examples/repo/catalog/updates.yaml
      A native catalog (format patchops.dev/native-catalog/v1) of ~350 updates released
      from 2025-12 to 2026-11: monthly cumulative updates (Patch Tuesday, the second
      Tuesday of each month) for six Windows products, each superseding the previous
      month's; .NET Framework cumulative updates; quarterly servicing stack updates that
      are prerequisites of the cumulative updates on Windows 10 / Server 2019 / 2022;
      Office LTSC 2021 and Microsoft Edge security updates; the Malicious Software
      Removal Tool (Update Rollups); weekly Defender definition updates; a few Critical
      Updates, Feature Packs and Updates (three of them expired); and Ubuntu 24.04
      security notices (USNs).

  examples/fleet.yaml
      A FleetSpec (src/sim/mod.rs) of 1,200 machines in Berlin, New York and Tokyo:
      workstations (with a 40-machine IT pilot ring), Windows servers and Ubuntu servers.

Rerun from the repository root:

    python3 examples/generate.py

The hand-written resources under examples/repo name some KB numbers of this catalog
(update-lists/2026-11-security.yaml, update-lists/2026-10-superseded.yaml). The script
prints those numbers at the end; if you change the generator, check that they still match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
CATALOG = HERE / "repo" / "catalog" / "updates.yaml"
FLEET = HERE / "fleet.yaml"

SEED = 20261110  # the November 2026 Patch Tuesday
MB = 1024 * 1024

# ---------------------------------------------------------------------------------
# Products. The first element of each tuple is the exact `os` fact the fleet uses:
# the simulator (src/sim/mod.rs) treats an update as installed on a client when it was
# released on or before the client's patch level AND `products` contains the client's
# `os` fact. So every update lists, in `products`, the operating systems it installs on.
# ---------------------------------------------------------------------------------

# (os fact, id slug, name in titles, msu prefix, CU size range in MB, .NET versions)
WINDOWS = [
    ("Windows 11 23H2", "win11-23h2", "Windows 11 Version 23H2", "windows11.0", (610, 780), "3.5 and 4.8.1"),
    ("Windows 11 24H2", "win11-24h2", "Windows 11 Version 24H2", "windows11.0", (680, 910), "3.5 and 4.8.1"),
    ("Windows 10 22H2", "win10-22h2", "Windows 10 Version 22H2", "windows10.0", (640, 760), "3.5, 4.8 and 4.8.1"),
    ("Windows Server 2019", "ws2019", "Windows Server 2019", "windows10.0", (420, 560), "3.5, 4.7.2 and 4.8"),
    ("Windows Server 2022", "ws2022", "Windows Server 2022", "windows10.0", (380, 520), "3.5, 4.8 and 4.8.1"),
    ("Windows Server 2025", "ws2025", "Windows Server 2025", "windows11.0", (520, 700), "3.5 and 4.8.1"),
]
WINDOWS_OS = [w[0] for w in WINDOWS]
WORKSTATION_OS = ["Windows 11 23H2", "Windows 11 24H2", "Windows 10 22H2"]
# Products whose cumulative updates require a separate servicing stack update first.
SSU_PRODUCTS = ["Windows 10 22H2", "Windows Server 2019", "Windows Server 2022"]
SSU_MONTHS = [(2025, 12), (2026, 3), (2026, 6), (2026, 9)]
UBUNTU = "Ubuntu 24.04"
OFFICE = "Microsoft Office LTSC 2021"
EDGE = "Microsoft Edge"
DEFENDER = "Microsoft Defender Antivirus"

MONTHS = [(2025, 12)] + [(2026, m) for m in range(1, 12)]
# "Today" in the story is 2026-11-24; nothing is released after this date.
LAST_RELEASE = dt.date(2026, 11, 23)


def patch_tuesday(year: int, month: int) -> dt.date:
    """The second Tuesday of the month."""
    first = dt.date(year, month, 1)
    first_tuesday = first + dt.timedelta(days=(1 - first.weekday()) % 7)
    return first_tuesday + dt.timedelta(days=7)


def nth_weekday(year: int, month: int, weekday: int, n: int) -> dt.date:
    first = dt.date(year, month, 1)
    return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def sha256_of(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


class Catalog:
    """Collects updates, then numbers KBs in release order and resolves references."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.entries: list[dict] = []
        self.cve_seen: set[str] = set()

    def add(self, **e) -> dict:
        e.setdefault("seq", len(self.entries))
        self.entries.append(e)
        return e

    def cves(self, released: dt.date, count: int) -> list[str]:
        # CVE ids of the release year; numbers grow through the year like MSRC's do.
        year = released.year
        base = 60000 if year == 2025 else 20000 + (released.month - 1) * 3500
        out = []
        while len(out) < count:
            cve = f"CVE-{year}-{self.rng.randrange(base, base + 3000):05d}"
            if cve not in self.cve_seen:
                self.cve_seen.add(cve)
                out.append(cve)
        return sorted(out)

    def number(self) -> None:
        """KB numbers: unique and increasing with the release date (KB50xxxxx)."""
        kb = 5063000
        # A separate generator, so that changes elsewhere do not renumber the KBs the
        # hand-written update lists name.
        steps = random.Random(SEED + 1)
        for e in sorted(self.entries, key=lambda e: (e["released"], e["seq"])):
            if e.get("usn"):
                continue
            kb += steps.randint(1, 37)
            e["kb"] = f"KB{kb}"
            e["id"] = f"KB{kb}-{e['slug']}"
        for e in self.entries:
            e["title"] = e["title"].replace("{KB}", e["kb"])
            for f in e["files"]:
                f["name"] = f["name"].replace("{kb}", e["kb"].lower())
                f["url"] = f["url"].replace("{kb}", e["kb"].lower())
                f["sha256"] = sha256_of(f["name"])
            e["supersedes"] = [s["kb"] for s in e.get("supersedes_refs", [])]
            e["prerequisites"] = [p["kb"] for p in e.get("prerequisite_refs", [])]


def ms_file(rng: random.Random, kind: str, released: dt.date, name: str, size_mb: tuple[float, float]) -> dict:
    size = int(rng.uniform(*size_mb) * MB)
    return {
        "name": name,
        "url": f"https://download.example.invalid/msdownload/update/software/{kind}/{released:%Y/%m}/{name}",
        "size": size,
    }


def build_catalog(rng: random.Random) -> Catalog:
    cat = Catalog(rng)
    prev_cu: dict[str, dict] = {}
    prev_net: dict[str, dict] = {}
    ssu: dict[str, dict] = {}
    prev_office = prev_edge = prev_msrt = None

    for year, month in MONTHS:
        pt = patch_tuesday(year, month)
        ym = f"{year}-{month:02d}"

        # Servicing stack updates, quarterly, released first on Patch Tuesday.
        if (year, month) in SSU_MONTHS:
            for os_, slug, name, prefix, _, _ in WINDOWS:
                if os_ not in SSU_PRODUCTS:
                    continue
                e = cat.add(
                    slug=slug,
                    title=f"{ym} Servicing Stack Update for {name} for x64-based Systems ({{KB}})",
                    classification="Servicing Stack Updates",
                    severity="Unspecified",
                    products=[os_],
                    released=pt,
                    supersedes_refs=[ssu[os_]] if os_ in ssu else [],
                    reboot=True,
                    max_run_time="20m",
                    installable={"fact": {"name": "os", "equals": os_}},
                    files=[ms_file(rng, "secu", pt, f"{prefix}-{{kb}}-x64.msu", (11, 19))],
                )
                ssu[os_] = e

        # Monthly cumulative updates (Security Updates), one per Windows product.
        for os_, slug, name, prefix, size, _ in WINDOWS:
            severity = "Critical" if rng.random() < 0.8 else "Important"
            e = cat.add(
                slug=slug,
                title=f"{ym} Cumulative Update for {name} for x64-based Systems ({{KB}})",
                classification="Security Updates",
                severity=severity,
                products=[os_],
                released=pt,
                supersedes_refs=[prev_cu[os_]] if os_ in prev_cu else [],
                prerequisite_refs=[ssu[os_]] if os_ in ssu else [],
                reboot=True,
                max_run_time="60m",
                cves=cat.cves(pt, rng.randint(4, 9)),
                installable={"fact": {"name": "os", "equals": os_}},
                files=[ms_file(rng, "secu", pt, f"{prefix}-{{kb}}-x64.msu", size)],
            )
            prev_cu[os_] = e

        # .NET Framework cumulative updates (Security Updates).
        for os_, slug, name, prefix, _, net in WINDOWS:
            e = cat.add(
                slug=f"{slug}-ndp",
                title=f"{ym} Cumulative Update for .NET Framework {net} for {name} for x64 ({{KB}})",
                classification="Security Updates",
                severity="Important" if rng.random() < 0.85 else "Moderate",
                products=[os_],
                released=pt,
                supersedes_refs=[prev_net[os_]] if os_ in prev_net else [],
                reboot=True,
                max_run_time="60m",
                cves=cat.cves(pt, rng.randint(1, 3)),
                installable={"fact": {"name": "os", "equals": os_}},
                files=[ms_file(rng, "secu", pt, f"{prefix}-{{kb}}-x64-ndp481.msu", (55, 95))],
            )
            prev_net[os_] = e

        # Office LTSC 2021: installed on workstations that have the `office` fact. The
        # workstation operating systems are listed in `products` too, so that the
        # simulator installs Office updates by patch level like the OS updates (without
        # them every Office update would stay Required on every machine forever).
        build = 21000 + MONTHS.index((year, month)) * 37 + rng.randint(0, 30)
        e = cat.add(
            slug="office2021",
            title=f"{ym} Security Update for Microsoft Office LTSC 2021 (Version 2108, Build 14332.{build}) ({{KB}})",
            classification="Security Updates",
            severity="Critical" if rng.random() < 0.25 else "Important",
            products=[OFFICE] + WORKSTATION_OS,
            released=pt,
            supersedes_refs=[prev_office] if prev_office else [],
            reboot=False,
            max_run_time="30m",
            cves=cat.cves(pt, rng.randint(2, 6)),
            installable={"all": [
                {"fact": {"name": "os", "in": WORKSTATION_OS}},
                {"fact": {"name": "office", "equals": "LTSC 2021"}},
            ]},
            files=[ms_file(rng, "secu", pt, f"office-ltsc2021-{{kb}}-x64.cab", (90, 310))],
        )
        prev_office = e

        # Malicious Software Removal Tool: Update Rollups, all Windows products.
        msrt = 5.137 + MONTHS.index((year, month)) / 1000
        e = cat.add(
            slug="msrt-x64",
            title=f"Windows Malicious Software Removal Tool x64 - v{msrt:.3f} ({{KB}})",
            classification="Update Rollups",
            severity="Unspecified",
            products=list(WINDOWS_OS),
            released=pt,
            supersedes_refs=[prev_msrt] if prev_msrt else [],
            installable={"fact": {"name": "os", "in": WINDOWS_OS}},
            files=[ms_file(rng, "updt", pt, f"windows-{{kb}}-x64-v{msrt:.3f}.exe", (75, 90))],
        )
        prev_msrt = e

        # Microsoft Edge (Stable), two days after Patch Tuesday; on every Windows product.
        major = 143 + MONTHS.index((year, month))
        version = f"{major}.0.{3650 + 60 * MONTHS.index((year, month))}.{rng.randint(40, 120)}"
        released = pt + dt.timedelta(days=2)
        e = cat.add(
            slug="edge-x64",
            title=f"Microsoft Edge-Stable Channel Version {version} Update for x64 based Editions (Build {version}) ({{KB}})",
            classification="Security Updates",
            severity=rng.choices(["Important", "Moderate", "Low"], [5, 3, 2])[0],
            products=[EDGE] + WINDOWS_OS,
            released=released,
            supersedes_refs=[prev_edge] if prev_edge else [],
            cves=cat.cves(released, rng.randint(1, 5)),
            installable={"fact": {"name": "os", "in": WINDOWS_OS}},
            files=[ms_file(rng, "secu", released, f"MicrosoftEdge_X64_{version}_{{kb}}.exe", (160, 185))],
        )
        prev_edge = e

    # Defender definitions: weekly (Mondays) here; real ones come several times a day.
    prev_def = None
    day = dt.date(2025, 12, 1)
    week = 0
    while day <= dt.date(2026, 11, 16):
        version = f"1.{441 + week * 2}.{rng.randint(10, 640)}.0"
        e = cat.add(
            slug="defender",
            title=f"Security Intelligence Update for Microsoft Defender Antivirus - {{KB}} (Version {version}) - Current Channel (Broad)",
            classification="Definition Updates",
            severity="Unspecified",
            products=[DEFENDER] + WINDOWS_OS,
            released=day,
            supersedes_refs=[prev_def] if prev_def else [],
            max_run_time="5m",
            installable={"fact": {"name": "os", "in": WINDOWS_OS}},
            files=[ms_file(rng, "defu", day, f"am_delta_patch_{version}_{{kb}}.exe", (0.8, 4.5))],
        )
        prev_def = e
        day += dt.timedelta(days=7)
        week += 1

    # Critical Updates: non-security fixes, on the fourth Tuesday of some months.
    for i, (year, month) in enumerate(MONTHS[1:9]):
        os_, slug, name, prefix, _, _ = WINDOWS[rng.randrange(len(WINDOWS))]
        released = nth_weekday(year, month, 1, 4)
        cat.add(
            slug=slug,
            title=f"{year}-{month:02d} Update for {name} for x64-based Systems ({{KB}})",
            classification="Critical Updates",
            severity="Unspecified",
            products=[os_],
            released=released,
            expired=i == 0,  # pulled by the vendor after reports of boot loops
            installable={"fact": {"name": "os", "equals": os_}},
            files=[ms_file(rng, "crup", released, f"{prefix}-{{kb}}-x64.msu", (4, 48))],
        )

    # A few Feature Packs and Updates.
    w10 = next(w for w in WINDOWS if w[0] == "Windows 10 22H2")
    esu1 = cat.add(
        slug="win10-22h2",
        title="2025-12 Extended Security Updates (ESU) Licensing Preparation Package for Windows 10 Version 22H2 for x64-based Systems ({KB})",
        classification="Updates",
        severity="Unspecified",
        products=[w10[0]],
        released=patch_tuesday(2025, 12),
        expired=True,
        installable={"fact": {"name": "os", "equals": w10[0]}},
        files=[ms_file(rng, "updt", patch_tuesday(2025, 12), "windows10.0-{kb}-x64.msu", (2, 6))],
    )
    cat.add(
        slug="win10-22h2",
        title="2026-03 Extended Security Updates (ESU) Licensing Preparation Package for Windows 10 Version 22H2 for x64-based Systems ({KB})",
        classification="Updates",
        severity="Unspecified",
        products=[w10[0]],
        released=patch_tuesday(2026, 3),
        supersedes_refs=[esu1],
        installable={"fact": {"name": "os", "equals": w10[0]}},
        files=[ms_file(rng, "updt", patch_tuesday(2026, 3), "windows10.0-{kb}-x64.msu", (2, 6))],
    )
    for (year, month), expired in [((2025, 12), True), ((2026, 7), False)]:
        released = nth_weekday(year, month, 1, 3)
        cat.add(
            slug="office2021",
            title="Update for Microsoft Office LTSC 2021 (Version 2108) ({KB})",
            classification="Updates",
            severity="Unspecified",
            products=[OFFICE] + WORKSTATION_OS,
            released=released,
            expired=expired,
            installable={"all": [
                {"fact": {"name": "os", "in": WORKSTATION_OS}},
                {"fact": {"name": "office", "equals": "LTSC 2021"}},
            ]},
            files=[ms_file(rng, "updt", released, "office-ltsc2021-{kb}-x64.cab", (20, 60))],
        )
    released = nth_weekday(2026, 4, 1, 4)
    cat.add(
        slug="win11-24h2",
        title="Windows Feature Experience Pack 1000.26100.214.0 for Windows 11 Version 24H2 for x64-based Systems ({KB})",
        classification="Feature Packs",
        severity="Unspecified",
        products=["Windows 11 24H2"],
        released=released,
        installable={"fact": {"name": "os", "equals": "Windows 11 24H2"}},
        files=[ms_file(rng, "ftpk", released, "windows11.0-{kb}-x64.cab", (35, 45))],
    )
    released = nth_weekday(2026, 10, 1, 4)
    cat.add(
        slug="win11-24h2",
        title="Windows Feature Experience Pack 1000.26100.263.0 for Windows 11 Version 24H2 for x64-based Systems ({KB})",
        classification="Feature Packs",
        severity="Unspecified",
        products=["Windows 11 24H2"],
        released=released,
        supersedes_refs=[cat.entries[-1]],
        installable={"fact": {"name": "os", "equals": "Windows 11 24H2"}},
        files=[ms_file(rng, "ftpk", released, "windows11.0-{kb}-x64.cab", (35, 45))],
    )
    released = nth_weekday(2026, 6, 1, 4)
    cat.add(
        slug="ws2022-ndp",
        title="Microsoft .NET Framework 4.8.1 for Windows Server 2022 for x64 ({KB})",
        classification="Feature Packs",
        severity="Unspecified",
        products=["Windows Server 2022"],
        released=released,
        reboot=True,
        installable={"fact": {"name": "os", "equals": "Windows Server 2022"}},
        files=[ms_file(rng, "ftpk", released, "ndp481-{kb}-x64-allos-enu.exe", (68, 72))],
    )

    build_ubuntu(cat, random.Random(SEED + 2))
    cat.number()
    assert all(e["released"] <= LAST_RELEASE for e in cat.entries), "an update released in the future"
    assert len({e["id"] for e in cat.entries}) == len(cat.entries), "duplicate update id"
    return cat


# Ubuntu 24.04 (noble) security notices: (source package, version before the first fix,
# title subject, binary packages, size range in MB)
UBUNTU_PACKAGES = [
    ("openssl", "3.0.13-0ubuntu3", "OpenSSL", ["openssl", "libssl3t64"], (0.9, 2.1)),
    ("curl", "8.5.0-2ubuntu10", "curl", ["curl", "libcurl4t64"], (0.2, 0.5)),
    ("glibc", "2.39-0ubuntu8", "GNU C Library", ["libc6", "libc-bin"], (1.5, 3.3)),
    ("python3.12", "3.12.3-1ubuntu0", "Python", ["python3.12", "libpython3.12-stdlib"], (0.6, 2.0)),
    ("vim", "2:9.1.0016-1ubuntu7", "Vim", ["vim", "vim-runtime"], (1.5, 7.0)),
    ("sudo", "1.9.15p5-3ubuntu5", "sudo", ["sudo"], (0.8, 1.0)),
    ("openssh", "1:9.6p1-3ubuntu13", "OpenSSH", ["openssh-server", "openssh-client"], (0.4, 1.0)),
    ("git", "1:2.43.0-1ubuntu7", "Git", ["git", "git-man"], (1.0, 4.0)),
    ("nginx", "1.24.0-2ubuntu7", "nginx", ["nginx", "nginx-common"], (0.1, 0.6)),
    ("libxml2", "2.9.14+dfsg-1.3ubuntu3", "libxml2", ["libxml2"], (0.6, 0.8)),
    ("ffmpeg", "7:6.1.1-3ubuntu5", "FFmpeg", ["libavcodec60", "libavformat60"], (1.0, 5.0)),
    ("imagemagick", "8:6.9.12.98+dfsg1-5.2build2", "ImageMagick", ["imagemagick-6.q16", "libmagickcore-6.q16-7t64"], (0.2, 2.0)),
    ("postgresql-16", "16.9-0ubuntu0.24.04", "PostgreSQL", ["postgresql-16", "postgresql-client-16"], (1.5, 17.0)),
    ("php8.3", "8.3.6-0ubuntu0.24.04", "PHP", ["php8.3-cli", "php8.3-common"], (0.8, 2.0)),
    ("gnutls28", "3.8.3-1.1ubuntu3", "GnuTLS", ["libgnutls30t64"], (0.9, 1.0)),
    ("expat", "2.6.1-2ubuntu0", "Expat", ["libexpat1"], (0.08, 0.1)),
    ("libtiff", "4.5.1+git230720-4ubuntu2", "LibTIFF", ["libtiff6"], (0.2, 0.3)),
    ("golang-1.22", "1.22.2-2ubuntu0", "Go", ["golang-1.22-go"], (25.0, 30.0)),
    ("systemd", "255.4-1ubuntu8", "systemd", ["systemd", "libsystemd0"], (3.0, 4.0)),
    ("rsync", "3.2.7-1ubuntu1", "rsync", ["rsync"], (0.4, 0.5)),
    ("apache2", "2.4.58-1ubuntu8", "Apache HTTP Server", ["apache2", "apache2-bin"], (0.1, 1.4)),
    ("bind9", "1:9.18.30-0ubuntu0.24.04", "Bind", ["bind9", "bind9-libs"], (0.3, 1.3)),
    ("libssh", "0.10.6-2ubuntu0", "libssh", ["libssh-4"], (0.2, 0.3)),
    ("containerd", "1.7.24-0ubuntu1~24.04", "containerd", ["containerd"], (30.0, 40.0)),
    ("runc", "1.1.12-0ubuntu3", "runC", ["runc"], (4.0, 5.0)),
    ("docker.io", "26.1.3-0ubuntu1~24.04", "Docker", ["docker.io"], (25.0, 32.0)),
    ("qemu", "1:8.2.2+ds-0ubuntu1", "QEMU", ["qemu-system-x86", "qemu-utils"], (10.0, 14.0)),
    ("samba", "2:4.19.5+dfsg-4ubuntu9", "Samba", ["samba", "samba-libs"], (1.0, 6.0)),
    ("krb5", "1.20.1-6ubuntu2", "Kerberos", ["libkrb5-3", "libgssapi-krb5-2"], (0.1, 0.4)),
    ("libarchive", "3.7.2-2ubuntu0", "libarchive", ["libarchive13t64"], (0.3, 0.4)),
    ("wget", "1.21.4-1ubuntu4", "Wget", ["wget"], (0.3, 0.4)),
    ("cups", "2.4.7-1.2ubuntu7", "CUPS", ["cups", "libcups2t64"], (0.2, 0.3)),
    ("less", "590-2ubuntu2", "less", ["less"], (0.1, 0.2)),
    ("nodejs", "18.19.1+dfsg-6ubuntu5", "Node.js", ["nodejs", "libnode109"], (0.1, 12.0)),
    ("intel-microcode", "3.20250512.0ubuntu0.24.04", "Intel Microcode", ["intel-microcode"], (7.0, 9.0)),
]


def build_ubuntu(cat: Catalog, rng: random.Random) -> None:
    usn = 7150
    revision: dict[str, int] = {}
    abi = 90
    for i, (year, month) in enumerate(MONTHS):
        last_day = 21 if (year, month) == (2026, 11) else 27
        days = sorted(rng.sample(range(1, last_day), rng.randint(6, 10)))
        kernel_day = days[len(days) // 2] if i % 2 == 0 else None
        for day in days:
            released = dt.date(year, month, day)
            if released.weekday() >= 5:  # notices go out on weekdays
                released -= dt.timedelta(days=released.weekday() - 4)
            if day == kernel_day:
                abi += rng.randint(2, 5)
                names = [f"linux-image-6.8.0-{abi}-generic_6.8.0-{abi}.{abi}_amd64.deb",
                         f"linux-modules-6.8.0-{abi}-generic_6.8.0-{abi}.{abi}_amd64.deb"]
                sizes = [(14.0, 16.0), (38.0, 62.0)]
                title, severity, reboot, src = "Linux kernel vulnerabilities", "Important", True, "linux"
                ncve = rng.randint(15, 40)
            else:
                src, base, subject, binaries, size = UBUNTU_PACKAGES[rng.randrange(len(UBUNTU_PACKAGES))]
                revision[src] = revision.get(src, 0) + 1
                # Debian file names leave out the epoch ("1:").
                version = f"{base.split(':', 1)[-1]}.{revision[src]}"
                names = [f"{b}_{version}_amd64.deb" for b in binaries]
                sizes = [size] * len(binaries)
                ncve = rng.randint(1, 6)
                title = f"{subject} {'vulnerability' if ncve == 1 else 'vulnerabilities'}"
                severity = rng.choices(["Critical", "Important", "Moderate", "Low"], [3, 35, 47, 15])[0]
                reboot = src == "intel-microcode"
            kb = f"USN-{usn}-1"
            e = cat.add(
                usn=True,
                kb=kb,
                id=f"{kb}-noble",
                title=f"{kb}: {title}",
                classification="Security Updates",
                severity=severity,
                products=[UBUNTU],
                released=released,
                reboot=reboot,
                cves=cat.cves(released - dt.timedelta(days=20), ncve),
                installable={"fact": {"name": "os", "equals": UBUNTU}},
                files=[{
                    "name": n,
                    "url": f"https://download.example.invalid/ubuntu/pool/main/{src[0]}/{src}/{n}",
                    "size": int(rng.uniform(*s) * MB),
                } for n, s in zip(names, sizes)],
            )
            usn += rng.randint(1, 4)
            # Now and then a regression fix (-2) replaces a notice a few days later.
            fixed = released + dt.timedelta(days=7)  # a week later, same weekday
            if not reboot and rng.random() < 0.04 and fixed.month == month and fixed <= LAST_RELEASE - dt.timedelta(days=3):
                kb2 = kb[: -len("-1")] + "-2"
                cat.add(
                    usn=True,
                    kb=kb2,
                    id=f"{kb2}-noble",
                    title=f"{kb2}: {title.split(' vulnerab')[0]} regression",
                    classification="Security Updates",
                    severity=severity,
                    products=[UBUNTU],
                    released=fixed,
                    supersedes_refs=[e],
                    cves=list(e["cves"]),
                    installable={"fact": {"name": "os", "equals": UBUNTU}},
                    files=[{
                        "name": f["name"].replace("_amd64.deb", "+1_amd64.deb"),
                        "url": f["url"].replace("_amd64.deb", "+1_amd64.deb"),
                        "size": f["size"] + 1024,
                    } for f in e["files"]],
                )


# ---------------------------------------------------------------------------------
# YAML output (block style, flow style for short lists and rules; strings via JSON,
# which YAML reads as double-quoted scalars).
# ---------------------------------------------------------------------------------

def q(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


def key(k: str) -> str:
    return k if k.isidentifier() else q(k)


def flow(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{key(k)}: {flow(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(flow(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return q(str(v))


def write_catalog(cat: Catalog) -> None:
    entries = sorted(cat.entries, key=lambda e: (e["released"], e["seq"]))
    counts: dict[str, int] = {}
    for e in entries:
        counts[e["classification"]] = counts.get(e["classification"], 0) + 1
    lines = [
        "# GENERATED by examples/generate.py — do not edit by hand; rerun:",
        "#     python3 examples/generate.py",
        "#",
        f"# {len(entries)} updates released 2025-12 … 2026-11 "
        f"({', '.join(f'{n} {c}' for c, n in sorted(counts.items()))}).",
        "# Windows cumulative updates come out on Patch Tuesday (second Tuesday) and supersede",
        "# the previous month's; servicing stack updates are prerequisites of the Windows 10 /",
        "# Server 2019 / Server 2022 cumulative updates. Office, Edge and Defender updates list",
        "# the Windows products they install on in `products` (the simulated fleet installs an",
        "# update when `products` holds the machine's `os` fact and it was released by the",
        "# machine's patch level). Schema: schemas/native-catalog.schema.json.",
        "format: patchops.dev/native-catalog/v1",
        "updates:",
    ]
    for e in entries:
        lines.append(f"  - id: {e['id']}")
        lines.append(f"    kb: {e['kb']}")
        lines.append(f"    title: {q(e['title'])}")
        lines.append(f"    classification: {e['classification']}")
        lines.append(f"    severity: {e['severity']}")
        lines.append(f"    products: {flow(e['products'])}")
        lines.append(f"    released: {e['released'].isoformat()}")
        if e["supersedes"]:
            lines.append(f"    supersedes: {flow(e['supersedes'])}")
        if e.get("expired"):
            lines.append("    expired: true")
        if e.get("reboot"):
            lines.append("    rebootRequired: true")
        if e.get("max_run_time"):
            lines.append(f"    maxRunTime: {e['max_run_time']}")
        if e.get("cves"):
            lines.append(f"    cves: {flow(e['cves'])}")
        lines.append("    applicability:")
        lines.append(f"      isInstallable: {flow(e['installable'])}")
        lines.append(f"      isInstalled: {{installed: {e['kb']}}}")
        if e["prerequisites"]:
            lines.append(f"      prerequisites: {flow(e['prerequisites'])}")
        lines.append("    files:")
        for f in e["files"]:
            lines.append(f"      - name: {q(f['name'])}")
            lines.append(f"        url: {q(f['url'])}")
            lines.append(f"        sha256: {f['sha256']}")
            lines.append(f"        size: {f['size']}")
    CATALOG.parent.mkdir(parents=True, exist_ok=True)
    CATALOG.write_text("\n".join(lines) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------
# The fleet. Today (in the story) is late November 2026: the November updates came out
# on 2026-11-10. Patch levels ("patchedThrough": everything released on or before the
# date is installed) mix machines still at the October level with machines that already
# took the November updates (pilot at once, Tokyo servers in their daily window, New York
# servers on the Saturday after Patch Tuesday, Berlin servers on Saturdays) and a tail of
# machines lagging months behind.
# ---------------------------------------------------------------------------------

STANDARD_RATES = {
    "neverScannedRate": 0.01,   # registered, never sent a scan: Unknown
    "scanFailureRate": 0.02,    # last scan failed (0x8024402C): Unknown
    "oldAgentRate": 0.01,       # agent 0.9.0, below minimumAgentVersion 2.0.0: Unknown
    "pendingRebootRate": 0.03,  # per installed update that needs a restart: still Required
    "installFailureRate": 0.01, # per missing update: the last install attempt failed
}

# Packages of an AlmaLinux 9 server as patched at the end of June 2026: each the version
# the last advisory before 2026-07-01 fixed it at (in the full dump,
# tests/data/rpm/almalinux9-osv.zip). The simulated patch level (patchedThrough) raises
# them as the July and August advisories of examples/repo/catalog/almalinux9-osv-2026-07.zip do.
ALMALINUX_2026_06 = {
    "kernel": "5.14.0-687.20.1.el9_8", "kernel-core": "5.14.0-687.20.1.el9_8", "glibc": "2.34-272.el9_8",
    "curl": "7.76.1-35.el9_7.3", "libcurl": "7.76.1-35.el9_7.3", "openssh": "9.9p1-7.el9_8.alma.1",
    "openssh-server": "9.9p1-7.el9_8.alma.1", "python3": "3.9.25-7.el9_8", "python3-libs": "3.9.25-7.el9_8",
    "bind-libs": "32:9.16.23-40.el9_8.2", "httpd": "2.4.62-13.el9_8.1", "libxml2": "2.9.13-14.el9_8.1",
    "vim-minimal": "2:8.2.2637-26.el9_8.6", "podman": "6:5.8.2-3.el9_8", "libtiff": "4.4.0-18.el9_8",
    "libarchive": "3.5.3-9.el9_7", "buildah": "2:1.43.1-2.el9_8", "skopeo": "2:1.22.2-6.el9_8",
    "golang": "1.26.4-1.el9_8", "unbound-libs": "1.24.2-3.el9_8.1", "cups": "1:2.3.3op2-34.el9_7.2",
}

WORKSTATION_PATCH = {"2026-11-23": 30, "2026-11-16": 22, "2026-10-31": 33, "2026-09-30": 8, "2026-07-31": 4, "2026-03-31": 3}

FLEET_GROUPS = [
    ("IT pilot ring in Berlin: gets every deployment first, no maintenance window.",
     dict(count=40, namePrefix="ber-it",
          facts={"role": "workstation", "site": "BER", "ring": "pilot", "office": "LTSC 2021"},
          os={"Windows 11 24H2": 75, "Windows 11 23H2": 15, "Windows 10 22H2": 10},
          patchedThrough={"2026-11-23": 92, "2026-11-12": 6, "2026-10-31": 2},
          rates={"neverScannedRate": 0.0, "scanFailureRate": 0.01, "oldAgentRate": 0.0,
                 "pendingRebootRate": 0.01, "installFailureRate": 0.01})),
    ("Berlin office workstations (lunchtime maintenance window).",
     dict(count=275, namePrefix="ber-ws",
          facts={"role": "workstation", "site": "BER", "ring": "broad", "office": "LTSC 2021"},
          os={"Windows 11 24H2": 55, "Windows 11 23H2": 30, "Windows 10 22H2": 15},
          patchedThrough=WORKSTATION_PATCH, rates=STANDARD_RATES)),
    ("Berlin kiosk and lab machines: no Office, older builds, lagging behind.",
     dict(count=25, namePrefix="ber-kiosk",
          facts={"role": "workstation", "site": "BER", "ring": "broad"},
          os={"Windows 10 22H2": 60, "Windows 11 23H2": 40},
          patchedThrough={"2026-10-31": 50, "2026-08-31": 30, "2026-05-31": 20},
          rates=STANDARD_RATES)),
    ("New York office workstations.",
     dict(count=270, namePrefix="nyc-ws",
          facts={"role": "workstation", "site": "NYC", "ring": "broad", "office": "LTSC 2021"},
          os={"Windows 11 24H2": 65, "Windows 11 23H2": 25, "Windows 10 22H2": 10},
          patchedThrough=WORKSTATION_PATCH, rates=STANDARD_RATES)),
    ("Tokyo office workstations: more Windows 10 still in use, a little behind.",
     dict(count=200, namePrefix="tyo-ws",
          facts={"role": "workstation", "site": "TYO", "ring": "broad", "office": "LTSC 2021"},
          os={"Windows 11 24H2": 40, "Windows 11 23H2": 35, "Windows 10 22H2": 25},
          patchedThrough={"2026-11-23": 22, "2026-11-16": 20, "2026-10-31": 38, "2026-09-30": 12, "2026-06-30": 5, "2026-01-31": 3},
          rates=STANDARD_RATES)),
    ("Berlin Windows servers: Saturday 02:00 window, so half took November on 2026-11-21.",
     dict(count=60, namePrefix="ber-srv",
          facts={"role": "server", "site": "BER", "ring": "broad"},
          os={"Windows Server 2019": 25, "Windows Server 2022": 50, "Windows Server 2025": 25},
          patchedThrough={"2026-11-22": 45, "2026-10-31": 40, "2026-08-31": 10, "2026-02-28": 5},
          rates=STANDARD_RATES)),
    ("New York Windows servers: window on the Saturday after Patch Tuesday (2026-11-14).",
     dict(count=80, namePrefix="nyc-srv",
          facts={"role": "server", "site": "NYC", "ring": "broad"},
          os={"Windows Server 2019": 35, "Windows Server 2022": 45, "Windows Server 2025": 20},
          patchedThrough={"2026-11-15": 60, "2026-10-31": 25, "2026-09-30": 10, "2026-05-31": 5},
          rates=STANDARD_RATES)),
    ("Tokyo Windows servers: daily 01:00 window, mostly current.",
     dict(count=40, namePrefix="tyo-srv",
          facts={"role": "server", "site": "TYO", "ring": "broad"},
          os={"Windows Server 2022": 60, "Windows Server 2025": 40},
          patchedThrough={"2026-11-23": 65, "2026-10-31": 25, "2026-07-31": 10},
          rates=STANDARD_RATES)),
] + [
    (f"{site} Ubuntu servers (unattended-upgrades, mostly current; few reboot-pending kernels).",
     dict(count=count, namePrefix=f"{site.lower()}-lnx",
          facts={"role": "server", "site": site, "ring": "broad"},
          os={UBUNTU: 100},
          patchedThrough={"2026-11-22": 55, "2026-11-15": 25, "2026-10-31": 12, "2026-06-30": 8},
          rates=dict(STANDARD_RATES, pendingRebootRate=0.01)))
    for site, count in [("BER", 90), ("NYC", 70), ("TYO", 50)]
] + [
    (f"{site} AlmaLinux 9 servers: real AlmaLinux OSV advisories (catalog/almalinux9.yaml) "
     "over package versions as patched at the end of June 2026.",
     dict(count=count, namePrefix=f"{site.lower()}-alma",
          facts={"role": "server", "site": site, "ring": "broad", "osFamily": "rhel", "osVersion": "9.6"},
          os={"AlmaLinux 9": 100},
          patchedThrough={"2026-08-21": 40, "2026-08-07": 30, "2026-07-24": 20, "2026-06-30": 10},
          packages=ALMALINUX_2026_06,
          rates=STANDARD_RATES))
    for site, count in [("BER", 40), ("NYC", 30)]
]


def write_fleet() -> int:
    total = sum(g["count"] for _, g in FLEET_GROUPS)
    lines = [
        "# GENERATED by examples/generate.py — do not edit by hand; rerun:",
        "#     python3 examples/generate.py",
        "#",
        f"# A simulated fleet of {total} machines (FleetSpec, src/sim/mod.rs) for",
        "#     cargo run --release -- run --path examples/repo --simulate-fleet examples/fleet.yaml --once",
        "# Each group's machines are named <namePrefix>-0001…; every random choice (os, patch",
        "# level, failures) comes from `seed`, so the same file gives the same fleet.",
        "# Facts the collections select on: role (workstation/server), site (BER/NYC/TYO),",
        "# ring (pilot/broad), office (\"LTSC 2021\" on most workstations), os (added per",
        "# machine from the `os` weights). patchedThrough: every update released on or before",
        "# the date (for the machine's os) is installed, chosen by weight. packages: what every",
        "# member has installed before its patch level (package rules test these).",
        "seed: 20261110",
        'agentVersion: "2.1.0"',
        "groups:",
    ]
    for comment, g in FLEET_GROUPS:
        lines.append(f"  # {comment}")
        lines.append(f"  - count: {g['count']}")
        lines.append(f"    namePrefix: {g['namePrefix']}")
        lines.append(f"    facts: {flow(g['facts'])}")
        lines.append(f"    os: {flow(g['os'])}")
        lines.append(f"    patchedThrough: {flow(g['patchedThrough'])}")
        if g.get("packages"):
            lines.append(f"    packages: {flow(g['packages'])}")
        for k, v in g["rates"].items():
            lines.append(f"    {k}: {v}")
    FLEET.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return total


def main() -> None:
    rng = random.Random(SEED)
    cat = build_catalog(rng)
    write_catalog(cat)
    machines = write_fleet()
    print(f"wrote {CATALOG.relative_to(HERE.parent)}: {len(cat.entries)} updates")
    print(f"wrote {FLEET.relative_to(HERE.parent)}: {machines} machines")
    nov = [e for e in cat.entries if e["released"] == patch_tuesday(2026, 11)
           and "Cumulative Update" in e["title"]]
    print("November 2026 cumulative updates (update-lists/2026-11-security.yaml):")
    for e in sorted(nov, key=lambda e: e["kb"]):
        print(f"  {e['kb']}  {e['title']}")
    current_ssu = [e for e in cat.entries if e["classification"] == "Servicing Stack Updates"
                   and e["released"] == patch_tuesday(*SSU_MONTHS[-1])]
    print("Current servicing stack updates (prerequisites, also in 2026-11-security):")
    for e in current_ssu:
        print(f"  {e['kb']}  {e['title']}")
    oct_cu = [e for e in cat.entries if e["released"] == patch_tuesday(2026, 10)
              and e["title"].startswith("2026-10 Cumulative Update for Windows 11 Version 24H2")]
    expired = [e for e in cat.entries if e.get("expired") and e["classification"] == "Critical Updates"]
    print("October 2026 Windows 11 24H2 cumulative update and the expired critical update")
    print("(update-lists/2026-10-superseded.yaml):")
    for e in oct_cu + expired:
        print(f"  {e['kb']}  {e['title']}")


if __name__ == "__main__":
    main()
