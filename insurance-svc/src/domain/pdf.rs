//! A minimal PDF writer: numbered objects, streams, and a cross-reference table with exact byte
//! offsets, enough for a one-page document with text and one image. Pure.
//!
//! Text uses two fonts no reader needs embedded: the standard Helvetica for ASCII, and the
//! Adobe-GB1 CID font STSong-Light (predefined CMap UniGB-UTF16-H, so text is written as UTF-16)
//! for Chinese, with a ToUnicode map so that every character can be extracted again.

use std::fmt::Write as _;

/// Helvetica advance widths (1/1000 em) of ASCII 32..=126, from Adobe's AFM.
pub const HELVETICA_WIDTHS: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, // space../
    556, 556, 556, 556, 556, 556, 556, 556, 556, 556, // 0-9
    278, 278, 584, 584, 584, 556, 1015, // :;<=>?@
    667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833, // A-M
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, // N-Z
    278, 278, 278, 469, 556, 333, // [\]^_`
    556, 556, 500, 556, 556, 278, 556, 556, 222, 222, 500, 222, 833, // a-m
    556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, // n-z
    334, 260, 334, 584, // {|}~
];

/// Width of `c` in 1/1000 em: Helvetica's for printable ASCII, a full em for everything else
/// (set in STSong-Light, whose Chinese characters are all one em wide).
pub fn char_width(c: char) -> u16 {
    match c {
        ' '..='~' => HELVETICA_WIDTHS[c as usize - 32],
        _ => 1000,
    }
}

/// Width of `text` at `size` points.
pub fn text_width(text: &str, size: f32) -> f32 {
    text.chars().map(|c| f32::from(char_width(c))).sum::<f32>() * size / 1000.0
}

/// Whether `c` is written in Helvetica (printable ASCII) rather than STSong-Light.
pub fn is_latin(c: char) -> bool {
    matches!(c, ' '..='~')
}

