//! Decompression of catalog sources (gzip, xz, lz4 frames as apt stores lists, zstd),
//! recognised by magic bytes, and bounded: each format has a cap on the decompressed
//! size (default 512 MiB, `PATCHOPS_MAX_DECOMPRESSED_MIB`), decoding streams into a
//! buffer that stops at the cap, so a small bomb cannot take the machine's memory.
//! Every decompression of imported data goes through here (zip members use
//! [`read_bounded`]).

use std::io::{Cursor, Read, Write};

/// Default cap on the decompressed size of one source, per format.
pub const DEFAULT_LIMIT_MIB: u64 = 512;
/// The environment variable that changes the caps: `N` (MiB, every format) or a list
/// such as `gzip=256,xz=1024,lz4=512,zstd=512,zip=512`.
pub const LIMIT_ENV: &str = "PATCHOPS_MAX_DECOMPRESSED_MIB";

/// A compression format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Gzip,
    Xz,
    Lz4,
    Zstd,
    Bzip2,
    /// Members of a zip archive (deflate).
    Zip,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Gzip => "gzip",
            Format::Xz => "xz",
            Format::Lz4 => "lz4",
            Format::Zstd => "zstd",
            Format::Bzip2 => "bzip2",
            Format::Zip => "zip",
        }
    }
}

/// The decompressed-size caps, in bytes, per format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub gzip: u64,
    pub xz: u64,
    pub lz4: u64,
    pub zstd: u64,
    pub zip: u64,
}

impl Default for Limits {
    fn default() -> Self {
        let b = DEFAULT_LIMIT_MIB << 20;
        Limits { gzip: b, xz: b, lz4: b, zstd: b, zip: b }
    }
}

impl Limits {
    /// Every format capped at `mib` MiB.
    pub fn all_mib(mib: u64) -> Self {
        let b = mib << 20;
        Limits { gzip: b, xz: b, lz4: b, zstd: b, zip: b }
    }

    /// The caps from `PATCHOPS_MAX_DECOMPRESSED_MIB`, or the defaults; a value that
    /// cannot be read is a usage error naming the variable.
    pub fn from_env() -> crate::Result<Self> {
        match std::env::var(LIMIT_ENV) {
            Ok(v) => Self::parse(&v),
            Err(_) => Ok(Self::default()),
        }
    }

    /// `N` or `format=N,...` (MiB).
    pub fn parse(text: &str) -> crate::Result<Self> {
        let bad = |why: String| {
            crate::Error::Usage(format!(
                "{LIMIT_ENV}={text:?}: {why}; write a size in MiB (512) or per format (gzip=256,xz=1024)"
            ))
        };
        let mib = |v: &str| v.trim().parse::<u64>().map_err(|_| bad(format!("{v:?} is not a whole number")));
        if !text.contains('=') {
            return Ok(Self::all_mib(mib(text)?));
        }
        let mut limits = Self::default();
        for part in text.split(',').filter(|p| !p.trim().is_empty()) {
            let (format, value) = part.split_once('=').ok_or_else(|| bad(format!("{part:?} is not format=MiB")))?;
            let bytes = mib(value)? << 20;
            match format.trim() {
                "gzip" => limits.gzip = bytes,
                "xz" => limits.xz = bytes,
                "lz4" => limits.lz4 = bytes,
                "zstd" => limits.zstd = bytes,
                "zip" => limits.zip = bytes,
                other => return Err(bad(format!("unknown format {other:?} (gzip, xz, lz4, zstd, zip)"))),
            }
        }
        Ok(limits)
    }

    pub fn of(&self, format: Format) -> u64 {
        match format {
            Format::Gzip => self.gzip,
            Format::Xz => self.xz,
            Format::Lz4 => self.lz4,
            Format::Zstd => self.zstd,
            Format::Zip => self.zip,
            Format::Bzip2 => 0,
        }
    }
}

