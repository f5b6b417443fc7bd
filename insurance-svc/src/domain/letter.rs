//! The personal commitment letter an owner signs to bind a family member
//! (docs/architecture.md#documents): its wording, its layout on one A4 page, and
//! the PDF. Pure.
//!
//! The letter shows names only masked (the owner's as identity-svc masks it, the member's with
//! the common masking rule); the relationship and date are written in Chinese and in English so
//! that both a person and a machine reading the text find them.

use std::fmt::Write as _;

use chrono::NaiveDate;
use medins_common::ApiResult;
use uuid::Uuid;

use super::{
    family::Relationship,
    image::PdfImage,
    pdf::{HELVETICA_WIDTHS, PdfWriter, show_text, text_width, to_unicode_cmap},
};

/// A member name as given, in the one name rule of both services (`medins_common::name`:
/// NFC, trimmed, 1-64 characters, no invisible characters); INVALID_ARGUMENT / INVALID_NAME on
/// `member_name` otherwise (the message never repeats the name).
pub fn require_member_name(name: &str) -> ApiResult<String> {
    medins_common::name::require_name("member_name", name)
}

/// The relationship as the letter words it: Chinese, and English.
pub fn relationship_words(relationship: Relationship) -> (&'static str, &'static str) {
    match relationship {
        Relationship::Spouse => ("配偶", "spouse"),
        Relationship::Child => ("子女", "child"),
        Relationship::Parent => ("父母", "parent"),
        Relationship::Grandparent => ("祖父母或外祖父母", "grandparent"),
        Relationship::Grandchild => ("孙子女或外孙子女", "grandchild"),
        Relationship::Sibling => ("兄弟姐妹", "sibling"),
        Relationship::OtherCloseRelative => ("其他近亲属", "other close relative"),
    }
}

/// The letter's relationship line: `关系 Relationship: 父母 (PARENT, parent)`.
pub fn relationship_line(relationship: Relationship) -> String {
    let (zh, en) = relationship_words(relationship);
    format!("关系 Relationship: {zh} ({}, {en})", relationship.as_str())
}

/// What a letter says.
#[derive(Debug, Clone)]
pub struct CommitmentLetter {
    /// The letter's document id (printed in the footer).
    pub id: Uuid,
    /// The owner's masked name.
    pub owner_masked_name: String,
    /// The member's masked name.
    pub member_masked_name: String,
    /// How the member is related to the owner.
    pub relationship: Relationship,
    /// The day it is signed (China Standard Time).
    pub date: NaiveDate,
}

const COMMITMENT_ZH: [&str; 5] = [
    "本人自愿申请将上述家庭成员绑定为本人的医保家庭共济成员，并郑重承诺：",
    "一、本人与该成员的上述关系真实无误，所提交的证明材料真实、完整、有效；",
    "二、本人仅在该成员知情同意的范围内使用其医保电子凭证、查询其医疗费用，并仅在授权范围内以本人个人账户为其支付医疗费用；",
    "三、如关系发生变化或信息有误，本人将及时解除绑定；",
    "四、如有虚假，本人愿承担由此产生的一切法律责任，并同意医保经办机构解除绑定、追回相关费用。",
];

const COMMITMENT_EN: &str = "I apply of my own will to bind the family member named above to my medical insurance \
     family account, and I declare that: (1) the relationship stated above is true, and the supporting documents I \
     provided are genuine, complete and valid; (2) I will use the member's medical insurance voucher and read their \
     medical expenses only as far as the member has agreed, and pay their medical costs from my individual account \
     only as authorised; (3) I will remove the binding without delay if the relationship changes or the information \
     proves wrong; (4) if any of this is false, I accept all legal liability arising from it, and agree that the \
     medical insurance agency removes the binding and recovers the costs involved.";

/// A4 in points.
const PAGE_WIDTH: f32 = 595.0;
const PAGE_HEIGHT: f32 = 842.0;
const MARGIN: f32 = 64.0;
/// The box the signature is scaled into (aspect kept).
const SIGNATURE_BOX: (f32, f32) = (200.0, 80.0);

/// Characters that must not begin a line (Chinese closing punctuation).
fn closes(c: char) -> bool {
    matches!(c, '，' | '。' | '；' | '：' | '、' | '）' | '」' | '”' | '！' | '？' | ',' | '.' | ';' | ':' | ')')
}

/// Breaks `text` into lines no wider than `width` points at `size`: between words for Latin
/// text, between any two characters for Chinese, never before closing punctuation.
pub fn wrap(text: &str, width: f32, size: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    // Pieces: a Latin word with its following space, or one other character.
    let mut pieces: Vec<String> = Vec::new();
    for c in text.chars() {
        let extend = match pieces.last() {
            Some(_) if c == ' ' => true,
            Some(last) if c.is_ascii() => last.chars().last().is_some_and(|p| p.is_ascii() && p != ' '),
            _ => false,
        };
        match pieces.last_mut() {
            Some(last) if extend => last.push(c),
            _ => pieces.push(c.to_string()),
        }
    }
    for piece in pieces {
        let candidate = format!("{line}{piece}");
        let first = piece.chars().next().unwrap_or(' ');
        if !line.is_empty() && text_width(candidate.trim_end(), size) > width && !closes(first) {
            lines.push(line.trim_end().to_owned());
            line = piece.trim_start().to_owned();
        } else {
            line = candidate;
        }
    }
    if !line.trim().is_empty() {
        lines.push(line.trim_end().to_owned());
    }
    lines
}

