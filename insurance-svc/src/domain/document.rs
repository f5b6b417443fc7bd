//! Documents (docs/architecture.md#documents): kinds, the content types accepted and the size
//! limit. Pure.

use chrono::NaiveDateTime;
use medins_common::{ApiError, ApiResult, Reason};
use uuid::Uuid;

use super::family::Relationship;

/// The largest document accepted, in bytes (8 MiB).
pub const MAX_DOCUMENT_BYTES: u64 = 8 * 1024 * 1024;

medins_common::text_enum! {
    /// What a document is.
    pub enum DocumentKind {
        /// A personal commitment letter for a family binding (PDF, usually rendered by medins).
        CommitmentLetter => "COMMITMENT_LETTER",
        /// A household register page.
        HouseholdRegister => "HOUSEHOLD_REGISTER",
        /// The front of a resident ID card.
        IdCardFront => "ID_CARD_FRONT",
        /// The back of a resident ID card.
        IdCardBack => "ID_CARD_BACK",
        /// A photo of the person (for a social security card).
        Photo => "PHOTO",
        /// A drawn signature (embedded in a commitment letter).
        Signature => "SIGNATURE",
        /// An invoice or itemised bill of care paid out of pocket (a reimbursement claim's evidence).
        Invoice => "INVOICE",
    }
}

medins_common::text_enum! {
    /// The content types medins stores, decided from the bytes, never from a name or a header.
    pub enum ContentType {
        /// JPEG image.
        Jpeg => "image/jpeg",
        /// PNG image.
        Png => "image/png",
        /// PDF document.
        Pdf => "application/pdf",
    }
}

/// A stored document's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Document id.
    pub id: Uuid,
    /// The person the document belongs to.
    pub owner_person_id: Uuid,
    /// What it is.
    pub kind: DocumentKind,
    /// Content type sniffed from the bytes.
    pub content_type: ContentType,
    /// Size in bytes.
    pub size_bytes: i64,
    /// SHA-256 of the bytes, lowercase hex.
    pub sha256: String,
    /// Where the bytes are in the object store.
    pub object_key: String,
    /// The partner that uploaded it (or `medins` for rendered letters).
    pub uploaded_by: String,
    /// When it was stored.
    pub created_at: NaiveDateTime,
    /// The person the document shows or names: whose household register page it is, the
    /// member a commitment letter binds, the owner for the other kinds. `None` only for letters
    /// stored before letters named their member (they bind nobody).
    pub subject_person_id: Option<Uuid>,
    /// A commitment letter's relationship of the member to the owner.
    pub relationship: Option<Relationship>,
    /// The person whose token uploaded it, when it was not the owner's (a guardian).
    pub uploaded_by_person_id: Option<Uuid>,
    /// The document's key, wrapped by insurance-svc's data keys (`store::objects`); `None` for
    /// bytes stored in clear before documents were encrypted.
    pub wrapped_key: Option<Vec<u8>>,
}

impl ContentType {
    /// An image (JPEG or PNG).
    pub fn is_image(self) -> bool {
        matches!(self, ContentType::Jpeg | ContentType::Png)
    }
}

impl DocumentKind {
    /// Whether a document of this kind may have this content type: photos of a person, of an ID
    /// card and drawn signatures are images (they are shown, printed on cards and embedded in
    /// letters); letters, household register pages and invoices are often scanned to PDF, so they may be
    /// either.
    pub fn allows(self, content_type: ContentType) -> bool {
        match self {
            DocumentKind::CommitmentLetter | DocumentKind::HouseholdRegister | DocumentKind::Invoice => true,
            DocumentKind::IdCardFront | DocumentKind::IdCardBack | DocumentKind::Photo | DocumentKind::Signature => {
                content_type.is_image()
            }
        }
    }
}

/// The content type of `bytes` from their leading signature (magic number), if it is one
/// medins stores: JPEG `FF D8 FF`, PNG `89 50 4E 47 0D 0A 1A 0A`, PDF `%PDF-`.
pub fn sniff(bytes: &[u8]) -> Option<ContentType> {
    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n";
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ContentType::Jpeg)
    } else if bytes.starts_with(PNG) {
        Some(ContentType::Png)
    } else if bytes.starts_with(b"%PDF-") {
        Some(ContentType::Pdf)
    } else {
        None
    }
}