/// The format of `bytes` by its magic number; None for anything else (plain data).
pub fn detect(bytes: &[u8]) -> Option<Format> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Some(Format::Gzip)
    } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Format::Xz)
    } else if bytes.starts_with(&LZ4_MAGIC.to_le_bytes()) {
        Some(Format::Lz4)
    } else if bytes.starts_with(&ZSTD_MAGIC.to_le_bytes()) {
        Some(Format::Zstd)
    } else if bytes.len() >= 10
        && bytes.starts_with(b"BZh")
        && bytes[3].is_ascii_digit()
        && bytes[4..10] == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
    {
        Some(Format::Bzip2)
    } else {
        None
    }
}

const LZ4_MAGIC: u32 = 0x184D_2204;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// Decompress by magic bytes (plain data is returned as it is), with the caps from the
/// environment ([`Limits::from_env`]).
pub fn decompress(source: &str, bytes: &[u8]) -> crate::Result<Vec<u8>> {
    decompress_with(source, bytes, &Limits::from_env()?)
}

/// Decompress by magic bytes with the given caps. Errors name the source and the byte
/// offset, and say what to do.
pub fn decompress_with(source: &str, bytes: &[u8], limits: &Limits) -> crate::Result<Vec<u8>> {
    let fail = |offset: u64, message: String| catalog_error(source, format!("byte offset {offset}: {message}"));
    let Some(format) = detect(bytes) else { return Ok(bytes.to_vec()) };
    let limit = limits.of(format);
    let mut input = Cursor::new(bytes);
    let mut out = Bounded::new(limit, bytes.len());
    let result: std::io::Result<()> = match format {
        Format::Gzip => std::io::copy(&mut flate2::bufread::MultiGzDecoder::new(&mut input), &mut out).map(|_| ()),
        Format::Xz => lzma_rs::xz_decompress(&mut input, &mut out).map_err(|e| match e {
            lzma_rs::error::Error::IoError(io) => io,
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other.to_string()),
        }),
        Format::Lz4 => {
            // lz4_flex ends quietly when a frame stops at a block boundary, so walk the
            // frame structure first: a missing end mark is a truncated file, not a short one.
            check_lz4_frames(bytes).map_err(|(offset, message)| fail(offset as u64, message))?;
            std::io::copy(&mut lz4_flex::frame::FrameDecoder::new(&mut input), &mut out).map(|_| ())
        }
        Format::Zstd => zstd_frames(&mut input, &mut out),
        Format::Bzip2 | Format::Zip => {
            return Err(fail(
                0,
                format!(
                    "{} data is not supported; decompress it first or fetch the .gz, .xz, .lz4 or .zst variant",
                    format.name()
                ),
            ));
        }
    };
    match result {
        Ok(()) => Ok(out.into_inner()),
        Err(_) if out.exceeded => Err(fail(input.position(), too_large(format, limit))),
        Err(e) => {
            let what = if format == Format::Lz4 { "corrupt" } else { "truncated or corrupt" };
            Err(fail(input.position(), format!("the {} data is {what} ({e}); download the file again", format.name())))
        }
    }
}

/// Read a decompressing reader (a zip member) to its end, at most `limit` bytes.
pub fn read_bounded(source: &str, reader: impl Read, format: Format, limit: u64) -> crate::Result<Vec<u8>> {
    let mut out = Vec::new();
    reader.take(limit.saturating_add(1)).read_to_end(&mut out).map_err(|e| {
        catalog_error(source, format!("cannot read the {} data ({e}); is the file truncated?", format.name()))
    })?;
    if out.len() as u64 > limit {
        return Err(catalog_error(source, too_large(format, limit)));
    }
    Ok(out)
}

fn too_large(format: Format, limit: u64) -> String {
    format!(
        "the {} data decompresses to more than it may: it is larger than the {} MiB limit; if the file is genuine, \
         raise the limit with {LIMIT_ENV}",
        format.name(),
        limit >> 20
    )
}

