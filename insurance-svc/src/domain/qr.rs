//! A code as a QR symbol: a PNG for apps (IssueCode with `include_png`) and text for terminals
//! (`medins code show`). The QR matrix comes from the `qrcode` crate without its image
//! features; the PNG is written by the `png` crate (already here to read uploaded documents,
//! `domain::image`): 1-bit greyscale, compressed with its fast deflate (a code's QR is about
//! 1 KB; stored blocks made it about 9 KB).

use qrcode::{Color, EcLevel, QrCode};

/// Pixels per QR module in the PNG.
pub const PNG_MODULE_PIXELS: usize = 4;
/// Quiet zone around the symbol, in modules (the QR standard asks for 4).
pub const QUIET_ZONE_MODULES: usize = 4;

/// The memory a code's QR PNG takes while it is written, for the bounded pool (`crate::heavy`):
/// a version-40 symbol is 177 modules, 740 x 740 pixels at 1 bit, well under 1 MiB.
pub const PNG_ESTIMATE_BYTES: u64 = 1024 * 1024;

/// Why a QR PNG could not be made.
#[derive(Debug, thiserror::Error)]
pub enum QrPngError {
    /// The text does not fit a QR symbol.
    #[error("QR symbol: {0:?}")]
    Symbol(qrcode::types::QrError),
    /// The PNG encoder refused the image.
    #[error("PNG encoding: {0}")]
    Png(#[from] png::EncodingError),
}

fn symbol(text: &str) -> Result<QrCode, qrcode::types::QrError> {
    // Level M: survives about 15% damage (a scratched or glaring phone screen).
    QrCode::with_error_correction_level(text.as_bytes(), EcLevel::M)
}

/// The QR symbol of `text` as a PNG image: dark modules black (0), the rest and the quiet zone
/// white (1), [`PNG_MODULE_PIXELS`] pixels per module.
pub fn qr_png(text: &str) -> Result<Vec<u8>, QrPngError> {
    let code = symbol(text).map_err(QrPngError::Symbol)?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET_ZONE_MODULES) * PNG_MODULE_PIXELS;
    let row_bytes = side.div_ceil(8);
    let mut pixels = vec![0xFFu8; side * row_bytes]; // 1 = white
    for (y, row) in pixels.chunks_exact_mut(row_bytes).enumerate() {
        let my = (y / PNG_MODULE_PIXELS).checked_sub(QUIET_ZONE_MODULES).filter(|&m| m < modules);
        if let Some(my) = my {
            for x in 0..side {
                let mx = (x / PNG_MODULE_PIXELS).checked_sub(QUIET_ZONE_MODULES).filter(|&m| m < modules);
                if mx.is_some_and(|mx| colors[my * modules + mx] == Color::Dark) {
                    row[x / 8] &= !(0x80 >> (x % 8));
                }
            }
        }
    }
    // At most 740 pixels (version 40): always fits.
    let side = u32::try_from(side).expect("a QR image is small");
    let mut png = Vec::with_capacity(2048);
    let mut encoder = png::Encoder::new(&mut png, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::One);
    encoder.set_compression(png::Compression::Fast);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&pixels)?;
    writer.finish()?;
    Ok(png)
}

/// The QR symbol of `text` for a terminal: two modules per character cell (Unicode half
/// blocks), dark on light, with a quiet zone.
pub fn qr_terminal(text: &str) -> Result<String, qrcode::types::QrError> {
    use qrcode::render::unicode::Dense1x2;
    Ok(symbol(text)?.render::<Dense1x2>().dark_color(Dense1x2::Light).light_color(Dense1x2::Dark).build())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a PNG back with the `png` crate's decoder (chunk CRCs and the zlib checksum
    /// checked): its header, and whether each pixel is dark.
    fn decode(png: &[u8]) -> (png::Info<'static>, Vec<Vec<bool>>) {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png));
        // 1-bit greyscale comes out as one byte per pixel, 0 or 255.
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().unwrap();
        let info = reader.info().clone();
        let mut buffer = vec![0; reader.output_buffer_size().unwrap()];
        let frame = reader.next_frame(&mut buffer).unwrap();
        assert_eq!((frame.color_type, frame.bit_depth), (png::ColorType::Grayscale, png::BitDepth::Eight));
        let width = frame.width as usize;
        let rows = buffer[..frame.buffer_size()]
            .chunks_exact(frame.line_size)
            .map(|line| {
                line[..width]
                    .iter()
                    .map(|&v| {
                        assert!(v == 0 || v == 255, "a 1-bit pixel: {v}");
                        v == 0
                    })
                    .collect()
            })
            .collect::<Vec<Vec<bool>>>();
        assert_eq!(rows.len(), frame.height as usize);
        (info, rows)
    }

    #[test]
    fn the_png_shows_the_qr_matrix_with_a_quiet_zone() {
        let text = format!("MI1{}", "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567".repeat(6)[..176].to_owned());
        let png = qr_png(&text).unwrap();
        let code = symbol(&text).unwrap();
        let (_, dark) = decode(&png);
        let side = (code.width() + 8) * PNG_MODULE_PIXELS;
        assert_eq!((dark.len(), dark[0].len()), (side, side));
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
    fn the_png_decodes_as_one_bit_greyscale_with_the_finder_and_timing_patterns() {
        let text = "MI1ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
        let png = qr_png(text).unwrap();
        let modules = symbol(text).unwrap().width();
        let (info, dark) = decode(&png);
        let side = (modules + 2 * QUIET_ZONE_MODULES) * PNG_MODULE_PIXELS;
        assert_eq!((info.width as usize, info.height as usize), (side, side));
        assert_eq!((info.color_type, info.bit_depth), (png::ColorType::Grayscale, png::BitDepth::One));
        assert!(!info.interlaced);
        // The pixel at the centre of module (mx, my) of the symbol.
        let module = |mx: usize, my: usize| {
            let at = |m: usize| (m + QUIET_ZONE_MODULES) * PNG_MODULE_PIXELS + PNG_MODULE_PIXELS / 2;
            dark[at(my)][at(mx)]
        };
        // Top-left finder pattern: dark outer ring, light ring, dark 3 x 3 centre.
        for (m, expected) in [(0, true), (1, false), (2, true), (3, true), (4, true), (5, false), (6, true)] {
            assert_eq!(module(m, 3), expected, "finder row 3, module {m}");
            assert_eq!(module(3, m), expected, "finder column 3, module {m}");
        }
        // The finder patterns of the other two corners, and the light separator beside them.
        assert!(module(modules - 1, 0) && module(0, modules - 1));
        assert!(!module(7, 0) && !module(modules - 8, 0) && !module(0, modules - 8));
        // The timing pattern on row 6 alternates between the finders, dark on even modules.
        for m in 8..modules - 8 {
            assert_eq!(module(m, 6), m % 2 == 0, "timing module {m}");
        }
        // Every pixel of a module has the module's colour, and the quiet zone is white.
        let first = QUIET_ZONE_MODULES * PNG_MODULE_PIXELS;
        assert!(dark[first..first + 4].iter().all(|row| row[first..first + 4].iter().all(|&d| d)));
        assert!(dark.iter().all(|row| row[..first].iter().all(|&d| !d) && row[side - first..].iter().all(|&d| !d)));
    }

    #[test]
    fn the_terminal_rendering_has_two_modules_per_line() {
        let text = "MI1ABCDEFGH";
        let rendered = qr_terminal(text).unwrap();
        let width = symbol(text).unwrap().width() + 8;
        assert_eq!(rendered.lines().count(), width.div_ceil(2));
    }
}
