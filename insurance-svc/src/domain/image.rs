//! Images: checked within limits before they are stored, and made ready for a PDF page (the
//! signature of a commitment letter). Pure, but heavy: callers run [`check_image`] and
//! [`pdf_image`] on the bounded pool (`crate::heavy`), after [`image_header`] has estimated the
//! memory a decode takes.
//!
//! Parsers of untrusted bytes are libraries
//! (docs/architecture.md#documents-are-identity-documents): PNG with image-rs's `png` (every chunk
//! CRC and the zlib checksum checked, allocations capped by `png::Limits`), JPEG with `zune-jpeg`
//! (strict mode, sides capped before any pixel buffer exists, then a full decode, so a file that
//! only starts like a JPEG is refused). A JPEG goes into a PDF as it is (PDF's DCTDecode is JPEG);
//! a PNG is decoded and flattened onto white paper, since a drawn signature is usually a
//! transparent PNG and the letter is white. Anything that does not decode is refused, never guessed
//! at.

use std::io::Cursor;

use crate::domain::document::ContentType;

/// The largest side accepted, in pixels: a signature, a photo or an ID card scan needs less,
/// and it bounds what a header may promise.
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

/// Why an image is refused (for logs; callers answer DOCUMENT_INVALID or IMAGE_TOO_LARGE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ImageError {
    /// Not an image type (a PDF).
    #[error("not an image")]
    NotAnImage,
    /// Structurally broken or truncated.
    #[error("corrupt {0} image")]
    Corrupt(&'static str),
    /// A feature this decoder does not take (e.g. a 12-bit JPEG).
    #[error("unsupported {0} image")]
    Unsupported(&'static str),
    /// Wider or taller than [`MAX_IMAGE_SIDE`], or empty.
    #[error("image size out of range")]
    Size,
}

/// What an image's header promises, read without decoding a pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageHeader {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Bits per sample (PNG: 1 to 16; JPEG: 8).
    pub bit_depth: u8,
    /// Samples per pixel.
    pub channels: u8,
}

impl ImageHeader {
    /// Bytes one decoded pixel takes as stored (at least one).
    pub fn stored_bytes_per_pixel(self) -> u64 {
        (u64::from(self.channels) * u64::from(self.bit_depth)).div_ceil(8).max(1)
    }

    /// The memory a decode is estimated to take: the pixels as stored, plus an 8-bit RGB copy
    /// (the flattened signature of a letter, or the JPEG decoder's colour output).
    pub fn decode_bytes(self) -> u64 {
        let pixels = u64::from(self.width) * u64::from(self.height);
        pixels * (self.stored_bytes_per_pixel() + 4)
    }
}

fn check_size(width: u32, height: u32) -> Result<(), ImageError> {
    if width == 0 || height == 0 || width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE {
        return Err(ImageError::Size);
    }
    Ok(())
}

const PNG_CORRUPT: ImageError = ImageError::Corrupt("PNG");
const JPEG_CORRUPT: ImageError = ImageError::Corrupt("JPEG");

/// The header of an image document: cheap (the PNG IHDR chunk, the JPEG markers up to the
/// frame header), and refuses sides over [`MAX_IMAGE_SIDE`] before any pixel buffer exists.
pub fn image_header(content_type: ContentType, bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    match content_type {
        ContentType::Png => {
            let mut decoder = png::Decoder::new(Cursor::new(bytes));
            let info = decoder.read_header_info().map_err(|_| PNG_CORRUPT)?;
            check_size(info.width, info.height)?;
            Ok(ImageHeader {
                width: info.width,
                height: info.height,
                bit_depth: info.bit_depth as u8,
                channels: info.color_type.samples() as u8,
            })
        }
        ContentType::Jpeg => {
            let mut decoder = jpeg_decoder(bytes);
            decoder.decode_headers().map_err(|_| JPEG_CORRUPT)?;
            let info = decoder.info().ok_or(JPEG_CORRUPT)?;
            let (width, height) = (u32::from(info.width), u32::from(info.height));
            check_size(width, height)?;
            if !matches!(info.components, 1 | 3 | 4) {
                return Err(ImageError::Unsupported("JPEG (components)"));
            }
            Ok(ImageHeader { width, height, bit_depth: 8, channels: info.components })
        }
        ContentType::Pdf => Err(ImageError::NotAnImage),
    }
}

