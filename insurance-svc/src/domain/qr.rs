//! A code as a QR symbol: a PNG for apps (IssueCode with `include_png`) and text for terminals
//! (`medins code show`). The QR matrix comes from the `qrcode` crate without its image
//! features; the PNG is written here (1-bit greyscale, uncompressed deflate blocks: a code's QR
//! is about 9 KB that way, and no image or compression crate is needed).

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per QR module in the PNG.
pub const PNG_MODULE_PIXELS: usize = 4;
/// Quiet zone around the symbol, in modules (the QR standard asks for 4).
pub const QUIET_ZONE_MODULES: usize = 4;

/// The memory a code's QR PNG takes while it is written, for the bounded pool (`crate::heavy`):
/// a version-40 symbol is 177 modules, 740 x 740 pixels at 1 bit, well under 1 MiB.
pub const PNG_ESTIMATE_BYTES: u64 = 1024 * 1024;

fn symbol(text: &str) -> Result<QrCode, qrcode::types::QrError> {
    // Level M: survives about 15% damage (a scratched or glaring phone screen).
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
}

/// The QR symbol of `text` as a PNG image.
pub fn qr_png(text: &str) -> Result<Vec<u8>, qrcode::types::QrError> {
    let code = symbol(text)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE_MODULES) * PNG_MODULE_PIXELS;
    let row_bytes = side.div_ceil(8);
    let mut raw = Vec::with_capacity(side * (row_bytes + 1));
    for y in 0..side {
        raw.push(0); // filter: none
        let mut row = vec![0xFFu8; row_bytes]; // 1 = white
        let my = (y / PNG_MODULE_PIXELS).checked_sub(QUIET_ZONE_MODULES).filter(|&m| m < modules);
        if let Some(my) = my {
            for x in 0..side {
                let mx = (x / PNG_MODULE_PIXELS).checked_sub(QUIET_ZONE_MODULES).filter(|&m| m < modules);
                if mx.is_some_and(|mx| colors[my * modules + mx] == Color::Dark) {
                    row[x / 8] &= !(0x80 >> (x % 8));
                }
            }
        }
        raw.extend_from_slice(&row);
    }
    let side = u32::try_from(side).expect("a QR image is small");
    let mut header = Vec::with_capacity(13);
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&side.to_be_bytes());
    header.extend_from_slice(&[1, 0, 0, 0, 0]); // bit depth 1, greyscale, deflate, filter 0, no interlace
    let mut png = Vec::with_capacity(raw.len() + 128);
    png.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    chunk(&mut png, b"IHDR", &header);
    chunk(&mut png, b"IDAT", &zlib_stored(&raw));
    chunk(&mut png, b"IEND", &[]);
    Ok(png)
}

/// The QR symbol of `text` for a terminal: two modules per character cell (Unicode half
/// blocks), dark on light, with a quiet zone.
pub fn qr_terminal(text: &str) -> Result<String, qrcode::types::QrError> {
    use qrcode::render::unicode::Dense1x2;
    Ok(symbol(text)?.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build())
}

fn chunk(png: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    png.extend_from_slice(&u32::try_from(data.len()).expect("small chunk").to_be_bytes());
    let start = png.len();
    png.extend_from_slice(kind);
    png.extend_from_slice(data);
    let crc = crc32(&png[start..]);
    png.extend_from_slice(&crc.to_be_bytes());
}

/// A zlib stream of stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 65_535 * 5 + 16);
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = data.chunks(65_535).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xFF, 0xFF]);
    }
    while let Some(block) = blocks.next() {
        out.push(u8::from(blocks.peek().is_none()));
        let len = u16::try_from(block.len()).expect("block fits");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &byte in chunk {
            a += u32::from(byte);
            b += a;
        }
        a %= 65_521;
        b %= 65_521;
    }
    (b << 16) | a
}

/// CRC-32 (ISO-HDLC) as PNG chunks carry it.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads back what [`qr_png`] writes: chunks with their CRCs, the stored deflate blocks, the
    /// pixels.
    fn decode(png: &[u8]) -> (usize, Vec<Vec<bool>>) {
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        let mut at = 8;
        let (mut side, mut zlib) = (0usize, Vec::new());
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let kind = &png[at + 4..at + 8];
            let data = &png[at + 8..at + 8 + len];
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc, crc32(&png[at + 4..at + 8 + len]), "chunk CRC");
            match kind {
                b"IHDR" => {
                    side = u32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                    assert_eq!(&data[8..], &[1, 0, 0, 0, 0]);
                }
                b"IDAT" => zlib.extend_from_slice(data),
                _ => {}
            }
            at += 12 + len;
        }
        assert_eq!(&zlib[..2], &[0x78, 0x01]);
        let mut raw = Vec::new();
        let mut at = 2;
        loop {
            let last = zlib[at] & 1 == 1;
            let len = u16::from_le_bytes([zlib[at + 1], zlib[at + 2]]) as usize;
            assert_eq!(
                !u16::from_le_bytes([zlib[at + 1], zlib[at + 2]]),
                u16::from_le_bytes([zlib[at + 3], zlib[at + 4]])
            );
            raw.extend_from_slice(&zlib[at + 5..at + 5 + len]);
            at += 5 + len;
            if last {
                break;
            }
        }
        assert_eq!(u32::from_be_bytes(zlib[at..at + 4].try_into().unwrap()), adler32(&raw));
        let row_bytes = side.div_ceil(8);
        let rows = raw
            .chunks(row_bytes + 1)
            .map(|row| {
                assert_eq!(row[0], 0);
                (0..side).map(|x| row[1 + x / 8] & (0x80 >> (x % 8)) == 0).collect()
            })
            .collect::<Vec<Vec<bool>>>();
        assert_eq!(rows.len(), side);
        (side, rows)
    }

    #[test]
    fn the_png_shows_the_qr_matrix_with_a_quiet_zone() {
        let text = format!("MI1{}", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".repeat(6)[..176].to_owned());
        let png = qr_png(&text).unwrap();
        let code = symbol(&text).unwrap();
        let (side, dark) = decode(&png);
        assert_eq!(side, (code.width() + 8) * PNG_MODULE_PIXELS);
        let colors = code.to_colors();
        for my in 0..code.width() {
            for mx in 0..code.width() {
                let (x, y) = ((mx + 4) * 4 + 1, (my + 4) * 4 + 2);
                assert_eq!(dark[y][x], colors[my * code.width() + mx] == Color::Dark, "module {mx},{my}");
            }
        }
        assert!(dark[..16].iter().all(|row| row.iter().all(|d| !d)), "quiet zone is white");
        assert!(dark[16][16], "finder pattern corner is dark");
        assert!(png.len() < 16 * 1024, "{} bytes", png.len());
    }

    #[test]
    fn checksums_match_known_values() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn the_terminal_rendering_has_two_modules_per_line() {
        let text = "MI1ABCDEFGH";
        let rendered = qr_terminal(text).unwrap();
        let width = symbol(text).unwrap().width() + 8;
        assert_eq!(rendered.lines().count(), width.div_ceil(2));
    }
}