/// Renders the letter as a one-page PDF with `signature` embedded.
pub fn render(letter: &CommitmentLetter, signature: &PdfImage) -> Vec<u8> {
    let date = letter.date;
    let date_zh = format!("{}年{}月{}日", date.format("%Y"), date.format("%-m"), date.format("%-d"));
    let date_iso = date.format("%Y-%m-%d").to_string();
    let text_width_max = PAGE_WIDTH - 2.0 * MARGIN;

    let mut content = String::new();
    let mut all_text = String::new();
    let mut line = |text: &str, x: f32, y: f32, size: f32, content: &mut String| {
        content.push_str(&show_text(text, x, y, size, "F1", "F2"));
        all_text.push_str(text);
    };

    let title = "个人承诺书";
    line(title, (PAGE_WIDTH - text_width(title, 22.0)) / 2.0, 760.0, 22.0, &mut content);
    let subtitle = "Personal Commitment Letter";
    line(subtitle, (PAGE_WIDTH - text_width(subtitle, 12.0)) / 2.0, 738.0, 12.0, &mut content);

    let mut y = 696.0;
    for fact in [
        format!("承诺人 Owner: {}", letter.owner_masked_name),
        format!("家庭成员 Family member: {}", letter.member_masked_name),
        relationship_line(letter.relationship),
        format!("日期 Date: {date_zh} ({date_iso})"),
    ] {
        line(&fact, MARGIN, y, 12.0, &mut content);
        y -= 22.0;
    }

    y -= 12.0;
    for paragraph in COMMITMENT_ZH {
        for text in wrap(paragraph, text_width_max, 12.0) {
            line(&text, MARGIN, y, 12.0, &mut content);
            y -= 20.0;
        }
    }
    y -= 10.0;
    for text in wrap(COMMITMENT_EN, text_width_max, 10.0) {
        line(&text, MARGIN, y, 10.0, &mut content);
        y -= 14.0;
    }

    y -= 24.0;
    line("承诺人签名 Signature:", MARGIN, y, 12.0, &mut content);
    let (width, height) = signature.size();
    let scale = (SIGNATURE_BOX.0 / width as f32).min(SIGNATURE_BOX.1 / height as f32);
    let (shown_width, shown_height) = (width as f32 * scale, height as f32 * scale);
    let image_x = MARGIN + 150.0;
    let image_y = y - shown_height + 14.0;
    let _ = writeln!(content, "q {shown_width:.2} 0 0 {shown_height:.2} {image_x:.2} {image_y:.2} cm /Im1 Do Q");
    let signed = format!("签署日期 Signed on: {date_zh} ({date_iso})");
    line(&signed, MARGIN, image_y - 28.0, 12.0, &mut content);

    let footer = format!("medins commitment letter {} - {date_iso}", letter.id);
    line(&footer, MARGIN, 40.0, 8.0, &mut content);

    assemble(letter, signature, content.as_bytes(), &all_text, &date_iso)
}