fn jpeg_decoder(bytes: &[u8]) -> zune_jpeg::JpegDecoder<Cursor<&[u8]>> {
    let options = zune_core::options::DecoderOptions::default()
        .set_max_width(MAX_IMAGE_SIDE as usize)
        .set_max_height(MAX_IMAGE_SIDE as usize)
        .set_strict_mode(true);
    zune_jpeg::JpegDecoder::new_with_options(Cursor::new(bytes), options)
}

/// Decodes a PNG within `limit` bytes of allocations; every chunk CRC and the zlib checksum are
/// checked. Returns the header and the 8-bit pixels (16-bit samples stripped, palettes and low
/// bit depths expanded).
fn decode_png(bytes: &[u8], limit: u64) -> Result<(png::OutputInfo, Vec<u8>), ImageError> {
    let limits = png::Limits { bytes: usize::try_from(limit).unwrap_or(usize::MAX) };
    let mut decoder = png::Decoder::new_with_limits(Cursor::new(bytes), limits);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|_| PNG_CORRUPT)?;
    let (width, height) = reader.info().size();
    check_size(width, height)?;
    let size = reader.output_buffer_size().ok_or(ImageError::Size)?;
    if size as u64 > limit {
        return Err(ImageError::Size);
    }
    let mut buffer = vec![0u8; size];
    let output = reader.next_frame(&mut buffer).map_err(|_| PNG_CORRUPT)?;
    // The rest of the file (up to IEND) must read too: a truncated tail is a broken file.
    reader.finish().map_err(|_| PNG_CORRUPT)?;
    buffer.truncate(output.buffer_size());
    Ok((output, buffer))
}

fn decode_jpeg(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    let header = image_header(ContentType::Jpeg, bytes)?;
    let mut decoder = jpeg_decoder(bytes);
    decoder.decode().map_err(|_| JPEG_CORRUPT)?;
    Ok(header)
}

/// Checks that an image document decodes completely within `limit` bytes (see
/// [`ImageHeader::decode_bytes`]); the pixels are dropped. Heavy: run it on the pool.
pub fn check_image(content_type: ContentType, bytes: &[u8], limit: u64) -> Result<ImageHeader, ImageError> {
    match content_type {
        ContentType::Png => {
            let header = image_header(ContentType::Png, bytes)?;
            decode_png(bytes, limit)?;
            Ok(header)
        }
        ContentType::Jpeg => decode_jpeg(bytes),
        ContentType::Pdf => Err(ImageError::NotAnImage),
    }
}

/// The embeddable form of an image document's bytes, decoded within `limit` bytes. Heavy: run
/// it on the pool.
pub fn pdf_image(content_type: ContentType, bytes: &[u8], limit: u64) -> Result<PdfImage, ImageError> {
    match content_type {
        ContentType::Jpeg => {
            let header = decode_jpeg(bytes)?;
            Ok(PdfImage::Jpeg {
                width: header.width,
                height: header.height,
                components: header.channels,
                inverted_cmyk: header.channels == 4 && adobe_marker(bytes),
                data: bytes.to_vec(),
            })
        }
        ContentType::Png => {
            let (output, pixels) = decode_png(bytes, limit)?;
            Ok(PdfImage::Rgb { width: output.width, height: output.height, pixels: flatten(&output, &pixels)? })
        }
        ContentType::Pdf => Err(ImageError::NotAnImage),
    }
}

/// Whether a JPEG carries an Adobe APP14 segment (CMYK stored inverted, as Photoshop writes it).
fn adobe_marker(bytes: &[u8]) -> bool {
    bytes.windows(9).any(|w| w[0] == 0xFF && w[1] == 0xEE && &w[4..9] == b"Adobe")
}