/// A PDF literal string of printable ASCII (`(...)`, with `(`, `)` and `\` escaped).
pub fn literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('(');
    for c in text.chars() {
        match c {
            '(' | ')' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out.push(')');
    out
}

/// A PDF hex string of `text` as UTF-16BE (the codes of UniGB-UTF16-H).
pub fn utf16_hex(text: &str) -> String {
    let mut out = String::from("<");
    for unit in text.encode_utf16() {
        let _ = write!(out, "{unit:04X}");
    }
    out.push('>');
    out
}

/// The content-stream operators that show `text` at (`x`, `y`) in `size` points: runs of ASCII
/// in `/latin` (Helvetica), everything else in `/cjk` (STSong-Light).
pub fn show_text(text: &str, x: f32, y: f32, size: f32, latin: &str, cjk: &str) -> String {
    let mut ops = format!("BT 1 0 0 1 {x:.2} {y:.2} Tm\n");
    let mut run = String::new();
    let mut run_latin = None;
    let flush = |run: &mut String, latin_run: bool, ops: &mut String| {
        if run.is_empty() {
            return;
        }
        let (font, string) = if latin_run { (latin, literal(run)) } else { (cjk, utf16_hex(run)) };
        let _ = writeln!(ops, "/{font} {size:.1} Tf {string} Tj");
        run.clear();
    };
    for c in text.chars() {
        let latin_char = is_latin(c);
        if run_latin.is_some_and(|l| l != latin_char) {
            flush(&mut run, run_latin == Some(true), &mut ops);
        }
        run_latin = Some(latin_char);
        run.push(c);
    }
    flush(&mut run, run_latin == Some(true), &mut ops);
    ops.push_str("ET\n");
    ops
}

/// A ToUnicode CMap for text written as UTF-16BE codes: each code maps to itself, for the
/// characters in `text` (one- and two-unit codes).
pub fn to_unicode_cmap(chars: impl IntoIterator<Item = char>) -> String {
    let mut chars: Vec<char> = chars.into_iter().filter(|c| !is_latin(*c)).collect();
    chars.sort_unstable();
    chars.dedup();
    let mut cmap = String::from(
        "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n\
         /CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n\
         /CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n\
         3 begincodespacerange\n<0000> <D7FF>\n<D800DC00> <DBFFDFFF>\n<E000> <FFFF>\nendcodespacerange\n",
    );
    for block in chars.chunks(100) {
        let _ = writeln!(cmap, "{} beginbfchar", block.len());
        for c in block {
            let hex = utf16_hex(&c.to_string());
            let _ = writeln!(cmap, "{hex} {hex}");
        }
        cmap.push_str("endbfchar\n");
    }
    cmap.push_str("endcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n");
    cmap
}

/// A PDF file being written: objects are numbered from 1 in the order they are added.
#[derive(Debug)]
pub struct PdfWriter {
    out: Vec<u8>,
    offsets: Vec<usize>,
}

impl Default for PdfWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl PdfWriter {
    /// The header: PDF 1.7, and a comment with high bytes so transfer tools treat it as binary.
    pub fn new() -> Self {
        let mut out = Vec::with_capacity(16 * 1024);
        out.extend_from_slice(b"%PDF-1.7\n%\xE2\xE3\xCF\xD3\n");
        Self { out, offsets: Vec::new() }
    }

    /// The number the next object will get.
    pub fn next_id(&self) -> usize {
        self.offsets.len() + 1
    }

    /// Adds an object whose body is `body` (a dictionary, array, ...); returns its number.
    pub fn object(&mut self, body: &str) -> usize {
        self.start_object();
        self.out.extend_from_slice(body.as_bytes());
        self.end_object()
    }

    /// Adds a stream object: `dictionary` entries (without `<<`, `>>` and `/Length`), then `data`.
    pub fn stream(&mut self, dictionary: &str, data: &[u8]) -> usize {
        self.start_object();
        let head = format!("<< {dictionary} /Length {} >>\nstream\n", data.len());
        self.out.extend_from_slice(head.as_bytes());
        self.out.extend_from_slice(data);
        self.out.extend_from_slice(b"\nendstream");
        self.end_object()
    }

    fn start_object(&mut self) {
        self.offsets.push(self.out.len());
        let head = format!("{} 0 obj\n", self.offsets.len());
        self.out.extend_from_slice(head.as_bytes());
    }

    fn end_object(&mut self) -> usize {
        self.out.extend_from_slice(b"\nendobj\n");
        self.offsets.len()
    }

    /// The cross-reference table (20-byte entries with each object's byte offset), the trailer
    /// naming the catalog `root`, the `info` dictionary and the file `id`, and `%%EOF`.
    pub fn finish(mut self, root: usize, info: usize, id: &str) -> Vec<u8> {
        let xref = self.out.len();
        let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", self.offsets.len() + 1);
        for offset in &self.offsets {
            let _ = writeln!(table, "{offset:010} 00000 n ");
        }
        let _ = write!(
            table,
            "trailer\n<< /Size {} /Root {root} 0 R /Info {info} 0 R /ID [<{id}> <{id}>] >>\nstartxref\n{xref}\n%%EOF\n",
            self.offsets.len() + 1
        );
        self.out.extend_from_slice(table.as_bytes());
        self.out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parses the xref table of `pdf` and checks that every entry points at `N 0 obj`.
    pub(crate) fn assert_xref_points_at_objects(pdf: &[u8]) {
        // Byte offsets: work on the bytes (the header comment is not UTF-8).
        let marker = b"startxref\n";
        let at = pdf.windows(marker.len()).rposition(|w| w == marker).expect("startxref") + marker.len();
        let tail = std::str::from_utf8(&pdf[at..]).expect("ASCII tail");
        let startxref: usize = tail.lines().next().unwrap().trim().parse().unwrap();
        assert_eq!(tail.lines().nth(1), Some("%%EOF"));
        let table = std::str::from_utf8(&pdf[startxref..]).expect("ASCII table");
        assert!(table.starts_with("xref\n"), "startxref points at the table");
        let mut lines = table.lines().skip(1);
        let count: usize = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        assert_eq!(lines.next().unwrap(), "0000000000 65535 f ");
        for number in 1..count {
            let entry = lines.next().unwrap();
            assert_eq!(entry.len(), 19, "entries are 20 bytes with the newline: {entry:?}");
            let offset: usize = entry[..10].parse().unwrap();
            let expected = format!("{number} 0 obj\n");
            assert_eq!(&pdf[offset..offset + expected.len()], expected.as_bytes(), "object {number}");
        }
        assert!(lines.next().unwrap().starts_with("trailer"), "{count} entries, then the trailer");
    }

    #[test]
    fn the_cross_reference_table_has_exact_offsets() {
        let mut pdf = PdfWriter::new();
        let catalog = pdf.object("<< /Type /Catalog /Pages 2 0 R >>");
        pdf.object("<< /Type /Pages /Kids [3 0 R] /Count 1 >>");
        pdf.object("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 100 100] /Contents 4 0 R >>");
        pdf.stream("", b"0 0 m 100 100 l S");
        let info = pdf.object("<< /Producer (medins) >>");
        let bytes = pdf.finish(catalog, info, "00FF");
        assert!(bytes.starts_with(b"%PDF-1.7\n"));
        assert_xref_points_at_objects(&bytes);
    }

    #[test]
    fn text_is_split_into_latin_and_chinese_runs() {
        let ops = show_text("关系 Relationship: 父母 (PARENT)", 10.0, 20.0, 12.0, "F1", "F2");
        assert_eq!(
            ops,
            "BT 1 0 0 1 10.00 20.00 Tm\n/F2 12.0 Tf <51737CFB> Tj\n/F1 12.0 Tf ( Relationship: ) Tj\n\
             /F2 12.0 Tf <72366BCD> Tj\n/F1 12.0 Tf ( \\(PARENT\\)) Tj\nET\n"
        );
        assert_eq!(literal(r"a(b)\c"), r"(a\(b\)\\c)");
        assert_eq!(utf16_hex("𠀀"), "<D840DC00>", "outside the BMP: a surrogate pair");
    }

    #[test]
    fn the_to_unicode_map_lists_each_chinese_character_once() {
        let cmap = to_unicode_cmap("张*三张".chars());
        assert!(cmap.contains("2 beginbfchar\n<4E09> <4E09>\n<5F20> <5F20>\nendbfchar\n"), "{cmap}");
        assert!(!cmap.contains("<002A>"), "ASCII is set in Helvetica, not mapped here");
    }

    #[test]
    fn widths_are_helveticas_for_ascii_and_one_em_otherwise() {
        assert_eq!(char_width(' '), 278);
        assert_eq!(char_width('A'), 667);
        assert_eq!(char_width('~'), 584);
        assert_eq!(char_width('张'), 1000);
        assert!((text_width("AA", 10.0) - 13.34).abs() < 0.001);
    }
}
