//! Images as a PDF page embeds them (the signature of a commitment letter). Pure.
//!
//! A JPEG goes in as it is (PDF's DCTDecode filter is JPEG): only its header is read, for the
//! size and the colour components. A PNG is decoded (inflate with `miniz_oxide`, the five row
//! filters, Adam7 interlacing, every bit depth and colour type of the PNG standard) and flattened
//! onto white paper, since a drawn signature is usually a transparent PNG and the letter is
//! white; the page then gets plain 8-bit RGB. Anything that does not decode is refused, never
//! guessed at.

use crate::domain::document::ContentType;

/// The largest side accepted, in pixels: a signature needs far less, and it bounds the memory a
/// decode can take (4096 x 4096 x 4 bytes = 64 MiB at most).
pub const MAX_IMAGE_SIDE: u32 = 4096;

/// An image ready for a PDF image XObject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PdfImage {
    /// JPEG bytes, embedded unchanged with DCTDecode.
    Jpeg {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Colour components: 1 (grey), 3 (RGB) or 4 (CMYK).
        components: u8,
        /// CMYK stored inverted (Adobe APP14 marker), as Photoshop writes it.
        inverted_cmyk: bool,
        /// The file.
        data: Vec<u8>,
    },
    /// Decoded pixels: 8-bit RGB, rows top to bottom, no padding.
    Rgb {
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// `width * height * 3` bytes.
        pixels: Vec<u8>,
    },
}

impl PdfImage {
    /// Width and height in pixels.
    pub fn size(&self) -> (u32, u32) {
        match self {
            PdfImage::Jpeg { width, height, .. } | PdfImage::Rgb { width, height, .. } => (*width, *height),
        }
    }
}

/// Why an image cannot be embedded (for logs; callers answer DOCUMENT_INVALID).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not an image type (a PDF).
    #[error("not an image")]
    NotAnImage,
    /// Structurally broken or truncated.
    #[error("corrupt {0} image")]
    Corrupt(&'static str),
    /// A feature this decoder does not take (e.g. a JPEG with a height defined later by DNL).
    #[error("unsupported {0} image")]
    Unsupported(&'static str),
    /// Wider or taller than [`MAX_IMAGE_SIDE`], or empty.
    #[error("image size out of range")]
    Size,
}

/// The embeddable form of an image document's bytes.
pub fn pdf_image(content_type: ContentType, bytes: &[u8]) -> Result<PdfImage, ImageError> {
    match content_type {
        ContentType::Jpeg => jpeg(bytes),
        ContentType::Png => png(bytes),
        ContentType::Pdf => Err(ImageError::NotAnImage),
    }
}

fn check_size(width: u32, height: u32) -> Result<(), ImageError> {
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(ImageError::Size);
    }
    Ok(())
}

/// Reads the frame header of a JPEG (the first SOFn marker).
fn jpeg(bytes: &[u8]) -> Result<PdfImage, ImageError> {
    const CORRUPT: ImageError = ImageError::Corrupt("JPEG");
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return Err(CORRUPT);
    }
    let mut at = 2;
    let mut adobe = false;
    loop {
        // Markers may be preceded by any number of 0xFF fill bytes.
        if *bytes.get(at).ok_or(CORRUPT)? != 0xFF {
            return Err(CORRUPT);
        }
        while bytes.get(at) == Some(&0xFF) {
            at += 1;
        }
        let marker = *bytes.get(at).ok_or(CORRUPT)?;
        at += 1;
        match marker {
            // Standalone markers: no length.
            0x01 | 0xD0..=0xD7 => continue,
            // End of image or start of scan before any frame header.
            0xD9 | 0xDA => return Err(CORRUPT),
            _ => {}
        }
        let length =
            usize::from(u16::from_be_bytes([*bytes.get(at).ok_or(CORRUPT)?, *bytes.get(at + 1).ok_or(CORRUPT)?]));
        let segment = bytes.get(at + 2..at + length).ok_or(CORRUPT)?;
        if length < 2 {
            return Err(CORRUPT);
        }
        match marker {
            0xEE if segment.starts_with(b"Adobe") => adobe = true,
            // SOF0-3, 5-7, 9-11, 13-15 (C4 is DHT, C8 reserved, CC is DAC).
            0xC0..=0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                let [precision, h1, h0, w1, w0, components, ..] = *segment else {
                    return Err(CORRUPT);
                };
                let (height, width) =
                    (u32::from(u16::from_be_bytes([h1, h0])), u32::from(u16::from_be_bytes([w1, w0])));
                if precision != 8 {
                    return Err(ImageError::Unsupported("JPEG (12-bit)"));
                }
                if height == 0 {
                    return Err(ImageError::Unsupported("JPEG (height in DNL)"));
                }
                check_size(width, height)?;
                if !matches!(components, 1 | 3 | 4) {
                    return Err(ImageError::Unsupported("JPEG (components)"));
                }
                return Ok(PdfImage::Jpeg {
                    width,
                    height,
                    components,
                    inverted_cmyk: adobe && components == 4,
                    data: bytes.to_vec(),
                });
            }
            _ => {}
        }
        at += length;
    }
}