/// The content type of a complete upload of `kind`: INVALID_ARGUMENT / DOCUMENT_TYPE_NOT_ALLOWED
/// for bytes that are not JPEG, PNG or PDF, or a type the kind does not take.
pub fn check_content(kind: DocumentKind, bytes: &[u8]) -> ApiResult<ContentType> {
    let Some(content_type) = sniff(bytes) else {
        return Err(ApiError::of(Reason::DocumentTypeNotAllowed, "the document is not a JPEG, PNG or PDF file"));
    };
    if !kind.allows(content_type) {
        return Err(ApiError::of(
            Reason::DocumentTypeNotAllowed,
            format!("a {} document must be a JPEG or PNG image", kind.as_str()),
        )
        .with_metadata("content_type", content_type.as_str()));
    }
    Ok(content_type)
}

/// How many bytes of parsed objects a PDF of `n` bytes is estimated to take, per byte, when
/// lopdf loads it (objects, dictionaries, the decoded object and cross-reference streams).
pub const PDF_PARSE_FACTOR: u64 = 6;

/// The most one stream of a PDF may decompress to while it is loaded (lopdf's
/// `max_decompressed_size`): object and cross-reference streams of real documents are far
/// smaller; a compressed stream that inflates beyond it is a bomb.
pub const PDF_STREAM_LIMIT: u64 = 16 * 1024 * 1024;

/// INVALID_ARGUMENT / DOCUMENT_UNREADABLE: bytes that start like `content_type` but do not
/// parse as one.
pub fn unreadable(content_type: ContentType) -> ApiError {
    ApiError::of(
        Reason::DocumentUnreadable,
        format!("the document starts like {} but does not parse as one", content_type.as_str()),
    )
    .with_metadata("content_type", content_type.as_str())
}

/// INVALID_ARGUMENT / IMAGE_TOO_LARGE: an image whose decode is estimated beyond the whole
/// decoding budget; it is refused before a pixel is decoded.
pub fn image_too_large(needed: u64, budget: u64) -> ApiError {
    ApiError::of(Reason::ImageTooLarge, "the image has more pixels than insurance-svc decodes")
        .with_metadata("needed_bytes", needed.to_string())
        .with_metadata("budget_bytes", budget.to_string())
}

/// The memory checking `bytes` of `content_type` is estimated to take, read from the header
/// only (cheap: no pixel is decoded). A header that does not read is DOCUMENT_UNREADABLE now.
pub fn inspection_estimate(content_type: ContentType, bytes: &[u8]) -> ApiResult<u64> {
    match content_type {
        ContentType::Png | ContentType::Jpeg => super::image::image_header(content_type, bytes)
            .map(super::image::ImageHeader::decode_bytes)
            .map_err(|_| unreadable(content_type)),
        ContentType::Pdf => Ok(bytes.len() as u64 * PDF_PARSE_FACTOR + PDF_STREAM_LIMIT),
    }
}

/// Parses a document completely within `limit` bytes: images decode (every pixel), PDFs load
/// with lopdf (strict: a cross-reference table that does not describe the file is refused, not
/// rebuilt), are not encrypted and have a page at least. Heavy: run it on the pool.
pub fn inspect(content_type: ContentType, bytes: &[u8], limit: u64) -> ApiResult<()> {
    match content_type {
        ContentType::Png | ContentType::Jpeg => {
            super::image::check_image(content_type, bytes, limit).map(|_| ()).map_err(|_| unreadable(content_type))
        }
        ContentType::Pdf => check_pdf(bytes).map_err(|_| unreadable(content_type)),
    }
}

/// Why a PDF is refused (for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PdfProblem {
    /// lopdf could not load it.
    Parse,
    /// It is encrypted: nobody could read it without the password.
    Encrypted,
    /// It has no page.
    NoPage,
}