fn catalog_error(source: &str, message: impl Into<String>) -> crate::Error {
    crate::Error::Catalog { source_name: source.to_string(), message: message.into() }
}

/// Decode consecutive zstd frames (skippable frames are skipped by the decoder).
fn zstd_frames(input: &mut Cursor<&[u8]>, out: &mut Bounded) -> std::io::Result<()> {
    let total = input.get_ref().len() as u64;
    while input.position() < total {
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut *input)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        std::io::copy(&mut decoder, out)?;
    }
    Ok(())
}

/// A buffer that refuses to grow past its cap (the decoder stops with an error).
struct Bounded {
    buf: Vec<u8>,
    limit: u64,
    exceeded: bool,
}

impl Bounded {
    fn new(limit: u64, compressed: usize) -> Self {
        let guess = (compressed as u64).saturating_mul(4).min(limit).min(64 << 20) as usize;
        Bounded { buf: Vec::with_capacity(guess), limit, exceeded: false }
    }

    fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

impl Write for Bounded {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() as u64 + data.len() as u64 > self.limit {
            self.exceeded = true;
            return Err(std::io::Error::other("the decompressed size limit is reached"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Walk the lz4 frames (header, block sizes, end mark, checksums) without decoding; on a
/// problem, the byte offset where it is and what is wrong.
fn check_lz4_frames(bytes: &[u8]) -> Result<(), (usize, String)> {
    let truncated = |what: &str, frame: usize| {
        (
            bytes.len(),
            format!(
                "the lz4 data ends inside {what} of the frame starting at byte offset {frame}; \
                 the file is truncated, download it again"
            ),
        )
    };
    let u32_at = |pos: usize| bytes.get(pos..pos + 4).map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")));
    let mut pos = 0;
    while pos < bytes.len() {
        let frame = pos;
        let magic = u32_at(pos).ok_or_else(|| truncated("the magic number", frame))?;
        if magic & 0xFFFF_FFF0 == 0x184D_2A50 {
            // A skippable frame: size, then that many bytes.
            let size = u32_at(pos + 4).ok_or_else(|| truncated("the size", frame))? as usize;
            pos += 8 + size;
            if pos > bytes.len() {
                return Err(truncated("a skippable frame", frame));
            }
            continue;
        }
        if magic != LZ4_MAGIC {
            return Err((
                pos,
                format!("expected an lz4 frame (magic 04 22 4D 18) after the previous one, found {:08x}", magic),
            ));
        }
        let (&flags, _) =
            bytes.get(pos + 4..pos + 6).and_then(|b| b.split_first()).ok_or_else(|| truncated("the header", frame))?;
        if flags >> 6 != 1 {
            return Err((pos + 4, format!("unsupported lz4 frame version {} (expected 1)", flags >> 6)));
        }
        let block_checksum = flags & 0x10 != 0;
        let content_size = flags & 0x08 != 0;
        let content_checksum = flags & 0x04 != 0;
        let dictionary = flags & 0x01 != 0;
        pos += 4 + 2 + if content_size { 8 } else { 0 } + if dictionary { 4 } else { 0 } + 1;
        if pos > bytes.len() {
            return Err(truncated("the header", frame));
        }
        loop {
            let size = u32_at(pos).ok_or_else(|| truncated("a block header (the end mark is missing)", frame))?;
            pos += 4;
            if size == 0 {
                break;
            }
            pos += (size & 0x7FFF_FFFF) as usize + if block_checksum { 4 } else { 0 };
            if pos > bytes.len() {
                return Err(truncated("a block", frame));
            }
        }
        if content_checksum {
            pos += 4;
            if pos > bytes.len() {
                return Err(truncated("the content checksum", frame));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod test {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// `mib` MiB of zeros as concatenated gzip members of 1 MiB (cheap to make).
    fn gzip_bomb(mib: usize) -> Vec<u8> {
        gzip(&vec![0u8; 1 << 20]).repeat(mib)
    }

    fn message(e: crate::Error) -> String {
        match e {
            crate::Error::Catalog { source_name, message } => format!("{source_name}: {message}"),
            other => panic!("not a catalog error: {other}"),
        }
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_limit_with_the_limit_named() {
        // 64 MiB of zeros in ~64 KiB; the cap is 8 MiB, so at most 8 MiB is ever held.
        let bomb = gzip_bomb(64);
        assert!(bomb.len() < 1 << 20, "the bomb is small: {} bytes", bomb.len());
        let e = message(decompress_with("Packages.gz", &bomb, &Limits::all_mib(8)).unwrap_err());
        assert!(e.starts_with("Packages.gz: byte offset"), "{e}");
        assert!(e.contains("larger than the 8 MiB limit"), "{e}");
        assert!(e.contains(LIMIT_ENV), "says how to raise it: {e}");
        assert!(!e.contains("out of memory") && !e.contains("corrupt"), "not mistaken for corruption: {e}");
    }

    #[test]
    fn data_within_the_limit_decompresses_whole_in_every_format() {
        let text: Vec<u8> = (0..200_000u32).flat_map(|i| format!("Package: p{i}\n").into_bytes()).collect();
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut Cursor::new(&text), &mut xz).unwrap();
        let mut lz4 = lz4_flex::frame::FrameEncoder::new(Vec::new());
        lz4.write_all(&text).unwrap();
        let lz4 = lz4.finish().unwrap();
        let zst = ruzstd::encoding::compress_to_vec(&text[..], ruzstd::encoding::CompressionLevel::Fastest);
        for (name, data) in [("gz", gzip(&text)), ("xz", xz), ("lz4", lz4), ("zst", zst)] {
            assert!(detect(&data).is_some(), "{name} is recognised");
            let out = decompress_with(name, &data, &Limits::all_mib(64)).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(out, text, "{name}");
            let e = message(decompress_with(name, &data, &Limits::all_mib(1)).unwrap_err());
            assert!(e.contains("larger than the 1 MiB limit"), "{name}: {e}");
        }
        assert_eq!(
            decompress_with("plain", &text, &Limits::all_mib(1)).unwrap(),
            text,
            "plain data is not capped here"
        );
    }

    #[test]
    fn a_truncated_zstd_file_is_an_error_not_a_short_file() {
        let text: Vec<u8> = (0..50_000u32).flat_map(|i| format!("line {i}\n").into_bytes()).collect();
        let zst = ruzstd::encoding::compress_to_vec(&text[..], ruzstd::encoding::CompressionLevel::Fastest);
        let e = message(decompress_with("updateinfo.xml.zst", &zst[..zst.len() / 2], &Limits::default()).unwrap_err());
        assert!(e.contains("the zstd data is truncated or corrupt"), "{e}");
    }

    #[test]
    fn the_limits_are_read_as_one_size_or_per_format() {
        assert_eq!(Limits::parse("64").unwrap(), Limits::all_mib(64));
        let l = Limits::parse("gzip=1, zstd=2").unwrap();
        assert_eq!((l.gzip, l.zstd, l.xz), (1 << 20, 2 << 20, DEFAULT_LIMIT_MIB << 20));
        let e = Limits::parse("gzip=lots").unwrap_err().to_string();
        assert!(e.contains(LIMIT_ENV) && e.contains("\"lots\""), "{e}");
        assert!(Limits::parse("rar=5").unwrap_err().to_string().contains("unknown format"));
    }

    #[test]
    fn a_zip_member_larger_than_the_limit_is_refused() {
        let data = vec![b'x'; 3 << 20];
        let e = message(read_bounded("a.zip!/x.json", &data[..], Format::Zip, 2 << 20).unwrap_err());
        assert!(e.contains("larger than the 2 MiB limit"), "{e}");
        assert_eq!(read_bounded("a.zip!/x.json", &data[..], Format::Zip, 3 << 20).unwrap().len(), 3 << 20);
    }
}