/// The objects of the page: catalog, pages, page, the two fonts, the image, the content and
/// the document information.
fn assemble(letter: &CommitmentLetter, signature: &PdfImage, content: &[u8], text: &str, date: &str) -> Vec<u8> {
    let mut pdf = PdfWriter::new();
    let catalog = pdf.object("<< /Type /Catalog /Pages 2 0 R >>");
    pdf.object("<< /Type /Pages /Kids [3 0 R] /Count 1 >>");
    pdf.object(&format!(
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] \
         /Resources << /Font << /F1 4 0 R /F2 5 0 R >> /XObject << /Im1 8 0 R >> >> /Contents 9 0 R >>"
    ));
    let widths: Vec<String> = HELVETICA_WIDTHS.iter().map(u16::to_string).collect();
    pdf.object(&format!(
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding \
         /FirstChar 32 /LastChar 126 /Widths [{}] >>",
        widths.join(" ")
    ));
    pdf.object(
        "<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light-UniGB-UTF16-H /Encoding /UniGB-UTF16-H \
         /DescendantFonts [6 0 R] /ToUnicode 10 0 R >>",
    );
    pdf.object(
        "<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light \
         /CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 4 >> /FontDescriptor 7 0 R /DW 1000 >>",
    );
    pdf.object(
        "<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6 /FontBBox [-25 -254 1000 880] \
         /ItalicAngle 0 /Ascent 880 /Descent -120 /CapHeight 880 /StemV 93 >>",
    );
    match signature {
        PdfImage::Jpeg { width, height, components, inverted_cmyk, data } => {
            let space = match components {
                1 => "/DeviceGray",
                3 => "/DeviceRGB",
                _ => "/DeviceCMYK",
            };
            let decode = if *inverted_cmyk { " /Decode [1 0 1 0 1 0 1 0]" } else { "" };
            pdf.stream(
                &format!(
                    "/Type /XObject /Subtype /Image /Width {width} /Height {height} /ColorSpace {space} \
                     /BitsPerComponent 8 /Filter /DCTDecode{decode}"
                ),
                data,
            );
        }
        PdfImage::Rgb { width, height, pixels } => {
            pdf.stream(
                &format!(
                    "/Type /XObject /Subtype /Image /Width {width} /Height {height} /ColorSpace /DeviceRGB \
                     /BitsPerComponent 8 /Filter /FlateDecode"
                ),
                &miniz_oxide::deflate::compress_to_vec_zlib(pixels, 6),
            );
        }
    }
    pdf.stream("", content);
    pdf.stream("", to_unicode_cmap(text.chars()).as_bytes());
    let compact_date = date.replace('-', "");
    let info = pdf.object(&format!(
        "<< /Title (Personal Commitment Letter) /Producer (medins) /CreationDate (D:{compact_date}000000+08'00') >>"
    ));
    pdf.finish(catalog, info, &letter.id.simple().to_string().to_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{document::ContentType, image::pdf_image, pdf::tests::assert_xref_points_at_objects};
    use medins_common::Reason;

    fn letter() -> CommitmentLetter {
        CommitmentLetter {
            id: Uuid::now_v7(),
            owner_masked_name: "*三".into(),
            member_masked_name: "欧**娜".into(),
            relationship: Relationship::Parent,
            date: NaiveDate::from_ymd_opt(2026, 11, 23).unwrap(),
        }
    }

    #[test]
    fn member_names_are_trimmed_and_bounded() {
        assert_eq!(require_member_name("  张三 ").unwrap(), "张三");
        assert_eq!(require_member_name(&"名".repeat(64)).unwrap().chars().count(), 64);
        for bad in ["", "   ", "张\u{0}三", "a\nb", "张\u{200B}三", "张\u{202E}三", "张\u{E000}三"] {
            let error = require_member_name(bad).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::InvalidName));
        }
        assert!(require_member_name(&"名".repeat(65)).is_err());
    }

    #[test]
    fn the_longest_masked_names_fit_on_their_line() {
        let longest = medins_common::mask::mask_name(&"名".repeat(medins_common::name::MAX_NAME_CHARS));
        for line in [format!("承诺人 Owner: {longest}"), format!("家庭成员 Family member: {longest}")] {
            assert!(text_width(&line, 12.0) <= PAGE_WIDTH - 2.0 * MARGIN, "{}", text_width(&line, 12.0));
        }
    }

    #[test]
    fn the_letter_is_one_page_with_a_valid_cross_reference_table_and_the_image() {
        for (content_type, bytes) in [
            (ContentType::Png, &include_bytes!("../../../tests/e2e/fixtures/signature.png")[..]),
            (ContentType::Jpeg, &include_bytes!("../../../tests/e2e/fixtures/photo.jpg")[..]),
        ] {
            let image = pdf_image(content_type, bytes, 64 * 1024 * 1024).unwrap();
            let letter = letter();
            let pdf = render(&letter, &image);
            assert!(pdf.starts_with(b"%PDF-1.7\n"));
            assert_xref_points_at_objects(&pdf);
            let text = String::from_utf8_lossy(&pdf);
            assert_eq!(text.matches("/Type /Page ").count(), 1, "one page");
            assert!(text.contains("PARENT, parent"), "the relationship as ASCII text");
            assert!(text.contains("2026-11-23"), "the date");
            assert!(text.contains(&letter.id.to_string()), "the footer names the document");
            let filter = if content_type == ContentType::Jpeg { "/DCTDecode" } else { "/FlateDecode" };
            assert!(text.contains(filter), "{content_type:?}");
        }
    }

    #[test]
    fn lines_fit_the_page_and_do_not_start_with_closing_punctuation() {
        let width = PAGE_WIDTH - 2.0 * MARGIN;
        for paragraph in COMMITMENT_ZH {
            let lines = wrap(paragraph, width, 12.0);
            assert_eq!(lines.concat(), paragraph, "nothing lost");
            for line in &lines {
                assert!(text_width(line, 12.0) <= width + 12.0, "{line}");
                assert!(!closes(line.chars().next().unwrap()), "{line}");
            }
        }
        for relationship in [
            Relationship::Spouse,
            Relationship::Child,
            Relationship::Parent,
            Relationship::Grandparent,
            Relationship::Grandchild,
            Relationship::Sibling,
            Relationship::OtherCloseRelative,
        ] {
            assert!(text_width(&relationship_line(relationship), 12.0) <= width, "{relationship:?}");
        }
        let lines = wrap(COMMITMENT_EN, width, 10.0);
        assert!(lines.len() > 3);
        assert_eq!(lines.join(" "), COMMITMENT_EN.split_whitespace().collect::<Vec<_>>().join(" "));
        for line in &lines {
            assert!(text_width(line, 10.0) <= width, "{line}");
        }
    }
}