/// Loads a PDF with lopdf within [`PDF_STREAM_LIMIT`] per stream.
pub fn check_pdf(bytes: &[u8]) -> Result<(), PdfProblem> {
    let options = lopdf::LoadOptions {
        strict: true,
        max_decompressed_size: Some(PDF_STREAM_LIMIT as usize),
        ..lopdf::LoadOptions::default()
    };
    let document = lopdf::Document::load_mem_with_options(bytes, options).map_err(|_| PdfProblem::Parse)?;
    if document.is_encrypted() {
        return Err(PdfProblem::Encrypted);
    }
    if document.get_pages().is_empty() {
        return Err(PdfProblem::NoPage);
    }
    Ok(())
}

/// Whom an upload of a kind shows or names, as its header must say (`header.subject`,
/// `header.relationship`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectNeed {
    /// The owner (photos, ID card sides, signatures, and a register page without a subject).
    Owner,
    /// A household register page of the person the header names.
    Named,
    /// A commitment letter: the member the header names, and the relationship.
    Letter,
}

/// The subject rule of an upload: a COMMITMENT_LETTER names its member and relationship
/// (INVALID_ARGUMENT on `header.subject` or `header.relationship` when missing); a
/// HOUSEHOLD_REGISTER page may name whose page it is (else the owner's) and takes no
/// relationship; the other kinds show their owner and take neither.
pub fn subject_need(kind: DocumentKind, subject_given: bool, relationship_given: bool) -> ApiResult<SubjectNeed> {
    let field =
        |field: &str, description: &str| Err(ApiError::invalid_field(Reason::InvalidArgument, field, description));
    match kind {
        DocumentKind::CommitmentLetter => match (subject_given, relationship_given) {
            (false, _) => field("header.subject", "a commitment letter names the member it binds"),
            (true, false) => field("header.relationship", "a commitment letter states the relationship"),
            (true, true) => Ok(SubjectNeed::Letter),
        },
        _ if relationship_given => field("header.relationship", "only a commitment letter states a relationship"),
        DocumentKind::HouseholdRegister if subject_given => Ok(SubjectNeed::Named),
        DocumentKind::HouseholdRegister => Ok(SubjectNeed::Owner),
        _ if subject_given => field("header.subject", "only letters and register pages name another person"),
        _ => Ok(SubjectNeed::Owner),
    }
}

/// The size an upload's header declares: 1 to [`MAX_DOCUMENT_BYTES`]. More is
/// INVALID_ARGUMENT / DOCUMENT_TOO_LARGE before any byte is sent; zero or less INVALID_ARGUMENT
/// on `header.size_bytes`.
pub fn declared_size(size_bytes: i64) -> ApiResult<u64> {
    match u64::try_from(size_bytes) {
        Ok(0) | Err(_) => Err(size_field("must be 1 to 8388608 bytes")),
        Ok(size) if size > MAX_DOCUMENT_BYTES => Err(too_large()),
        Ok(size) => Ok(size),
    }
}

/// The SHA-256 an upload's header may declare (empty: none); 64 hex digits otherwise.
pub fn declared_sha256(sha256: &str) -> ApiResult<Option<String>> {
    if sha256.is_empty() {
        return Ok(None);
    }
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::invalid_field(Reason::InvalidArgument, "header.sha256", "must be 64 hex digits"));
    }
    Ok(Some(sha256.to_ascii_lowercase()))
}

fn size_field(description: &str) -> ApiError {
    ApiError::invalid_field(Reason::InvalidArgument, "header.size_bytes", description)
}

fn too_large() -> ApiError {
    ApiError::of(Reason::DocumentTooLarge, "the document is larger than 8 MiB")
        .with_metadata("max_bytes", MAX_DOCUMENT_BYTES.to_string())
}

/// The bytes of an upload as they arrive, against the size its header declared.
///
/// The declared size is what tells a complete upload from a cut one: HTTP/2 servers (hyper)
/// report a client's RST_STREAM(CANCEL) between two messages as a clean end of the request
/// body, so "the stream ended" alone does not mean "the client sent everything".
#[derive(Debug)]
pub struct UploadBuffer {
    declared: u64,
    bytes: Vec<u8>,
}

impl UploadBuffer {
    /// An empty buffer for `declared` bytes (see [`declared_size`]).
    pub fn new(declared: u64) -> Self {
        // At most 8 MiB: the declared size was checked.
        let capacity = usize::try_from(declared.min(MAX_DOCUMENT_BYTES)).unwrap_or(0);
        Self { declared, bytes: Vec::with_capacity(capacity) }
    }