/// The IHDR facts that decoding depends on.
#[derive(Debug, Clone, Copy)]
struct PngHeader {
    width: u32,
    height: u32,
    depth: u8,
    color: u8,
    interlaced: bool,
}

impl PngHeader {
    /// Samples per pixel.
    fn channels(self) -> usize {
        match self.color {
            0 | 3 => 1,
            2 => 3,
            4 => 2,
            _ => 4,
        }
    }

    fn bits_per_pixel(self) -> usize {
        self.channels() * usize::from(self.depth)
    }

    /// Bytes of one filtered row of `width` pixels, without its filter byte.
    fn row_bytes(self, width: usize) -> usize {
        (width * self.bits_per_pixel()).div_ceil(8)
    }
}

/// Adam7 passes: first column and row, column and row steps.
const ADAM7: [(usize, usize, usize, usize); 7] =
    [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)];

fn png(bytes: &[u8]) -> Result<PdfImage, ImageError> {
    const CORRUPT: ImageError = ImageError::Corrupt("PNG");
    let mut rest = bytes.strip_prefix(b"\x89PNG\r\n\x1a\n".as_slice()).ok_or(CORRUPT)?;
    let mut header = None;
    let mut palette: &[u8] = &[];
    let mut transparency: &[u8] = &[];
    let mut compressed = Vec::new();
    loop {
        let (length, after) = rest.split_first_chunk::<4>().ok_or(CORRUPT)?;
        let length = usize::try_from(u32::from_be_bytes(*length)).map_err(|_| CORRUPT)?;
        let (kind, after) = after.split_first_chunk::<4>().ok_or(CORRUPT)?;
        let data = after.get(..length).ok_or(CORRUPT)?;
        let crc = after.get(length..length + 4).ok_or(CORRUPT)?;
        let mut covered = kind.to_vec();
        covered.extend_from_slice(data);
        if crate::domain::qr::crc32(&covered).to_be_bytes() != crc {
            return Err(CORRUPT);
        }
        rest = &after[length + 4..];
        match kind {
            b"IHDR" => {
                let [w3, w2, w1, w0, h3, h2, h1, h0, depth, color, compression, filter, interlace] = *data else {
                    return Err(CORRUPT);
                };
                if compression != 0 || filter != 0 || interlace > 1 {
                    return Err(CORRUPT);
                }
                let valid = match color {
                    0 => matches!(depth, 1 | 2 | 4 | 8 | 16),
                    3 => matches!(depth, 1 | 2 | 4 | 8),
                    2 | 4 | 6 => matches!(depth, 8 | 16),
                    _ => false,
                };
                if !valid {
                    return Err(CORRUPT);
                }
                let (width, height) = (u32::from_be_bytes([w3, w2, w1, w0]), u32::from_be_bytes([h3, h2, h1, h0]));
                check_size(width, height)?;
                header = Some(PngHeader { width, height, depth, color, interlaced: interlace == 1 });
            }
            b"PLTE" => palette = data,
            b"tRNS" => transparency = data,
            b"IDAT" => compressed.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
    }
    let header = header.ok_or(CORRUPT)?;
    if header.color == 3 && (palette.is_empty() || !palette.len().is_multiple_of(3)) {
        return Err(CORRUPT);
    }
    let (width, height) = (header.width as usize, header.height as usize);
    let passes: Vec<(usize, usize, usize, usize)> = if header.interlaced { ADAM7.to_vec() } else { vec![(0, 0, 1, 1)] };
    let pass_size = |&(x0, y0, dx, dy): &(usize, usize, usize, usize)| {
        ((width.saturating_sub(x0)).div_ceil(dx), (height.saturating_sub(y0)).div_ceil(dy))
    };
    let expected: usize = passes
        .iter()
        .map(|pass| match pass_size(pass) {
            (0, _) | (_, 0) => 0,
            (w, h) => h * (1 + header.row_bytes(w)),
        })
        .sum();
    let raw = miniz_oxide::inflate::decompress_to_vec_zlib_with_limit(&compressed, expected).map_err(|_| CORRUPT)?;
    if raw.len() != expected {
        return Err(CORRUPT);
    }

    let mut pixels = vec![0u8; width * height * 3];
    let filter_unit = header.bits_per_pixel().div_ceil(8);
    let mut at = 0;
    for pass in &passes {
        let (pass_width, pass_height) = pass_size(pass);
        if pass_width == 0 || pass_height == 0 {
            continue;
        }
        let row_bytes = header.row_bytes(pass_width);
        let mut previous = vec![0u8; row_bytes];
        let mut row = vec![0u8; row_bytes];
        for pass_y in 0..pass_height {
            let filter = raw[at];
            row.copy_from_slice(&raw[at + 1..at + 1 + row_bytes]);
            at += 1 + row_bytes;
            unfilter(filter, filter_unit, &previous, &mut row).ok_or(CORRUPT)?;
            let (x0, y0, dx, dy) = *pass;
            let y = y0 + pass_y * dy;
            for pass_x in 0..pass_width {
                let x = x0 + pass_x * dx;
                let rgb = pixel(header, &row, pass_x, palette, transparency).ok_or(CORRUPT)?;
                pixels[(y * width + x) * 3..][..3].copy_from_slice(&rgb);
            }
            std::mem::swap(&mut previous, &mut row);
        }
    }
    Ok(PdfImage::Rgb { width: header.width, height: header.height, pixels })
}

/// Reverses a PNG row filter in place; `None` for an unknown filter type.
fn unfilter(filter: u8, unit: usize, previous: &[u8], row: &mut [u8]) -> Option<()> {
    for i in 0..row.len() {
        let left = if i >= unit { row[i - unit] } else { 0 };
        let up = previous[i];
        let up_left = if i >= unit { previous[i - unit] } else { 0 };
        let predictor = match filter {
            0 => 0,
            1 => left,
            2 => up,
            3 => ((u16::from(left) + u16::from(up)) / 2) as u8,
            4 => paeth(left, up, up_left),
            _ => return None,
        };
        row[i] = row[i].wrapping_add(predictor);
    }
    Some(())
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let (ia, ib, ic) = (i16::from(a), i16::from(b), i16::from(c));
    let p = ia + ib - ic;
    let (pa, pb, pc) = ((p - ia).abs(), (p - ib).abs(), (p - ic).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// Sample `index` of a row at `depth` bits, as stored (16-bit samples whole).
fn sample(row: &[u8], depth: u8, index: usize) -> u16 {
    match depth {
        16 => u16::from_be_bytes([row[index * 2], row[index * 2 + 1]]),
        8 => u16::from(row[index]),
        _ => {
            let bit = index * usize::from(depth);
            let byte = row[bit / 8];
            let shift = 8 - usize::from(depth) - bit % 8;
            u16::from((byte >> shift) & ((1u8 << depth) - 1))
        }
    }
}

/// A sample scaled to 8 bits.
fn to_8_bits(value: u16, depth: u8) -> u8 {
    match depth {
        16 => (value >> 8) as u8,
        8 => value as u8,
        _ => (u32::from(value) * 255 / ((1u32 << depth) - 1)) as u8,
    }
}

/// Pixel `x` of a decoded row as RGB on white paper; `None` for a palette index out of range.
fn pixel(header: PngHeader, row: &[u8], x: usize, palette: &[u8], transparency: &[u8]) -> Option<[u8; 3]> {
    let depth = header.depth;
    let channels = header.channels();
    let get = |c: usize| sample(row, depth, x * channels + c);
    let eight = |c: usize| to_8_bits(get(c), depth);
    // tRNS names one transparent colour for grey and RGB images (as 16-bit values).
    let key = |c: usize| transparency.get(c * 2..c * 2 + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (rgb, alpha) = match header.color {
        0 => {
            let alpha = if key(0) == Some(get(0)) { 0 } else { 255 };
            ([eight(0); 3], alpha)
        }
        2 => {
            let transparent = (0..3).all(|c| key(c) == Some(get(c)));
            ([eight(0), eight(1), eight(2)], if transparent { 0 } else { 255 })
        }
        3 => {
            let index = usize::from(get(0));
            let entry = palette.get(index * 3..index * 3 + 3)?;
            ([entry[0], entry[1], entry[2]], transparency.get(index).copied().unwrap_or(255))
        }
        4 => ([eight(0); 3], eight(1)),
        _ => ([eight(0), eight(1), eight(2)], eight(3)),
    };
    Some(rgb.map(|c| over_white(c, alpha)))
}

/// A colour at `alpha` over white.
fn over_white(color: u8, alpha: u8) -> u8 {
    let (c, a) = (u32::from(color), u32::from(alpha));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        match pdf_image(ContentType::Png, bytes).expect("decodes") {
            PdfImage::Rgb { width, height, pixels } => (width, height, pixels),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_filter_bit_depth_and_interlacing_decode_to_the_expected_pixels() {
        let cases: [(&[u8], &[u8]); 6] = [
            (include_bytes!("testdata/rgb8.png"), include_bytes!("testdata/rgb8.rgb")),
            (include_bytes!("testdata/rgb8-interlaced.png"), include_bytes!("testdata/rgb8.rgb")),
            (include_bytes!("testdata/palette2.png"), include_bytes!("testdata/palette2.rgb")),
            (include_bytes!("testdata/palette2-interlaced.png"), include_bytes!("testdata/palette2.rgb")),
            (include_bytes!("testdata/gray16.png"), include_bytes!("testdata/gray16.rgb")),
            (include_bytes!("testdata/gray-alpha8.png"), include_bytes!("testdata/gray-alpha8.rgb")),
        ];
        for (index, (png, expected)) in cases.into_iter().enumerate() {
            let (width, height, pixels) = decoded(png);
            assert_eq!((width, height), (13, 9), "case {index}");
            assert_eq!(pixels, expected, "case {index}");
        }
    }

    #[test]
    fn a_transparent_signature_is_flattened_onto_white() {
        let (width, height, pixels) = decoded(include_bytes!("../../../tests/e2e/fixtures/signature.png"));
        assert_eq!((width, height), (120, 40));
        assert_eq!(&pixels[..3], &[255, 255, 255], "a transparent corner is white");
        let darkest = pixels.chunks(3).map(|p| p[0]).min().unwrap();
        assert!(darkest < 64, "the stroke is dark: {darkest}");
    }

    #[test]
    fn a_jpeg_is_embedded_as_is_with_its_frame_size() {
        let bytes = include_bytes!("../../../tests/e2e/fixtures/photo.jpg");
        let PdfImage::Jpeg { width, height, components, inverted_cmyk, data } =
            pdf_image(ContentType::Jpeg, bytes).unwrap()
        else {
            panic!("a JPEG");
        };
        assert_eq!((width, height, components, inverted_cmyk), (25, 13, 3, false));
        assert_eq!(data, bytes);
    }

    #[test]
    fn broken_and_oversized_images_are_refused() {
        let png = include_bytes!("testdata/rgb8.png");
        // A flipped bit in the pixel data fails its chunk's CRC.
        let mut flipped = png.to_vec();
        let last_idat_byte = flipped.len() - 12 - 5;
        flipped[last_idat_byte] ^= 1;
        assert_eq!(pdf_image(ContentType::Png, &flipped), Err(ImageError::Corrupt("PNG")));
        // Truncated.
        assert!(pdf_image(ContentType::Png, &png[..png.len() / 2]).is_err());
        // 5000 pixels wide (IHDR rewritten with a valid CRC).
        let mut wide = png.to_vec();
        wide[16..20].copy_from_slice(&5000u32.to_be_bytes());
        let crc = crate::domain::qr::crc32(&wide[12..29]);
        wide[29..33].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(pdf_image(ContentType::Png, &wide), Err(ImageError::Size));
        // A JPEG without a frame header, and a PDF.
        assert!(pdf_image(ContentType::Jpeg, &[0xFF, 0xD8, 0xFF, 0xD9]).is_err());
        assert_eq!(pdf_image(ContentType::Pdf, b"%PDF-1.4"), Err(ImageError::NotAnImage));
    }
}