/// 8-bit pixels of any colour type as RGB on white paper.
fn flatten(output: &png::OutputInfo, pixels: &[u8]) -> Result<Vec<u8>, ImageError> {
    let channels = output.color_type.samples();
    if output.bit_depth != png::BitDepth::Eight {
        return Err(ImageError::Unsupported("PNG (bit depth after expansion)"));
    }
    let (width, height) = (output.width as usize, output.height as usize);
    let mut rgb = Vec::with_capacity(width * height * 3);
    for y in 0..height {
        let row = &pixels[y * output.line_size..][..width * channels];
        for pixel in row.chunks_exact(channels) {
            let (color, alpha) = match channels {
                1 => ([pixel[0]; 3], 255),
                2 => ([pixel[0]; 3], pixel[1]),
                3 => ([pixel[0], pixel[1], pixel[2]], 255),
                4 => ([pixel[0], pixel[1], pixel[2]], pixel[3]),
                _ => return Err(PNG_CORRUPT),
            };
            rgb.extend(color.map(|c| over_white(c, alpha)));
        }
    }
    Ok(rgb)
}

/// A colour at `alpha` over white.
fn over_white(color: u8, alpha: u8) -> u8 {
    let (c, a) = (u32::from(color), u32::from(alpha));
    ((c * a + 255 * (255 - a) + 127) / 255) as u8
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMIT: u64 = 128 * 1024 * 1024;

    fn decoded(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
        match pdf_image(ContentType::Png, bytes, LIMIT).expect("decodes") {
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
            pdf_image(ContentType::Jpeg, bytes, LIMIT).unwrap()
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
        assert_eq!(pdf_image(ContentType::Png, &flipped, LIMIT), Err(ImageError::Corrupt("PNG")));
        // Truncated.
        assert!(pdf_image(ContentType::Png, &png[..png.len() / 2], LIMIT).is_err());
        // A valid PNG 5000 pixels wide.
        let mut wide = Vec::new();
        let mut encoder = png::Encoder::new(&mut wide, 5000, 1);
        encoder.set_color(png::ColorType::Rgb);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(&[0x80; 5000 * 3]).unwrap();
        writer.finish().unwrap();
        assert_eq!(pdf_image(ContentType::Png, &wide, LIMIT), Err(ImageError::Size));
        // A JPEG without a frame header, and a PDF.
        assert!(pdf_image(ContentType::Jpeg, &[0xFF, 0xD8, 0xFF, 0xD9], LIMIT).is_err());
        assert_eq!(pdf_image(ContentType::Pdf, b"%PDF-1.4", LIMIT), Err(ImageError::NotAnImage));
    }

    #[test]
    fn junk_with_image_magic_bytes_is_refused() {
        for junk in [&b"\xff\xd8\xff junk"[..], b"\xff\xd8\xff\xe0\x00\x10JFIF\x00", b"\x89PNG\r\n\x1a\n junk"] {
            let content_type = if junk[0] == 0xFF { ContentType::Jpeg } else { ContentType::Png };
            assert!(image_header(content_type, junk).is_err(), "{junk:?}");
            assert!(check_image(content_type, junk, LIMIT).is_err(), "{junk:?}");
        }
        // A real JPEG cut after its frame header: the header reads, the full decode does not.
        let jpeg = include_bytes!("../../../tests/e2e/fixtures/photo.jpg");
        assert!(check_image(ContentType::Jpeg, &jpeg[..jpeg.len() - 40], LIMIT).is_err());
        assert!(check_image(ContentType::Jpeg, jpeg, LIMIT).is_ok());
    }

    #[test]
    fn the_decompression_bomb_is_estimated_from_its_header_before_any_decode() {
        let bomb = include_bytes!("../../../tests/e2e/fixtures/bomb-4096-rgba16.png");
        assert!(bomb.len() < 140_000, "about 130 KB");
        let header = image_header(ContentType::Png, bomb).unwrap();
        assert_eq!((header.width, header.height, header.bit_depth, header.channels), (4096, 4096, 16, 4));
        assert_eq!(header.decode_bytes(), 4096 * 4096 * 12, "8 bytes stored and 4 more per pixel");
        assert!(header.decode_bytes() > LIMIT);
        // Decoding under a small limit fails inside the decoder instead of allocating.
        assert!(check_image(ContentType::Png, bomb, 1024 * 1024).is_err());
    }
}