    /// Appends a chunk, refusing as soon as the bytes exceed 8 MiB (INVALID_ARGUMENT /
    /// DOCUMENT_TOO_LARGE) or the declared size (INVALID_ARGUMENT on `header.size_bytes`).
    pub fn push(&mut self, chunk: &[u8]) -> ApiResult<()> {
        let total = self.bytes.len() as u64 + chunk.len() as u64;
        if total > MAX_DOCUMENT_BYTES {
            return Err(too_large());
        }
        if total > self.declared {
            return Err(size_field("more bytes were sent than declared"));
        }
        self.bytes.extend_from_slice(chunk);
        Ok(())
    }

    /// The bytes, once the stream has ended: INVALID_ARGUMENT on `chunk` if fewer than declared
    /// arrived (the stream was cut).
    pub fn finish(self) -> ApiResult<Vec<u8>> {
        if (self.bytes.len() as u64) < self.declared {
            return Err(ApiError::invalid_field(
                Reason::InvalidArgument,
                "chunk",
                format!("the stream ended after {} of the {} declared bytes", self.bytes.len(), self.declared),
            ));
        }
        Ok(self.bytes)
    }
}

/// SHA-256 of `bytes`, lowercase hex (as recorded).
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Where a document's bytes live in the object store: ids only, never personal data, and
/// grouped by owner so that one person's documents can be listed or erased together.
pub fn object_key(owner_person_id: Uuid, document_id: Uuid) -> String {
    format!("documents/{owner_person_id}/{document_id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_HEAD: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn jpeg_png_and_pdf_are_recognised_by_their_signatures() {
        assert_eq!(sniff(&[0xFF, 0xD8, 0xFF, 0xE0, 0, 16]), Some(ContentType::Jpeg));
        assert_eq!(sniff(PNG_HEAD), Some(ContentType::Png));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some(ContentType::Pdf));
    }

    #[test]
    fn anything_else_is_not_a_document() {
        // An ELF executable renamed .png, a Windows executable, a ZIP, text, almost-signatures.
        for bytes in [
            &b"\x7fELF\x02\x01\x01\0"[..],
            b"MZ\x90\0\x03\0",
            b"PK\x03\x04",
            b"hello",
            b"",
            &[0xFF, 0xD8],
            b"\x89PNG\r\n\x1a",
            b"\x89PNG\n\x1a\n\0",
            b"%PDF",
            b" %PDF-1.4",
        ] {
            assert_eq!(sniff(bytes), None, "{bytes:?}");
            let error = check_content(DocumentKind::Photo, bytes).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::DocumentTypeNotAllowed));
        }
    }

    #[test]
    fn image_kinds_refuse_pdf_and_letters_take_both() {
        for kind in [DocumentKind::Signature, DocumentKind::Photo, DocumentKind::IdCardFront, DocumentKind::IdCardBack]
        {
            assert_eq!(check_content(kind, PNG_HEAD).unwrap(), ContentType::Png);
            let error = check_content(kind, b"%PDF-1.4").unwrap_err();
            assert_eq!(error.reason(), Reason::DocumentTypeNotAllowed);
        }
        for kind in [DocumentKind::CommitmentLetter, DocumentKind::HouseholdRegister] {
            assert_eq!(check_content(kind, b"%PDF-1.4").unwrap(), ContentType::Pdf);
            assert_eq!(check_content(kind, &[0xFF, 0xD8, 0xFF, 0xDB]).unwrap(), ContentType::Jpeg);
        }
    }

    #[test]
    fn the_buffer_takes_exactly_8_mib_and_refuses_one_byte_more_as_soon_as_it_arrives() {
        let mut buffer = UploadBuffer::new(declared_size(MAX_DOCUMENT_BYTES as i64).unwrap());
        let chunk = vec![0u8; 32 * 1024];
        for _ in 0..(MAX_DOCUMENT_BYTES / chunk.len() as u64) {
            buffer.push(&chunk).unwrap();
        }
        let error = buffer.push(&[0]).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::DocumentTooLarge));
        assert_eq!(buffer.finish().unwrap().len() as u64, MAX_DOCUMENT_BYTES);
    }

    #[test]
    fn a_declared_size_over_8_mib_is_too_large_and_zero_is_invalid() {
        let error = declared_size(MAX_DOCUMENT_BYTES as i64 + 1).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::DocumentTooLarge));
        for size in [0, -1, i64::MIN] {
            let error = declared_size(size).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::InvalidArgument));
        }
        assert_eq!(declared_size(1).unwrap(), 1);
    }

    #[test]
    fn more_bytes_than_declared_are_refused_when_they_arrive_and_fewer_when_the_stream_ends() {
        let mut buffer = UploadBuffer::new(10);
        buffer.push(&[1; 6]).unwrap();
        let error = buffer.push(&[1; 5]).unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::InvalidArgument));

        let mut cut = UploadBuffer::new(10);
        cut.push(&[1; 6]).unwrap();
        let error = cut.finish().unwrap_err();
        assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::InvalidArgument));
        assert!(UploadBuffer::new(1).finish().is_err(), "nothing at all");
    }

    #[test]
    fn a_declared_sha256_is_64_hex_digits_or_nothing() {
        assert_eq!(declared_sha256("").unwrap(), None);
        let upper = "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD";
        assert_eq!(declared_sha256(upper).unwrap().as_deref(), Some(sha256_hex(b"abc").as_str()));
        assert!(declared_sha256("abc").is_err());
        assert!(declared_sha256(&"g".repeat(64)).is_err());
    }

    #[test]
    fn object_keys_hold_only_ids() {
        let (owner, id) = (Uuid::now_v7(), Uuid::now_v7());
        assert_eq!(object_key(owner, id), format!("documents/{owner}/{id}"));
    }

    #[test]
    fn sha256_is_lowercase_hex() {
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }

    #[test]
    fn pdfs_parse_and_junk_with_pdf_magic_bytes_does_not() {
        assert_eq!(check_pdf(include_bytes!("../../../tests/e2e/fixtures/sample.pdf")), Ok(()));
        for junk in [&b"%PDF-1.4 not really a letter"[..], b"%PDF-1.7\n%%EOF\n", b"%PDF-"] {
            assert_eq!(check_pdf(junk), Err(PdfProblem::Parse), "{junk:?}");
            let error = inspect(ContentType::Pdf, junk, u64::MAX).unwrap_err();
            assert_eq!((error.code(), error.reason()), (tonic::Code::InvalidArgument, Reason::DocumentUnreadable));
        }
    }

    #[test]
    fn a_pdf_is_estimated_by_its_size_and_an_image_by_its_header() {
        assert_eq!(inspection_estimate(ContentType::Pdf, &[0; 1000]).unwrap(), 6000 + PDF_STREAM_LIMIT);
        let error = inspection_estimate(ContentType::Png, b"\x89PNG\r\n\x1a\n junk").unwrap_err();
        assert_eq!(error.reason(), Reason::DocumentUnreadable);
        let bomb = include_bytes!("../../../tests/e2e/fixtures/bomb-4096-rgba16.png");
        assert_eq!(inspection_estimate(ContentType::Png, bomb).unwrap(), 4096 * 4096 * 12);
    }

    #[test]
    fn letters_name_their_member_and_relationship_and_only_pages_name_someone_else() {
        use DocumentKind::*;
        assert_eq!(subject_need(CommitmentLetter, true, true).unwrap(), SubjectNeed::Letter);
        assert!(subject_need(CommitmentLetter, false, true).is_err());
        assert!(subject_need(CommitmentLetter, true, false).is_err());
        assert_eq!(subject_need(HouseholdRegister, true, false).unwrap(), SubjectNeed::Named);
        assert_eq!(subject_need(HouseholdRegister, false, false).unwrap(), SubjectNeed::Owner);
        assert!(subject_need(HouseholdRegister, true, true).is_err());
        for kind in [IdCardFront, IdCardBack, Photo, Signature] {
            assert_eq!(subject_need(kind, false, false).unwrap(), SubjectNeed::Owner);
            assert!(subject_need(kind, true, false).is_err());
            assert!(subject_need(kind, false, true).is_err());
        }
    }
}
